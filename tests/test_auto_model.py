"""``--model auto``: a model per track from its probed duration, said in every result, honoured on resume.

The registry is replaced by one whose ``htdemucs`` and ``hdemucs_mmi`` are tiny random networks of each
kind, already in the cache (nothing is downloaded), and the threshold is lowered to one second so that the
tracks stay short: under it a track gets ``htdemucs``, from it on ``hdemucs_mmi``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from checkpoints import FOUR
from httpserver import LoopbackServer
from separation_helpers import OneThread, make_tiny_hybrid_th, make_tiny_th, read_audio, write_audio
from stemsplit import pipeline
from stemsplit.cli import app as cli
from stemsplit.cli import separate as cli_separate
from stemsplit.errors import InvalidOptionError
from stemsplit.weights import registry as models
from stemsplit.weights.cache import ModelCache
from stemsplit.weights.registry import ModelSpec, WeightFile, make_registry

runner = CliRunner()


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {"htdemucs": make_tiny_th(folder, "955717e8"), "hdemucs_mmi": make_tiny_hybrid_th(folder)}


def _spec(name: str, path: Path, segment: Fraction) -> ModelSpec:
    wf = WeightFile(
        path.name.split("-")[0],
        path.name,
        "hybrid_transformer/",
        hashlib.sha256(path.read_bytes()).hexdigest(),
    )
    return ModelSpec(name, f"tiny {name}", FOUR, (wf,), segment=segment)


@pytest.fixture
def registry(model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The tiny registry, its files in the cache; tracks of 1 s or more get hdemucs_mmi."""
    segments = {"htdemucs": Fraction(1, 4), "hdemucs_mmi": Fraction(3)}  # the tiny models' windows
    monkeypatch.setattr(
        models, "MODELS", make_registry(*(_spec(n, p, segments[n]) for n, p in model_files.items()))
    )
    monkeypatch.setattr(models, "LONG_TRACK_S", 1.0)
    folder = ModelCache().folder()
    folder.mkdir(parents=True, exist_ok=True)
    for path in model_files.values():
        shutil.copy(path, folder / path.name)
    return model_files


@pytest.fixture(autouse=True)
def _one_thread_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    with OneThread():
        yield


@pytest.fixture
def tracks(tmp_path: Path) -> tuple[Path, Path]:
    write_audio(tmp_path / "short.wav", seconds=0.5, seed=1)
    write_audio(tmp_path / "long.wav", seconds=1.5, seed=2)
    return tmp_path / "short.wav", tmp_path / "long.wav"


def invoke(*args: str | Path):
    return runner.invoke(cli_separate.separate_app, [str(a) for a in args], catch_exceptions=False)


def results(stdout: str) -> list[dict]:
    """``--json`` lines (printed as tracks end), in input order: short.wav, long.wav."""
    return sorted(map(json.loads, stdout.splitlines()), key=lambda r: Path(r["input"]).name, reverse=True)


def test_each_track_gets_its_model_when_the_batch_is_planned(registry, tracks) -> None:
    batch = pipeline.plan_batch(
        ["short.wav", "long.wav"], pipeline.SeparationOptions(model="auto"), dry_run=True
    )
    assert [m.name for m in batch.models] == ["htdemucs", "hdemucs_mmi"]
    assert [batch.model_of(i).name for i in range(2)] == ["htdemucs", "hdemucs_mmi"]
    short, long = (outputs for _, _, outputs in batch.tracks)
    assert short is not None and long is not None
    assert short.stems["vocals"] == Path("separated/htdemucs/short/vocals.wav")
    assert long.stems["vocals"] == Path("separated/hdemucs_mmi/long/vocals.wav")


