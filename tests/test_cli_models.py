"""``stemsplit models …`` and the top-level options, through Typer's runner and a real subprocess."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from httpserver import LoopbackServer
from stemsplit._version import __version__
from stemsplit.cli import app as cli
from stemsplit.weights import registry as models
from stemsplit.weights.cache import ModelCache
from stemsplit.weights.registry import ModelSpec, WeightFile, make_registry

runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli.app, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def payload() -> bytes:
    return random.Random(7).randbytes(40_000)


@pytest.fixture
def served(payload: bytes, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[WeightFile, Path]]:
    """A one-model test registry whose file is served from loopback through STEMSPLIT_MODEL_URL."""
    digest = hashlib.sha256(payload).hexdigest()
    wf = WeightFile("abcd0001", f"abcd0001-{digest[:8]}.th", "hybrid_transformer/", digest[:8])
    monkeypatch.setattr(
        models, "MODELS", make_registry(ModelSpec("tiny", "A test model.", ("drums", "bass"), (wf,)))
    )
    with LoopbackServer() as server:
        server.serve(f"/hybrid_transformer/{wf.filename}", payload)
        monkeypatch.setenv("STEMSPLIT_MODEL_URL", server.url)
        yield wf, ModelCache().folder() / wf.filename


def test_version_and_help() -> None:
    assert _invoke("--version") == (0, f"stemsplit {__version__}\n", "")
    code, out, _ = _invoke("--help")
    assert code == 0 and "models" in out
    code, out, _ = _invoke("models", "--help")
    assert code == 0 and all(
        word in out for word in ("list", "download", "import", "verify", "path", "remove")
    )


def test_help_and_version_do_not_import_torch() -> None:
    code = "import sys; from stemsplit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("False")


def test_console_script_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stemsplit", "--version"], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout.strip()) == (0, f"stemsplit {__version__}")


def test_only_the_processs_own_command_freezes_the_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main()`` (the console script) freezes the objects for a shorter exit, even when the command exits
    with an error; ``main(argv)`` (a caller's own process) leaves the collector alone."""
    import gc

    from stemsplit.cli import main

    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    with pytest.raises(SystemExit):
        main(["--version"])
    assert not frozen
    for argv in (["stemsplit", "--version"], ["stemsplit", "--no-such-option"]):
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit):
            main()
    assert frozen == [True, True]


def test_list_json_shows_registry_and_cache_state(served: tuple[WeightFile, Path]) -> None:
    code, out, _ = _invoke("models", "list", "--json")
    assert code == 0
    assert [(m["name"], m["cached"]) for m in json.loads(out)] == [("tiny", False)]
    assert _invoke("models", "download", "tiny", "-q")[0] == 0
    rows = json.loads(_invoke("models", "list", "--json")[1])
    assert rows[0]["cached"] is True and rows[0]["stems"] == ["drums", "bass"]


def test_list_table_names_the_released_models() -> None:
    code, out, _ = _invoke("models", "list")
    assert code == 0
    for name in ("htdemucs (default)", "htdemucs_ft", "htdemucs_6s", "8.80 dB", "9.00 dB"):
        assert name in out


@pytest.mark.parametrize("args", [[], ["--json"]], ids=["table", "json"])
def test_list_states_the_weights_licence_on_stderr(args: list[str]) -> None:
    code, out, err = _invoke("models", "list", *args)
    assert code == 0
    assert err.splitlines() == [
        "The pretrained weights are Meta's, not covered by stemsplit's MIT licence: their author says they "
        "are for research use (facebookresearch/demucs issues #327 and #508)."
    ]
    assert "licence" not in out
    if args:
        json.loads(out)  # stdout is the JSON document alone


def test_download_prints_the_path_and_leaves_a_verified_file(
    served: tuple[WeightFile, Path], payload: bytes
) -> None:
    _, dest = served
    code, out, _ = _invoke("models", "download", "tiny", "--quiet")
    assert (code, out.strip()) == (0, str(dest))
    assert dest.read_bytes() == payload
    assert [p.name for p in dest.parent.iterdir() if p.is_file()] == [dest.name]


