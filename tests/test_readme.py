"""The README's test command is the one CI runs (one way in)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Run the tests") :]
    match = re.search(r"```bash\n(.+?)\n```", section, re.S)
    assert match, "no bash block under 'Run the tests'"
    command = match.group(1).strip()
    assert "\n" not in command, "the test command must be one line"
    return command


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = _readme_test_command()
    assert "pytest" in command
    lines = [line.strip() for line in ci.splitlines() if not line.lstrip().startswith("#")]
    assert any(line.startswith(command + " ") or line == command for line in lines), command


def test_ci_installs_the_cpu_torch_first_and_fails_on_no_tests() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.index("torch==2.13.0") < ci.index(_readme_test_command())
    assert '"$status" -eq 5' in ci and "exit 1" in ci
