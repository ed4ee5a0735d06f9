"""The README stays true: its first lines are the two set-up commands, and every setting is documented."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [name for name in Settings.model_fields if f"`CALLBRIDGE_{name.upper()}`" not in README]
    assert missing == []


def test_readme_opens_with_the_two_commands() -> None:
    block = README.split("```", 2)[1].strip().splitlines()
    commands = [line for line in block[1:] if line.strip()]
    assert len(commands) == 2
    assert "callbridge demo" in commands[0]
    assert "pytest" in commands[1]
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash .ci/bootstrap" in ci and "pytest" in ci
