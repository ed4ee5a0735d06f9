"""Start and stop the process-wide services behind the gateway (Redis state, escalation worker)."""

from __future__ import annotations

import structlog

from service.app import Gateway

log = structlog.get_logger(__name__)


async def start_gateway_services(gateway: Gateway) -> None:
    """Wire Redis-backed services when their modules are available. A Redis outage at start-up is
    logged, reported by /readyz, and retried in the background by the store itself."""
    settings = gateway.settings
    try:
        from service.state.store import StateStore
    except ImportError:  # pragma: no cover - the state package is part of the distribution
        return
    gateway.state_store = StateStore.from_settings(settings)
    await gateway.state_store.start()


async def stop_gateway_services(gateway: Gateway) -> None:
    if gateway.state_store is not None:
        await gateway.state_store.close()
