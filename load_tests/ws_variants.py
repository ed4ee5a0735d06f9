"""WebSocket-layer variants for the benchmarks (docs/performance.md, "WebSocket layer").

    python -m load_tests.ws_variants VARIANT serve --host ... --port ...

Runs ``callbridge`` with the media WebSocket served by one of:

* ``wsio``: ``service.wsio`` as committed (what ``callbridge serve`` does);
* ``wsio-lane``: ``service.wsio`` with the former framing fast lane (``load_tests/_wsio_lane.py``,
  the hand-written frame parser and sender that ``service.wsio`` had before it was removed), kept
  here only as the baseline of the comparison;
* ``sansio``: uvicorn's own ``websockets-sansio`` implementation, through the ASGI route.

Benchmark-only: nothing in ``service`` knows about these variants.
"""

from __future__ import annotations

import sys
from typing import Any

VARIANTS = ("wsio", "wsio-lane", "sansio")


def apply(variant: str) -> None:
    """Patch the process for ``variant`` (before the server starts)."""
    if variant == "wsio":
        return
    if variant == "wsio-lane":
        from load_tests import _wsio_lane

        _wsio_lane.install()
        return
    if variant == "sansio":
        import service.app

        original = service.app.uvicorn_config

        def config(app: Any, host: str, port: int, **overrides: Any) -> Any:
            app.state.websocket_routes = None  # the ASGI route serves /twilio/media
            return original(app, host, port, **{"ws": "websockets-sansio", **overrides})

        service.app.uvicorn_config = config  # type: ignore[assignment]
        return
    raise SystemExit(f"unknown variant {variant!r}; one of {VARIANTS}")


def main() -> int:
    variant, *rest = sys.argv[1:]
    apply(variant)
    from service.cli import main as cli_main

    return cli_main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
