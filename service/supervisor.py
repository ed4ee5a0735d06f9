"""``callbridge serve --workers N``: N gateway processes sharing one port (SO_REUSEPORT).

A Python process runs one event loop on one core; on a multi-core host the kernel spreads new
connections over the workers. Each worker is a complete gateway (its own replica id, Redis
heartbeat, delivery worker and graceful drain); Redis makes them one fleet. The supervisor forwards
SIGTERM/SIGINT to every worker, waits for their drains, and restarts a worker that dies unexpectedly
(at most 5 restarts a minute). Exits 0 when every worker drained cleanly.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType

import structlog

log = structlog.get_logger(__name__)

_RESTARTS_PER_MINUTE = 5


def _spawn(host: str | None, port: int | None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "service", "serve", "--reuse-port"]
    if host:
        command += ["--host", host]
    if port is not None:
        command += ["--port", str(port)]
    return subprocess.Popen(command, env=os.environ.copy())


def supervise(workers: int, host: str | None, port: int | None) -> int:
    from service.config import exit_on_bad_config
    from service.logging import configure_logging

    settings = exit_on_bad_config()  # fail fast, once, before starting any worker
    configure_logging(settings.log_format, settings.log_level)
    metrics_dir = tempfile.mkdtemp(prefix="callbridge-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # inherited: /metrics sums the workers
    try:
        return _run(workers, host, port)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _run(workers: int, host: str | None, port: int | None) -> int:
    from prometheus_client import multiprocess

    children = [_spawn(host, port) for _ in range(workers)]
    stopping = False
    restarts: list[float] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("supervisor.started", workers=workers, pids=[c.pid for c in children])
    while True:
        alive = [c for c in children if c.poll() is None]
        if stopping and not alive:
            break
        for index, child in enumerate(children):
            code = child.poll()
            if code is None or stopping:
                continue
            now = time.monotonic()
            restarts[:] = [t for t in restarts if now - t < 60]
            log.error("supervisor.worker_exited", pid=child.pid, code=code, restarting=len(restarts) < _RESTARTS_PER_MINUTE)
            if len(restarts) >= _RESTARTS_PER_MINUTE:
                forward(signal.SIGTERM, None)
                break
            restarts.append(now)
            multiprocess.mark_process_dead(child.pid)
            children[index] = _spawn(host, port)
        time.sleep(0.2)  # supervising child processes: nothing to wait on but their exit
    codes = [c.returncode for c in children]
    log.info("supervisor.stopped", codes=codes)
    return 0 if all(code == 0 for code in codes) else 1