def test_a_run_says_which_model_each_track_got_and_runs_that_model(registry, tracks) -> None:
    exact = ("--bit-depth", "32f", "--precision", "float32")  # compared bit for bit below
    result = invoke("short.wav", "long.wav", "-n", "auto", "--json", *exact, "--report", "r.json")
    assert result.exit_code == 0, result.stderr
    lines = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert (lines["short.wav"]["model"], lines["long.wav"]["model"]) == ("htdemucs", "hdemucs_mmi")
    summary = " ".join(result.stderr.split())
    assert (
        "model" in summary and "short.wav done htdemucs" in summary and "long.wav done hdemucs_mmi" in summary
    )
    report = json.loads(Path("r.json").read_text())
    assert report["model"]["name"] == "auto"
    assert [m["name"] for m in report["model"]["choices"]] == ["htdemucs", "hdemucs_mmi"]
    assert [t["model"] for t in report["tracks"]] == ["htdemucs", "hdemucs_mmi"]
    # The long track's stems are exactly those of hdemucs_mmi named on its own.
    alone = invoke("long.wav", "-n", "hdemucs_mmi", "-o", "alone", *exact, "--stems", "vocals")
    assert alone.exit_code == 0, alone.stderr
    auto_vocals, _ = read_audio(Path("separated/hdemucs_mmi/long/vocals.wav"))
    alone_vocals, _ = read_audio(Path("alone/hdemucs_mmi/long/vocals.wav"))
    assert np.array_equal(auto_vocals, alone_vocals)


def test_the_dry_run_shows_each_pick(registry, tracks) -> None:
    result = invoke("short.wav", "long.wav", "-n", "auto", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["model"] for line in result.stdout.splitlines()] == ["htdemucs", "hdemucs_mmi"]
    assert "model auto (htdemucs under 1 s, hdemucs_mmi from 1 s)" in " ".join(result.stderr.split())


@pytest.mark.parametrize("template", ["{track}/{stem}.{ext}", None], ids=["one-folder", "model-folders"])
def test_resume_redoes_a_track_the_rule_now_gives_another_model(
    registry, tracks, template: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["short.wav", "long.wav", "-n", "auto", "--json", "--stems", "vocals"]
    args += ["--filename", template] if template else []
    first = invoke(*args)
    assert first.exit_code == 0, first.stderr
    again = results(invoke(*args).stdout)
    assert [r["status"] for r in again] == ["skipped", "skipped"]

    monkeypatch.setattr(models, "LONG_TRACK_S", 0.25)  # now both tracks are long
    changed = results(invoke(*args).stdout)
    assert [(r["status"], r["model"]) for r in changed] == [
        ("done", "hdemucs_mmi"),
        ("skipped", "hdemucs_mmi"),
    ]
    vocals = Path(changed[0]["outputs"]["vocals"])
    assert vocals.parts[:2] == (("separated", "short") if template else ("separated", "hdemucs_mmi"))
    sidecar = json.loads((vocals.parent / "stemsplit.json").read_text())
    assert sidecar["model"] == "hdemucs_mmi"


def test_a_segment_must_fit_every_model_auto_may_use(registry, tracks) -> None:
    with pytest.raises(InvalidOptionError, match=r"0.25 s window \(htdemucs\)"):
        pipeline.plan_batch(["long.wav"], pipeline.SeparationOptions(model="auto", segment=2.0), dry_run=True)


def test_models_download_auto_fetches_both_models(registry) -> None:
    shutil.rmtree(ModelCache().folder())
    with LoopbackServer() as server:
        for path in registry.values():
            server.serve(f"/hybrid_transformer/{path.name}", path.read_bytes())
        result = runner.invoke(
            cli.app, ["models", "download", "auto", "-q"], env={"STEMSPLIT_MODEL_URL": server.url}
        )
    assert result.exit_code == 0, result.stderr
    assert [Path(line).name for line in result.stdout.split()] == [p.name for p in registry.values()]


def test_the_library_separator_asks_for_one_model() -> None:
    from stemsplit.errors import UnknownModelError
    from stemsplit.weights.loading import describe_model

    with pytest.raises(UnknownModelError, match="picks a model per track of a batch"):
        describe_model("auto")
