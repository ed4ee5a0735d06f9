"""The ``callbridge`` command: ``serve | demo | call | local-realtime | verify-webhook``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.config import Settings


def _serve(args: argparse.Namespace) -> int:
    if args.workers > 1:
        from service.supervisor import supervise

        return supervise(args.workers, args.host, args.port)
    import uvicorn

    from service.app import create_app
    from service.config import exit_on_bad_config
    from service.logging import configure_logging

    settings = exit_on_bad_config()
    if args.host:
        settings.host = args.host
    if args.port is not None:
        settings.port = args.port
    configure_logging(settings.log_format, settings.log_level)
    warn_if_streams_disabled(settings)
    app = create_app(settings)
    from service.app import uvicorn_config

    config = uvicorn_config(
        app, settings.host, settings.port, timeout_graceful_shutdown=int(settings.drain_timeout) + 30
    )
    server = uvicorn.Server(config)
    from service.drain import install_drain

    install_drain(server, app)
    if args.reuse_port:  # one of several worker processes sharing the port (SO_REUSEPORT)
        import socket

        sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((settings.host, settings.port))
        server.run(sockets=[sock])
    else:
        server.run()
    return 0


def warn_if_streams_disabled(settings: Settings) -> bool:
    """Say on stderr and in the log when no stream-token key exists (every media stream is refused).

    The gateway still starts (health, metrics and drain work), but closed, never open: see
    docs/security.md, "Stream tokens". Returns True when it warned."""
    if settings.streams_enabled:
        return False
    import structlog

    message = (
        "no stream-token secret: set CALLBRIDGE_STREAM_TOKEN_SECRET or CALLBRIDGE_TWILIO_AUTH_TOKEN; "
        "until then every media stream is refused (1008) and no model session is opened"
    )
    print(f"callbridge: {message}", file=sys.stderr)
    structlog.get_logger(__name__).error("gateway.streams_disabled", reason=message)
    return True


def _local_realtime(args: argparse.Namespace) -> int:
    from service.config import exit_on_bad_config
    from service.logging import configure_logging
    from service.realtime.local.server import serve_local_realtime

    settings = exit_on_bad_config()
    configure_logging(settings.log_format, settings.log_level)
    if args.host not in ("127.0.0.1", "::1", "localhost") and not settings.local_realtime_key.get_secret_value():
        print(f"callbridge local-realtime: listening on {args.host} without CALLBRIDGE_LOCAL_REALTIME_KEY: "
              "anyone who reaches it gets engine sessions", file=sys.stderr)
    try:
        asyncio.run(serve_local_realtime(args.host, args.port, settings))
    except KeyboardInterrupt:
        pass
    return 0


def _demo(args: argparse.Namespace) -> int:
    from service.demo import run_demo

    return run_demo(args)


def _call(args: argparse.Namespace) -> int:
    from service.simcaller.cli import run_call_command

    return run_call_command(args)


def _verify_webhook(args: argparse.Namespace) -> int:
    from service.escalation.webhook import main_verify_webhook

    return main_verify_webhook(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callbridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (HTTP webhooks + media WebSockets)")
    serve.add_argument("--host", default=None, help="bind address (default CALLBRIDGE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default CALLBRIDGE_PORT or 8080)")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes sharing the port (SO_REUSEPORT); one event loop per core")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=_serve)

    local = sub.add_parser("local-realtime", help="serve the embedded offline engine at /v1/realtime")
    local.add_argument("--host", default="127.0.0.1",
                       help="bind address (default 127.0.0.1, this machine only; set CALLBRIDGE_LOCAL_REALTIME_KEY "
                            "before binding anything reachable from elsewhere)")
    local.add_argument("--port", type=int, default=8765)
    local.set_defaults(func=_local_realtime)

    demo = sub.add_parser("demo", help="start the gateway on embedded defaults and place a simulated call")
    demo.add_argument("--out", default=".", help="directory for call-<id>.wav and the call summary")
    demo.add_argument("--no-escalation", action="store_true", help="leave out the angry turn that escalates")
    demo.add_argument("--port", type=int, default=0, help="gateway port (default: a free port)")
    demo.add_argument("--console", action="store_true",
                      help="instead of the scripted call, keep the gateway up with the console and softphone "
                           "(prints the URL and token; Ctrl-C stops)")
    demo.set_defaults(func=_demo)

    call = sub.add_parser("call", help="simulated carrier caller against a running deployment")
    call.add_argument("url", help="gateway base URL, e.g. http://127.0.0.1:8080")
    call.add_argument("--provider", default="twilio",
                      choices=["twilio", "signalwire", "telnyx", "plivo", "vonage", "exotel"],
                      help="which carrier to call as (default twilio)")
    call.add_argument("--key", default=None,
                      help="the carrier's webhook signing secret (Telnyx: a base64 Ed25519 seed; "
                           "Exotel: user:password of the socket's HTTP Basic)")
    call.add_argument("--public-url", default=None,
                      help="the URL the gateway believes it is reached at (CALLBRIDGE_PUBLIC_URL; default URL)")
    call.add_argument("--audio", action="append", default=[], help="WAV file to speak (repeatable)")
    call.add_argument("--say", action="append", default=[], help="text to synthesise and speak (repeatable)")
    call.add_argument("--auth-token", default=None, help="Twilio auth token to sign the webhook (= --key)")
    call.add_argument("--record", default=None, help="write the call to this WAV (stereo caller/bot)")
    call.add_argument("--listen-s", type=float, default=6.0, help="seconds to listen after each turn")
    call.set_defaults(func=_call)

    verify = sub.add_parser("verify-webhook", help="check a Callbridge-Signature header against a body")
    verify.add_argument("rest", nargs=argparse.REMAINDER)
    verify.set_defaults(func=_verify_webhook)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["verify-webhook"]:  # its own argument parser (flags argparse.REMAINDER would reject)
        from service.escalation.webhook import main_verify_webhook

        return main_verify_webhook(raw[1:])
    args = build_parser().parse_args(raw)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
