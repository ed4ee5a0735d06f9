"""The built wheel carries everything the gateway loads at run time (persona, dialogue script,
the compiled audio kernels)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_package_data(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    wheel = next(tmp_path.glob("callbridge-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("service/personas/support_agent.md", "service/realtime/local/script.yaml", "service/cli.py",
                   "service/simcaller/twilio_caller.py"):
        assert needed in names, needed
    assert not any(name.startswith("tests/") for name in names)
    # the compiled audio kernels are built into the wheel (a C compiler is part of the set-up)
    assert any(name.startswith("service/_hotpath.") and name.endswith(".so") for name in names), sorted(names)[:5]
