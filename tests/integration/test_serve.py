"""`callbridge serve` as a real subprocess: health, readiness (incl. a Redis outage), metrics, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import RedisServer, free_port
from tests.poll import wait_until_sync

ROOT = Path(__file__).resolve().parents[2]


def _callbridge() -> list[str]:
    script = Path(sys.executable).parent / "callbridge"
    return [str(script)] if script.exists() else [sys.executable, "-m", "service"]


def wait_http(url: str, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> httpx.Response:
    """Poll ``url`` until it answers (any status) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"server exited early with {process.returncode}")
        try:
            return httpx.get(url, timeout=1.0)
        except httpx.HTTPError as error:
            last = error
            time.sleep(0.05)  # waiting for a child process to bind its port
    raise AssertionError(f"{url} did not answer within {timeout}s: {last!r}")


@pytest.fixture
def gateway_process(redis_server: RedisServer) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {
        **os.environ,
        "CALLBRIDGE_REDIS_URL": redis_server.url,
        "CALLBRIDGE_LOG_FORMAT": "json",
        "CALLBRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CALLBRIDGE_DRAIN_TIMEOUT": "5",
    }
    process = subprocess.Popen(
        [*_callbridge(), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", process=process)
        yield base, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def test_health_ready_metrics_and_clean_sigterm(
    gateway_process: tuple[str, subprocess.Popen[bytes]], redis_server: RedisServer
) -> None:
    base, process = gateway_process
    health = httpx.get(base + "/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"

    ready = httpx.get(base + "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["redis"] == "ok"

    metrics = httpx.get(base + "/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "callbridge_active_calls" in metrics.text
    assert "callbridge_frame_forward_seconds_bucket" in metrics.text

    redis_server.stop()
    outage = httpx.get(base + "/readyz")
    assert outage.status_code == 503
    assert outage.json()["redis"] == "unreachable"
    assert httpx.get(base + "/healthz").status_code == 200  # liveness is not readiness

    redis_server.start()
    wait_until_sync(lambda: httpx.get(base + "/readyz").status_code == 200, timeout=10,
                    what="readiness after Redis came back")

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    stderr = process.stderr.read().decode() if process.stderr else ""
    assert '"event": "drain.started"' in stderr
    assert '"event": "gateway.stopped"' in stderr
    # No Twilio auth token nor stream secret in this environment: serve says streams are refused (issue 12.1).
    assert "callbridge: no stream-token secret" in stderr
    assert '"event": "gateway.streams_disabled"' in stderr


def test_workers_share_the_port_and_drain_on_sigterm(redis_server: RedisServer) -> None:
    """`serve --workers 2`: both processes answer on one port, /metrics sums them, SIGTERM exits 0."""
    port = free_port()
    env = {**os.environ, "CALLBRIDGE_REDIS_URL": redis_server.url, "CALLBRIDGE_LOG_FORMAT": "json",
           "CALLBRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}", "CALLBRIDGE_DRAIN_TIMEOUT": "5"}
    process = subprocess.Popen([*_callbridge(), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", process=process)
        workers = set()
        deadline = time.monotonic() + 20
        while len(workers) < 2 and time.monotonic() < deadline:  # the kernel spreads new connections
            with httpx.Client() as client:
                workers.add(client.get(base + "/readyz").json().get("replica"))
        assert len(workers) == 2, workers
        text = httpx.get(base + "/metrics").text
        assert "callbridge_active_calls" in text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        stderr = process.stderr.read().decode() if process.stderr else ""
        assert stderr.count('"event": "drain.started"') == 2
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
