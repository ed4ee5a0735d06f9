"""constraints.txt stays the one source of tested versions: it pins every dependency pyproject.toml
names, each pin lies inside pyproject's range, and every installer (bootstrap, image) uses it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def _pins() -> dict[str, tuple[Version, Marker | None]]:
    pins: dict[str, tuple[Version, Marker | None]] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"not an exact pin: {line}"
        name = canonicalize_name(req.name)
        assert name not in pins, f"pinned twice: {line}"
        pins[name] = (Version(specs[0].version), req.marker)
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines.extend(extra)
    return [Requirement(line) for line in lines]


def test_every_declared_dependency_is_pinned_inside_its_range() -> None:
    pins = _pins()
    for req in _declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared in pyproject.toml but not pinned in constraints.txt"
        version, marker = pins[name]
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} is outside {req.specifier}"
        # a dependency limited to some Pythons is pinned for exactly those
        assert str(marker) == str(req.marker) if req.marker else marker is None, req.name


def test_library_internals_we_touch_have_an_upper_bound() -> None:
    bounded = {canonicalize_name(r.name): r.specifier for r in _declared()}
    for name in ("websockets", "uvicorn", "openai"):
        assert any(spec.operator == "<" for spec in bounded[name]), f"{name} needs an upper bound"


def test_the_installers_use_the_constraints() -> None:
    bootstrap = (ROOT / ".ci" / "bootstrap").read_text(encoding="utf-8")
    assert re.search(r"pip install [^\n]*-c constraints\.txt[^\n]*-e '\.\[dev,local\]'", bootstrap)
    assert "constraints.txt -nt" in bootstrap  # a changed pin reinstalls
    assert "bash .ci/bootstrap" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"COPY [^\n]*constraints\.txt", dockerfile)
    assert re.search(r"pip wheel -c constraints\.txt ", dockerfile)
