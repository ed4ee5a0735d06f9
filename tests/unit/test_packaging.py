"""The built wheel carries everything the gateway loads at run time (persona, dialogue script,
the compiled audio kernels), and building it leaves nothing behind in the working tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What the package build needs: the same set deploy/Dockerfile copies into its build stage.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "service")


def _tree_state() -> str:
    """Tracked, untracked and ignored paths outside .venv, as git reports them."""
    result = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--", ".", ":!.venv"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # caches that any Python run (including this one) may write are not build output
    noise = ("__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis")
    return "\n".join(line for line in result.stdout.splitlines() if not any(n in line for n in noise))


def test_wheel_contains_package_data_and_leaves_the_tree_clean(tmp_path: Path) -> None:
    before = _tree_state()
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources it builds.
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    wheel = next(out.glob("callbridge-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("service/personas/support_agent.md", "service/realtime/local/script.yaml", "service/cli.py",
                   "service/simcaller/twilio_caller.py"):
        assert needed in names, needed
    assert not any(name.startswith("tests/") for name in names)
    # the compiled audio kernels are built into the wheel (a C compiler is part of the set-up)
    assert any(name.startswith("service/_hotpath.") and name.endswith(".so") for name in names), sorted(names)[:5]
    assert any(name.endswith(".dist-info/licenses/LICENSE") or name.endswith(".dist-info/LICENSE")
               for name in names), "the wheel carries the licence text"
    assert _tree_state() == before, "building the wheel changed the working tree"
