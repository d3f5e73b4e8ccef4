"""The first hour, as a newcomer lives it (#30): help, the models table at 80 columns, options accepted
without a word, re-runs with other settings, skipped tracks' facts, progress and the README's recipes.

Every test goes through the command line (Typer's runner, or a real subprocess), with ``COLUMNS=80``
where width matters.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from rich.console import Console
from typer.testing import CliRunner

from separation_helpers import TORCH_BACKEND, write_audio
from stemsplit.cli import app as cli
from stemsplit.cli import separate as cli_separate
from stemsplit.cli import ui

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread_in_tmp")


def invoke(*args: str | Path):
    return runner.invoke(cli_separate.separate_app, [str(a) for a in args], catch_exceptions=False)


def flat(text: str) -> str:
    return " ".join(text.split())


def _console_script(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "OMP_NUM_THREADS": "1", **TORCH_BACKEND}
    return subprocess.run(
        [sys.executable, "-m", "stemsplit", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- 4. help -------------------------------------------------------------------------------------------


def test_no_arguments_print_a_short_usage_with_the_commonest_commands_and_exit_2() -> None:
    run = _console_script()
    assert run.returncode == 2
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert lines[0] == "Usage: stemsplit [OPTIONS] PATHS..."
    assert len(lines) < 12  # short: not the whole help
    assert sum(line.lstrip().startswith("stemsplit ") for line in lines) == 3
    assert "stemsplit --help" in run.stderr
    assert all(len(line) <= 80 for line in lines)


def test_help_names_paths_without_type_names_and_groups_the_options_in_panels() -> None:
    result = runner.invoke(cli_separate.separate_app, ["--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    text = result.stdout
    assert text.splitlines()[0].endswith(" [OPTIONS] PATHS...")
    assert "{PATHS}" not in text and "<list[str]>" not in text and "<str>" not in text
    headings = [line for line in text.splitlines() if line and not line.startswith(" ")]
    for panel in ("Arguments:", "Output:", "Stems:", "Model and quality:", "Performance:", "Ray:"):
        assert panel in headings
    ray_section = text[text.index("\nRay:") :]
    assert "--ray-in-flight" in ray_section and "--two-stems" not in ray_section
    stems_section = text[text.index("\nStems:") : text.index("\nStem files")]
    assert "--two-stems" in stems_section and "--ray" not in stems_section


# --- 5. models list at 80 columns -----------------------------------------------------------------------


def test_models_list_reads_whole_in_an_80_column_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(ui, "stdout", Console(file=screen, force_terminal=True, width=80, color_system=None))
    result = runner.invoke(cli.app, ["models", "list"])
    assert result.exit_code == 0
    lines = screen.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert "…" not in screen.getvalue()
    header = lines[0].split()
    assert header == ["name", "stems", "size", "SDR", "speed", "cached"]
    assert any(line.split()[:2] == ["htdemucs", "(default)"] and "MiB" in line for line in lines)
    assert any("6 (+guitar, piano)" in line for line in lines)


def test_models_list_in_a_pipe_fits_80_columns_too() -> None:
    run = _console_script("models", "list")
    assert run.returncode == 0
    assert all(len(line) <= 80 for line in run.stdout.splitlines()), run.stdout


# --- 7. accepted without a word --------------------------------------------------------------------------


def test_other_method_without_two_stems_is_a_usage_error_naming_both(model_file: Path) -> None:
    Path("a.wav").write_bytes(b"")  # never read: the options are refused first
    result = invoke("a.wav", "-n", model_file, "--other-method", "minus")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: --other-method minus needs --two-stems STEM (e.g. --two-stems vocals)"
    ]
    assert not Path("separated").exists()


def test_bit_depth_with_mp3_gets_a_one_line_note(model_file: Path) -> None:
    result = invoke("missing.wav", "-n", model_file, "--format", "mp3", "--bit-depth", "24", "--dry-run")
    notes = [line for line in result.stderr.splitlines() if "--bit-depth" in line]
    assert notes == ["note: --bit-depth 24 is ignored: mp3 has no bit depth"]
    quiet = invoke("missing.wav", "-n", model_file, "--format", "mp3", "--bit-depth", "24", "--dry-run", "-q")
    assert "--bit-depth" not in quiet.stderr


@pytest.mark.parametrize("name", ["models", "doctor"])
def test_a_folder_named_like_a_subcommand_gets_a_hint_when_its_parsing_fails(
    tmp_path: Path, name: str
) -> None:
    (tmp_path / name).mkdir()
    run = _console_script(name, "--no-such-option", cwd=tmp_path)
    assert run.returncode == 2
    assert f"note: to separate the folder '{name}' here, write ./{name}" in run.stderr


# --- 9. smaller ---------------------------------------------------------------------------------------


def test_a_bad_stem_colour_is_quoted_as_given(model_file: Path) -> None:
    result = invoke("a.wav", "-n", model_file, "--format", "stem.mp4", "--stem-colors", "vocals=red")
    assert result.exit_code == 2
    assert "got 'red'" in result.stderr


# --- 1. every README recipe runs -------------------------------------------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    """Every ``stemsplit …`` command the README shows (code blocks and inline code), outside the generated
    options reference, one line each."""
    text = README.read_text(encoding="utf-8")
    text = text[: text.index("<!-- help:start -->")] + text[text.index("<!-- help:end -->") :]
    commands = []
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, re.S)
    for language, body in blocks:
        if language == "bash":
            commands += [line.split("  #")[0].strip() for line in body.splitlines()]
    for span in re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S)):
        commands.append(" ".join(span.split()))
    return sorted({c for c in commands if c.startswith("stemsplit ")})


def _not_run(command: str) -> str | None:
    """Why a README command is not run here, or None."""
    if "…" in command:
        return "a placeholder"
    if "--ray" in command:
        return "Ray's recipes are tested in test_distributed.py"
    if command.startswith(
        (
            "stemsplit models download",
            "stemsplit models import",
            "stemsplit models verify",
            "stemsplit models remove",
        )
    ):
        return "needs the network or real weights"
    if command.startswith("stemsplit doctor"):
        return "tested in test_doctor.py"
    if command.startswith("stemsplit play"):
        return "a server: tested in test_player.py and test_player_browser.py"
    if command.startswith("stemsplit mix"):
        return "tested in test_cli_mix.py"
    return None


def _library(home: Path) -> None:
    """The files the README's recipes name, as short real audio."""
    rng = np.random.default_rng(0)

    def audio(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * rng.standard_normal((44100, 2))).astype(np.float32), 44100)

    for name in ("song.mp3", "song.flac", "track.mp3", "track.flac", "a song.mp3", "b song.mp3"):
        audio(home / name)
    for name in ("Music/album/01.flac", "Sets/set.flac", "Music/live/02.flac"):
        audio(home / name)


