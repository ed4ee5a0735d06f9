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


def test_verify_webhook_command_accepts_its_flags(tmp_path: Path) -> None:
    """The README documents `callbridge verify-webhook --header ... --body ...`: it must parse and verify."""
    from service.cli import main
    from service.escalation.webhook import sign

    body = b'{"escalation_id": "e1"}'
    path = tmp_path / "body.json"
    path.write_bytes(body)
    header = sign("s3cret", body)
    assert main(["verify-webhook", "--header", header, "--body", str(path), "--secret", "s3cret"]) == 0
    assert main(["verify-webhook", "--header", header, "--body", str(path), "--secret", "wrong"]) == 1
