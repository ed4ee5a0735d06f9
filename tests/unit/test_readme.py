"""The README and the docs stay true: the README opens with the two set-up commands and stays short,
every setting is in docs/configuration.md, every metric in docs/metrics.md, every relative link
resolves, and nothing in the repository points outside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from prometheus_client import Metric

from service import metrics
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = ROOT / "docs"


def test_every_setting_is_in_the_configuration_table() -> None:
    table = (DOCS / "configuration.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `(CALLBRIDGE_[A-Z0-9_]+)` \|", table, flags=re.MULTILINE))
    fields = {f"CALLBRIDGE_{name.upper()}" for name in Settings.model_fields}
    assert sorted(fields - rows) == [], "settings missing from docs/configuration.md"
    assert sorted(rows - fields) == [], "docs/configuration.md documents settings that do not exist"


def test_every_metric_is_in_the_metrics_table() -> None:
    table = (DOCS / "metrics.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `(callbridge_[a-z0-9_]+)` \|", table, flags=re.MULTILINE))
    defined: set[str] = set()
    for value in vars(metrics).values():
        describe = getattr(value, "describe", None)
        if callable(describe) and type(value).__module__.startswith("prometheus_client"):
            for family in describe():
                assert isinstance(family, Metric)
                # counters are exported (and documented) with their _total suffix
                defined.add(family.name + "_total" if family.type == "counter" else family.name)
    assert defined, "no metric found in service.metrics"
    assert sorted(defined - rows) == [], "metrics missing from docs/metrics.md"
    assert sorted(rows - defined) == [], "docs/metrics.md documents metrics that do not exist"


def test_readme_opens_with_the_two_commands() -> None:
    block = README.split("```", 2)[1].strip().splitlines()
    commands = [line for line in block[1:] if line.strip()]
    assert len(commands) == 2
    assert commands[0].startswith("bash .ci/bootstrap && .venv/bin/callbridge demo")
    assert commands[1].startswith("bash .ci/bootstrap && .venv/bin/python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash .ci/bootstrap" in ci and "pytest" in ci


def test_readme_is_short_and_has_a_table_of_contents() -> None:
    assert len(README.encode("utf-8")) <= 15 * 1024
    headings = re.findall(r"^## (.+)$", README, flags=re.MULTILINE)
    assert headings[0] == "Contents"
    for heading in headings[1:]:
        anchor = re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        assert f"(#{anchor})" in README, f"'{heading}' is not in the table of contents"


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def test_relative_links_and_anchors_resolve() -> None:
    broken = []
    for page in _markdown_files():
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # an absolute URL
            path_part, _, anchor = target.partition("#")
            linked = (page.parent / path_part).resolve() if path_part else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
                continue
            if anchor and linked.suffix == ".md":
                linked_text = linked.read_text(encoding="utf-8")
                explicit = set(re.findall(r'<a id="([^"]+)"></a>', linked_text))
                implicit = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                            for h in re.findall(r"^#+ (.+)$", linked_text, flags=re.MULTILINE)}
                if anchor not in explicit | implicit:
                    broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


# Files whose owners, on parallel branches, are replacing their citations of notes outside the repository
# with docs/ anchors at the time of writing. Remove an entry once its file is clean.
_CITATIONS_BEING_REPLACED: frozenset[str] = frozenset()  # every citation now points into docs/
# Written in pieces so that this file does not match itself.
_OUTSIDE = re.compile("|".join((
    "shared" + "/reference", r"\.\./" + "shared/", "/work/" + "shared",
    *(re.escape(name + ".md") for name in ("realtime-api", "telephony-streams", "offline-speech", "gpt-live")),
)))


def test_nothing_in_the_repository_points_outside_it() -> None:
    """Facts the code relies on live in docs/; no tracked file cites notes outside the repository."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, timeout=60).stdout
    offenders = []
    for name in files.decode().split("\0"):
        path = ROOT / name
        if not name or name in _CITATIONS_BEING_REPLACED or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if _OUTSIDE.search(text):
            offenders.append(name)
    assert offenders == []


def test_verify_webhook_command_accepts_its_flags(tmp_path: Path) -> None:
    """docs/escalation-webhook.md documents `callbridge verify-webhook --header ... --body ...`."""
    from service.cli import main
    from service.escalation.webhook import sign

    body = b'{"escalation_id": "e1"}'
    path = tmp_path / "body.json"
    path.write_bytes(body)
    header = sign("s3cret", body)
    assert main(["verify-webhook", "--header", header, "--body", str(path), "--secret", "s3cret"]) == 0
    assert main(["verify-webhook", "--header", header, "--body", str(path), "--secret", "wrong"]) == 1
