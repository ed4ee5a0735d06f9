"""Shared pieces of the load scenarios: child processes (redis-server, the gateway, the Realtime
stand-in), Prometheus scraping with histogram quantiles, and /proc readings (CPU, RSS).

Everything talks only to 127.0.0.1, and every loop here is bounded in time.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import RedisServer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "load_tests" / "results"
AUTH_TOKEN = "load-test-auth-token-0123456789"
API_KEY = "sk-load-test-key-0123456789"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {timeout}s")


def private_redis() -> RedisServer:
    """A private redis-server on a free port (the tests' own fixture class), started."""
    server = RedisServer(port=free_port(), workdir=Path(tempfile.mkdtemp(prefix="cb-load-redis-")))
    server.start()
    return server


def start_realtime_standin(reply_ms: int = 1500, replies: bool = True) -> tuple[subprocess.Popen[str], str]:
    """The protocol-exact Realtime stand-in in its own process; returns (process, ws url)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "load_tests.realtime_proc", "--reply-ms", str(reply_ms),
         *([] if replies else ["--no-replies"])],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("ws://"):
        raise RuntimeError(f"realtime stand-in did not start: {line!r}")
    return process, line


def start_gateway(port: int, redis_url: str, realtime_url: str, extra_env: dict[str, str] | None = None,
                  log_path: Path | None = None, workers: int = 1,
                  ws_variant: str | None = None) -> subprocess.Popen[bytes]:
    """``callbridge serve`` as a child; ``ws_variant`` (load_tests/ws_variants.py) swaps its WebSocket layer."""
    env = {
        **os.environ,
        "CALLBRIDGE_REALTIME_PROVIDER": "openai",
        "CALLBRIDGE_REALTIME_API_KEY": API_KEY,
        "CALLBRIDGE_REALTIME_URL": realtime_url,
        "CALLBRIDGE_REDIS_URL": redis_url,
        "CALLBRIDGE_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "CALLBRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CALLBRIDGE_LOG_LEVEL": "warning",
        "CALLBRIDGE_LOG_FORMAT": "json",
        "CALLBRIDGE_GREETING": "false",
        "CALLBRIDGE_VAD_SILENCE_DURATION_MS": "400",
        **(extra_env or {}),
    }
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    executable = Path(sys.executable).parent / "callbridge"
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "service"]
    if ws_variant is not None:
        command = [sys.executable, "-m", "load_tests.ws_variants", ws_variant]
    process = subprocess.Popen([*command, "serve", "--host", "127.0.0.1", "--port", str(port),
                                "--workers", str(workers)], cwd=ROOT, env=env, stdout=out, stderr=out)
    wait_until_http(f"http://127.0.0.1:{port}/healthz")
    return process


@dataclass(frozen=True)
class ProcSample:
    at: float
    cpu_s: float
    rss_mb: float
    system_s: float = 0.0  # kernel share of cpu_s (socket I/O on loopback lands here)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its child processes (the workers of ``callbridge serve --workers N``)."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                        pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return pids


def sample_tree(pid: int) -> ProcSample:
    """CPU and RSS summed over ``pid`` and its children."""
    samples = []
    for member in process_tree(pid):
        try:
            samples.append(sample_process(member))
        except OSError:
            continue
    return ProcSample(time.monotonic(), sum(s.cpu_s for s in samples), sum(s.rss_mb for s in samples),
                      sum(s.system_s for s in samples))


def sample_process(pid: int) -> ProcSample:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    system = int(fields[12]) / CLK_TCK
    rss_kb = 0
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return ProcSample(time.monotonic(), cpu, rss_kb / 1024, system)


def scrape(base_url: str) -> dict[str, float]:
    """Prometheus text -> {series: value} (labels kept in the series name)."""
    text = httpx.get(base_url + "/metrics", timeout=5).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            values[name] = float(value)
        except ValueError:
            continue
    return values


def histogram_delta(before: dict[str, float], after: dict[str, float], metric: str) -> list[tuple[float, float]]:
    """Cumulative (le, count) pairs of a histogram over the interval between two scrapes."""
    buckets: list[tuple[float, float]] = []
    prefix = metric + "_bucket{le=\""
    for series, value in after.items():
        if series.startswith(prefix):
            le_text = series[len(prefix):].split('"', 1)[0]
            le = float("inf") if le_text == "+Inf" else float(le_text)
            buckets.append((le, value - before.get(series, 0.0)))
    return sorted(buckets)


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding rank q."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lower_le
            span = count - lower_count
            return lower_le + (le - lower_le) * ((rank - lower_count) / span if span else 0.0)
        lower_le, lower_count = le, count
    return buckets[-2][0] if len(buckets) > 1 else None


def counter_delta(before: dict[str, float], after: dict[str, float], prefix: str) -> float:
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith(prefix))


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True))
    return path


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
