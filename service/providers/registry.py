"""The provider registry: what each carrier package contributes to the app.

A provider package exposes one ``Provider``: its name and an ``install`` that adds its HTTP routes
(webhooks, with their own authentication) and its media WebSocket route(s) to the app. The app
installs every registered provider and knows nothing else about them; adding a carrier is one
package and one entry in ``PROVIDERS``. The call core never imports this module.
"""

from __future__ import annotations

from service.providers.provider import MediaHandler, Provider

__all__ = ["MediaHandler", "Provider", "registered"]


def registered() -> tuple[Provider, ...]:
    """Every provider the gateway serves (imported here, not at module import, to keep start-up lean)."""
    from service.providers.exotel.routes import PROVIDER as EXOTEL
    from service.providers.plivo.routes import PROVIDER as PLIVO
    from service.providers.signalwire.routes import PROVIDER as SIGNALWIRE
    from service.providers.telnyx.routes import PROVIDER as TELNYX
    from service.providers.twilio.routes import PROVIDER as TWILIO
    from service.providers.vonage.routes import PROVIDER as VONAGE

    return (TWILIO, SIGNALWIRE, TELNYX, PLIVO, VONAGE, EXOTEL)