def test_readme_lists_the_recipes_this_test_runs() -> None:
    commands = readme_commands()
    assert any("--print0" in c and "xargs -0" in c for c in commands)
    assert any("--two-stems vocals" in c for c in commands)
    assert len([c for c in commands if _not_run(c) is None]) >= 10


def test_every_readme_separation_recipe_is_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each one-command recipe, run with ``--dry-run`` on real files: its options are accepted together
    and it plans outputs for every input (the model is only described, never loaded)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    _library(tmp_path)
    for command in readme_commands():
        if _not_run(command) is not None or "|" in command:
            continue
        args = [os.path.expanduser(a) for a in shlex.split(command)[1:]]
        if args[0] in ("models", "--help"):
            result = runner.invoke(cli.app, args) if args[0] == "models" else invoke(*args)
            assert result.exit_code == 0, (command, result.output)
            continue
        result = invoke(*args, "--dry-run", "--offline")
        assert result.exit_code == 0, (command, result.stderr)
        planned = [line for line in result.stdout.splitlines() if line.startswith("separate")]
        assert planned, (command, result.stdout)


@pytest.mark.skipif(sys.platform == "win32" or not shutil.which("xargs"), reason="a POSIX shell pipeline")
@pytest.mark.parametrize("keyword", ["--print0", "jq"])
def test_readme_pipelines_run_as_written(model_file: Path, tmp_path: Path, keyword: str) -> None:
    """The README's pipelines, run by a shell on two MP3s whose names hold spaces (only ``-n`` is added,
    for a local model): every track's result arrives, none overwrites another."""
    if keyword == "jq" and shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    (command,) = [c for c in readme_commands() if keyword in c and "|" in c]
    home = tmp_path / "home"
    _library(home)
    for other in ("song.mp3", "track.mp3"):
        (home / other).unlink()
    (home / "acapellas").mkdir()
    stemsplit = f"{shlex.quote(sys.executable)} -m stemsplit -n {shlex.quote(str(model_file))}"
    env = {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1", "NO_COLOR": "1", **TORCH_BACKEND}
    run = subprocess.run(
        ["bash", "-c", stemsplit + command.removeprefix("stemsplit")],
        cwd=home, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    if keyword == "--print0":
        gathered = sorted(p.name for p in (home / "acapellas").iterdir())
        assert gathered == ["a song - vocals.wav", "b song - vocals.wav"]
    else:
        printed = run.stdout.splitlines()
        assert len(printed) == 2 and all(Path(home, p).name == "vocals.wav" for p in printed)
        assert len({Path(p).parent.name for p in printed}) == 2


# --- 3. re-runs with other settings ---------------------------------------------------------------------


def test_a_rerun_with_other_settings_says_what_changed_and_leaves_exactly_its_files(model_file: Path) -> None:
    write_audio(Path("a.wav"), seconds=0.5)
    folder = Path("separated", model_file.stem, "a")
    assert invoke("a.wav", "-n", model_file).exit_code == 0
    (folder / "my notes.txt").write_text("mine")  # not stemsplit's: never touched

    karaoke = invoke("a.wav", "-n", model_file, "--two-stems", "vocals")
    assert karaoke.exit_code == 0, karaoke.stderr
    assert "--two-stems none → vocals since a.wav's stems were made: separating again" in flat(karaoke.stderr)
    assert "--other-method" not in karaoke.stderr  # recorded only with --two-stems: no change of its own
    files = {"vocals.wav", "no_vocals.wav", "stemsplit.json", "my notes.txt"}
    assert {p.name for p in folder.iterdir()} == files

    minus = invoke("a.wav", "-n", model_file, "--two-stems", "vocals", "--other-method", "minus")
    assert "--other-method add → minus since a.wav's stems were made" in flat(minus.stderr)
    assert {p.name for p in folder.iterdir()} == files

    flac = invoke(
        "a.wav", "-n", model_file, "--two-stems", "vocals", "--other-method", "minus", "--format", "flac"
    )
    assert "--format wav → flac" in flat(flac.stderr)
    assert {p.name for p in folder.iterdir()} == {
        "vocals.flac",
        "no_vocals.flac",
        "stemsplit.json",
        "my notes.txt",
    }
    assert (folder / "my notes.txt").read_text() == "mine"

    again = invoke(
        "a.wav", "-n", model_file, "--two-stems", "vocals", "--other-method", "minus", "--format", "flac"
    )
    assert "since" not in again.stderr and "0 done" in again.stderr  # the same settings: skipped, no word


def test_a_stem_file_the_user_replaced_is_not_removed(model_file: Path) -> None:
    write_audio(Path("a.wav"), seconds=0.5)
    folder = Path("separated", model_file.stem, "a")
    assert invoke("a.wav", "-n", model_file).exit_code == 0
    (folder / "drums.wav").write_bytes(b"the user's own drums, not ours any more")
    assert invoke("a.wav", "-n", model_file, "--stems", "vocals").exit_code == 0
    assert {p.name for p in folder.iterdir()} == {"vocals.wav", "drums.wav", "stemsplit.json"}


# --- 6. a skipped track reports the facts of the run that made its stems ---------------------------------


def test_a_skipped_track_reports_the_facts_and_warnings_of_the_run_that_made_it(model_file: Path) -> None:
    write_audio(Path("cut.wav"), seconds=2.5)
    whole = Path("cut.wav").read_bytes()
    Path("cut.wav").write_bytes(whole[: int(len(whole) * 0.4)])  # the header still says 2.5 s
    first = invoke("cut.wav", "-n", model_file, "--stems", "vocals", "--json")
    assert first.exit_code == 0, first.stderr
    made = json.loads(first.stdout)
    assert made["status"] == "done" and made["warnings"]

    rerun = invoke("cut.wav", "-n", model_file, "--stems", "vocals", "--json")
    skipped = json.loads(rerun.stdout)
    assert skipped["status"] == "skipped"
    assert skipped["duration_s"] == made["duration_s"] < 2.5  # what was decoded, not the header's 2.5 s
    assert skipped["warnings"] == made["warnings"]
    assert "skipped, 1 warning" in rerun.stderr  # the summary's row


# --- 2. progress that says what is happening --------------------------------------------------------------


def test_progress_says_what_is_happening_on_a_terminal(
    model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch row on an 80-column terminal: the stage while the model loads (held for a moment here, so
    that a frame shows it), then ``separating``; a single file is never "batch 0/1 tracks"."""
    import time

    from stemsplit import pipeline

    write_audio(Path("a.wav"), seconds=2.0)
    screen = io.StringIO()
    monkeypatch.setattr(ui, "stderr", Console(file=screen, force_terminal=True, width=80, color_system=None))
    load = pipeline.batch.load_model

    def slow_load(*args, **kwargs):
        time.sleep(1.0)  # the live display redraws 10 times a second
        return load(*args, **kwargs)

    monkeypatch.setattr(pipeline.batch, "load_model", slow_load)
    result = invoke("a.wav", "-n", model_file)
    assert result.exit_code == 0
    drawn = screen.getvalue()
    assert f"loading {model_file.stem}…" in drawn
    assert "batch" not in drawn and "h of audio/h" not in drawn
    assert re.search(r"1 done, 0 skipped \(already complete\), 0 failed in [0-9.]+ m?s", drawn)


def test_the_summary_says_the_runs_time_and_what_the_time_column_measures(model_file: Path) -> None:
    write_audio(Path("a.wav"), seconds=1.0)
    write_audio(Path("b.wav"), seconds=1.0, seed=1)
    result = invoke("a.wav", "b.wav", "-n", model_file)
    assert result.exit_code == 0
    text = flat(result.stderr)
    assert re.search(
        r"2 done, 0 skipped \(already complete\), 0 failed in [0-9.]+ m?s \([0-9.]+× real time\)", text
    )
    assert "time: each track's own, from decoding to its last stem; tracks run overlapped" in text


def test_the_readme_python_snippet_runs(model_file: Path, tmp_path: Path) -> None:
    """The README's Python example, as written but for a local model: it shows how a file becomes a tensor."""
    text = README.read_text(encoding="utf-8")
    (snippet,) = re.findall(r"```python\n(.*?)```", text, re.S)
    assert 'model="htdemucs"' in snippet
    _library(tmp_path)
    namespace: dict[str, Any] = {}
    exec(snippet.replace('model="htdemucs"', f"model={str(model_file)!r}"), namespace)
    assert set(namespace["paths"]) == {"vocals", "no_vocals"}
    stems = namespace["stems"]
    assert set(stems) == {"drums", "bass", "other", "vocals"}
    assert stems["vocals"].shape == (2, 44100)


def test_a_24_bit_input_written_at_the_default_16_bits_is_noted_before_the_work(model_file: Path) -> None:
    write_audio(Path("hi.flac"), seconds=0.3, rate=96000, subtype="PCM_24")
    result = invoke("hi.flac", "-n", model_file, "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "note: hi.flac is 24-bit; the stems will be 16-bit: --bit-depth 24 keeps it" in flat(result.stderr)
    for given in (["--bit-depth", "16"], ["--format", "mp3"]):  # asked for, or no bit depth at all
        assert "24-bit" not in invoke("hi.flac", "-n", model_file, "--dry-run", *given).stderr


def test_a_mistyped_subcommand_is_not_taken_for_a_missing_file() -> None:
    run = _console_script("doctr")
    assert run.returncode == 2
    assert run.stderr.splitlines() == ["Error: no file named 'doctr'; did you mean `stemsplit doctor`?"]


@pytest.mark.parametrize("command", sorted(cli.SUBCOMMANDS))
def test_a_subcommand_alone_runs_it(command: str) -> None:
    """``stemsplit doctor`` reports; ``models``, ``mix`` and ``play`` alone show their own usage, not the
    mistyped-subcommand error (each is its own closest match)."""
    run = _console_script(command)
    assert "did you mean" not in run.stderr
    if command == "doctor":
        assert run.returncode == 0, run.stderr
        assert "Versions" in run.stdout and "stemsplit" in run.stdout
    else:
        assert run.returncode == 2
        assert run.stderr.startswith(f"Usage: stemsplit {command} [OPTIONS]"), run.stderr


def test_fewer_stems_than_on_disk_are_kept_without_running_the_network(
    model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stemsplit import pipeline

    write_audio(
        Path("a.wav"), seconds=0.5, peak=0.1
    )  # quiet: no clip gain, so the stems do not depend on each other
    folder = Path("separated", model_file.stem, "a")
    assert invoke("a.wav", "-n", model_file).exit_code == 0
    assert json.loads((folder / "stemsplit.json").read_text())["gain"] == 1.0
    vocals = (folder / "vocals.wav").read_bytes()

    def refuse(*args, **kwargs):
        raise AssertionError("the network must not run: the stems are on disk")

    monkeypatch.setattr(pipeline.batch, "load_model", refuse)
    planned = invoke("a.wav", "-n", model_file, "--stems", "vocals,drums", "--dry-run")
    assert planned.stdout.startswith("keep (on disk)")
    assert {p.name for p in folder.iterdir()} == {
        "drums.wav",
        "bass.wav",
        "other.wav",
        "vocals.wav",
        "stemsplit.json",
    }

    kept = invoke("a.wav", "-n", model_file, "--stems", "vocals,drums", "--json")
    assert kept.exit_code == 0, kept.stderr
    assert "--stems all → vocals,drums since a.wav's stems were made: kept from the stems on disk" in flat(
        kept.stderr
    )
    result = json.loads(kept.stdout)
    assert result["status"] == "skipped" and list(result["outputs"]) == ["vocals", "drums"]
    assert {p.name for p in folder.iterdir()} == {"vocals.wav", "drums.wav", "stemsplit.json"}
    assert (folder / "vocals.wav").read_bytes() == vocals
    again = invoke("a.wav", "-n", model_file, "--stems", "vocals,drums")
    assert again.exit_code == 0 and "since" not in again.stderr  # complete for the new settings
