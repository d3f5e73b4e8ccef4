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


HELP_START, HELP_END = "<!-- help:start -->", "<!-- help:end -->"


def render_help() -> str:
    """``stemsplit --help`` and ``stemsplit models --help`` as the README shows them (fixed width, no colour)."""
    from typer.testing import CliRunner

    from stemsplit.cli import app as cli
    from stemsplit.cli.separate import separate_app

    env = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    runner = CliRunner()
    blocks = []
    for app, args, title in (
        (separate_app, ["--help"], "stemsplit --help"),
        (cli.app, ["models", "--help"], "stemsplit models --help"),
        (cli.app, ["doctor", "--help"], "stemsplit doctor --help"),
    ):
        result = runner.invoke(app, args, env=env, prog_name="stemsplit")
        assert result.exit_code == 0, result.output
        blocks.append(f"$ {title}\n{result.output.rstrip()}")
    return "```text\n" + "\n\n".join(blocks) + "\n```"


def test_options_reference_is_generated_from_help() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    embedded = text[text.index(HELP_START) + len(HELP_START) : text.index(HELP_END)].strip()
    assert embedded == render_help(), "README options reference is stale: run `python tests/test_readme.py`"


if __name__ == "__main__":  # regenerate the README's options reference
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(HELP_START, 1)
    _, tail = rest.split(HELP_END, 1)
    readme.write_text(f"{head}{HELP_START}\n{render_help()}\n{HELP_END}{tail}", encoding="utf-8")
