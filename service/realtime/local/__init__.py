"""The embedded offline Realtime engine (``CALLBRIDGE_REALTIME_PROVIDER=local``).

It speaks the Realtime event protocol (GA dialect) itself, so the bridge cannot tell it from the
cloud: webrtcvad for turn detection, pocketsphinx with a language model built from the dialogue
script for recognition, a scripted contact-center agent (``script.yaml``) for the replies, Piper for
the voice. English only: no offline Japanese recogniser exists on PyPI (docs/models/local.md#languages).

Public API: ``open_local_session(settings) -> LocalTransport``, ``preload(settings, progress)``,
``LocalSession`` (the pure state machine) and ``server.serve_local_realtime`` (a standalone
WebSocket server at ``/v1/realtime``). Needs the optional extra ``callbridge[local]``.
"""

from .models import LocalModels, load_models, preload, shutdown_models
from .session import LocalSession
from .transport import LocalTransport, open_local_session

__all__ = ["LocalModels", "LocalSession", "LocalTransport", "load_models", "open_local_session", "preload",
           "shutdown_models"]