def test_download_with_wrong_hash_exits_3_and_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    with LoopbackServer() as server:
        server.serve("/hybrid_transformer/955717e8-8726e21a.th", b"not the real weights" * 100)
        monkeypatch.setenv("STEMSPLIT_MODEL_URL", server.url)
        code, out, err = _invoke("models", "download", "htdemucs", "-q")
    assert code == 3 and out == ""
    assert "Error:" in err and "8726e21a" in err
    folder = ModelCache().folder()
    assert not folder.exists() or [p for p in folder.iterdir() if p.is_file()] == []


def test_download_offline_exits_3_and_says_what_to_do() -> None:
    code, _, err = _invoke("models", "download", "htdemucs", "--offline")
    assert code == 3
    assert "offline" in err and "stemsplit models import" in err


def test_download_failure_exits_3_with_a_summary_line_then_url_cache_and_ways_out(
    served: tuple[WeightFile, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    wf, dest = served
    with LoopbackServer() as empty:  # a mirror without the file
        monkeypatch.setenv("STEMSPLIT_MODEL_URL", empty.url)
        code, out, err = _invoke("models", "download", "tiny", "-q")
    assert code == 3 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith("Error: could not download model 'tiny'") and "HTTP 404" in lines[0]
    assert f"  url:   {empty.url}hybrid_transformer/{wf.filename}" in lines
    assert f"  cache: {dest}" in lines
    assert any(line.startswith("  fix:") and "stemsplit models import FILE" in line for line in lines)
    assert any(line.startswith("  or:") and "STEMSPLIT_MODEL_URL" in line for line in lines)


HELP_COMMANDS = [
    ["models"],
    *(["models", name] for name in ("list", "download", "import", "verify", "path", "remove")),
    ["doctor"],
]


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=" ".join)
def test_dash_h_is_help_on_every_command(command: list[str]) -> None:
    code, out, err = _invoke(*command, "-h")
    assert (code, err) == (0, "")
    assert out.startswith(f"Usage: stemsplit {' '.join(command)} ")
    assert (code, out, err) == _invoke(*command, "--help")
    assert "-h, --help" in out


def test_dash_h_is_help_through_the_console_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["-h"], ["doctor", "-h"], ["models", "list", "-h"]):
        with pytest.raises(SystemExit) as info:
            cli.main(args)
        assert info.value.code == 0, args
        assert capsys.readouterr().out.startswith("Usage: stemsplit"), args


def test_unknown_model_is_a_usage_error_with_a_suggestion() -> None:
    code, _, err = _invoke("models", "download", "htdemux")
    assert code == 2 and "Did you mean 'htdemucs'" in err


def test_download_needs_a_name_or_all() -> None:
    result = runner.invoke(cli.app, ["models", "download"])
    assert result.exit_code == 2


def test_import_verify_remove(served: tuple[WeightFile, Path], payload: bytes, tmp_path: Path) -> None:
    wf, dest = served
    browser_copy = tmp_path / f"{wf.signature} (1).th"
    browser_copy.write_bytes(payload)
    code, out, _ = _invoke("models", "import", str(browser_copy))
    assert (code, out.strip()) == (0, str(dest)) and dest.read_bytes() == payload

    code, out, _ = _invoke("models", "verify", "--json")
    assert code == 0 and [r["state"] for r in json.loads(out)] == ["ok"]

    dest.write_bytes(payload[:-1] + b"\0")  # same size, different bytes
    code, out, err = _invoke("models", "verify")
    assert code == 1 and "corrupt" in out and "stemsplit models remove tiny" in err

    code, out, _ = _invoke("models", "remove", "tiny")
    assert code == 0 and out.strip() == str(dest) and not dest.exists()


def test_import_of_a_wrong_file_shows_both_hashes(served: tuple[WeightFile, Path], tmp_path: Path) -> None:
    wf, dest = served
    wrong = tmp_path / wf.filename
    wrong.write_bytes(b"something else")
    code, _, err = _invoke("models", "import", str(wrong))
    assert code == 3
    assert wf.sha256 in err and hashlib.sha256(b"something else").hexdigest()[:8] in err
    assert not dest.exists()


def test_path_prints_the_cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEMSPLIT_CACHE_DIR", str(tmp_path / "c"))
    assert _invoke("models", "path") == (0, f"{tmp_path / 'c' / 'checkpoints'}\n", "")
