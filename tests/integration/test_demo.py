"""`callbridge demo` end to end, as a new user runs it: a real subprocess, the private redis-server,
the local engine, a full spoken call with an order look-up over a signed business tool, a barge-in and an
escalation, the warm transfer's agent briefing, a stereo WAV and a summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_call_produces_a_sensible_conversation_wav_and_summary(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_") and k != "OPENAI_API_KEY"}
    executable = Path(sys.executable).parent / "callbridge"
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "service"]
    result = subprocess.run([*command, "demo", "--out", str(tmp_path)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "bot   : Thank you for calling" in out  # the greeting
    assert "caller: i want to check the status of my order" in out  # recognised offline
    assert "barge-in: bot audio cleared" in out
    assert "human queue: escalation" in out and "signature ok" in out
    # the order look-up is a business tool call: signed request, result read back to the caller
    assert "order service: signed look-up of order 4567 (signature ok)" in out
    assert 'tool   : lookup_order({"order_number": "4567"}) -> ok in' in out
    assert "bot   : Order four five six seven is shipped. It should arrive tomorrow before noon." in out
    assert "human queue: tool calls in the record: lookup_order=ok" in out  # the agent sees the look-up
    assert "<Play> <Dial>" in out  # warm transfer: hold audio, then the agent is dialled
    assert "agent briefing (spoken to the agent" in out and "transfer outcome: connected" in out
    briefing = " ".join(out.split("agent briefing (spoken to the agent", 1)[1].split())  # unwrapped
    assert "Transfer from the voice assistant." in briefing and "Reason:" in briefing
    assert "The assistant last told the caller" in briefing
    assert "lookup order: " in briefing and "status: shipped" in briefing  # the tool's result, for the agent

    summaries = list(tmp_path.glob("call-*.json"))
    wavs = list(tmp_path.glob("call-*.wav"))
    assert len(summaries) == 1 and len(wavs) == 1
    summary = json.loads(summaries[0].read_text())
    assert summary["outcome"] == "escalated"
    assert summary["barge_ins"] >= 1 and summary["truncates"] >= 1
    assert summary["errors"] == 0
    assert summary["escalations_delivered"] == 1
    assert summary["agent_briefing"].startswith("Transfer from the voice assistant.")
    assert summary["first_audio_ms_median"] < 1500
    assert [(t["tool"], t["outcome"]) for t in summary["tool_calls"]] == [("lookup_order", "ok")]

    with wave.open(str(wavs[0])) as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 8000 and wav.getsampwidth() == 2
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2).astype(float)
    caller, bot = frames[:, 0], frames[:, 1]

    def active_seconds(x: np.ndarray) -> float:
        blocks = x[: len(x) // 160 * 160].reshape(-1, 160)
        rms = np.sqrt((blocks**2).mean(axis=1))
        return float((20 * np.log10(np.maximum(rms, 1) / 32768) > -40).sum() * 0.02)

    assert active_seconds(caller) > 5.0  # five spoken caller lines
    assert active_seconds(bot) > 8.0  # greeting, answers and the hand-off line
    assert len(caller) / 8000 >= 15.0


@pytest.mark.slow
def test_demo_console_prints_a_working_url_and_token(tmp_path: Path) -> None:
    """`callbridge demo --console`: the printed token logs in at the printed URL, the softphone page
    is served and a softphone call can be issued; SIGINT stops it cleanly."""
    import signal
    import time

    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBRIDGE_") and k != "OPENAI_API_KEY"}
    executable = Path(sys.executable).parent / "callbridge"
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "service"]
    process = subprocess.Popen([*command, "demo", "--console", "--out", str(tmp_path)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        printed: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while "token" not in printed and time.monotonic() < deadline:  # bounded: the lines come or the process ends
            line = process.stdout.readline()
            if not line:
                break
            key, _, value = line.strip().partition(": ")
            if key in ("console", "token"):
                printed[key] = value.strip()
        assert printed.get("console", "").endswith("/console/login?next=/console/phone"), printed
        base = printed["console"].removesuffix("/console/login?next=/console/phone")
        with httpx.Client(base_url=base, timeout=10) as client:
            form = client.get("/console/login", params={"next": "/console/phone"})
            assert "name=next value='/console/phone'" in form.text
            assert client.post("/console/login", data={"token": "wrong"}).status_code == 401
            login = client.post("/console/login", data={"token": printed["token"], "next": "/console/phone"},
                                follow_redirects=False)
            assert login.status_code == 303 and login.headers["location"] == "/console/phone"
            page = client.get("/console/phone")
            assert page.status_code == 200 and "phone.js" in page.text
            issued = client.post("/console/api/phone/calls").json()
            assert issued["call_id"].startswith("WEB-") and issued["media_path"] == "/console/phone/media"
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
