"""Output planning: ``--filename`` templates, collisions between inputs, and the sidecar's name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stemsplit.errors import InvalidOptionError
from stemsplit.pipeline.outputs import DEFAULT_TEMPLATE, check_template, plan_outputs

STEMS = ("drums", "bass", "other", "vocals")


def plan(inputs, template=DEFAULT_TEMPLATE, stems=STEMS, ext="wav", model="htdemucs"):
    return plan_outputs(
        [Path(p) for p in inputs],
        out_dir=Path("out"),
        template=template,
        models=[model] * len(inputs),
        stems=stems,
        ext=ext,
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{model}/{song}/{stem}.{ext}", "unknown placeholder {song}"),
        ("{model}/{track}.{ext}", "no {stem}"),
        ("{model}/{track/{stem}.{ext}", "malformed"),
        ("{model}/{track}}/{stem}.{ext}", "malformed"),
        ("/abs/{track}/{stem}.{ext}", "inside --out"),
        ("../{track}/{stem}.{ext}", "inside --out"),
        ("{model}/../../{stem}.{ext}", "inside --out"),
        ("{0}/{stem}.{ext}", "unknown placeholder"),
    ],
)
def test_bad_templates_are_usage_errors(template: str, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=re.escape(message)) as info:
        check_template(template)
    assert info.value.option == "--filename"


@pytest.mark.parametrize(
    "template",
    [DEFAULT_TEMPLATE, "{track}_{stem}.{ext}", "{stem}/{track}.{trackext}.{ext}", "x{{y}}/{stem}.wav"],
)
def test_good_templates_pass(template: str) -> None:
    assert check_template(template) == template


def test_default_layout_and_every_placeholder() -> None:
    (default,) = plan(["music/Song One.flac"])
    assert default.track == "Song One"
    assert dict(default.stems) == {s: Path("out/htdemucs/Song One") / f"{s}.wav" for s in STEMS}
    assert default.sidecar == Path("out/htdemucs/Song One/stemsplit.json")

    (custom,) = plan(["a/b/tune.mp3"], template="{model}-{ext}/{track}.{trackext}/{stem}.{ext}", ext="flac",
                     stems=("vocals", "no_vocals"), model="m")  # fmt: skip
    assert list(custom.stems.items()) == [
        ("vocals", Path("out/m-flac/tune.mp3/vocals.flac")),
        ("no_vocals", Path("out/m-flac/tune.mp3/no_vocals.flac")),
    ]


def test_flat_templates_get_one_sidecar_per_track() -> None:
    one, two = plan(["a.wav", "b.wav"], template="{model}/{track}_{stem}.{ext}")
    assert one.stems["vocals"] == Path("out/htdemucs/a_vocals.wav")
    assert one.sidecar == Path("out/htdemucs/a.stemsplit.json")
    assert two.sidecar == Path("out/htdemucs/b.stemsplit.json")
    (by_stem,) = plan(["a.wav"], template="{stem}/{track}.{ext}")
    assert by_stem.stems["bass"] == Path("out/bass/a.wav")
    assert by_stem.sidecar.name == "a.stemsplit.json"


def test_collisions_keep_both_with_a_clear_suffix() -> None:
    first, second, third, fourth = plan(["a/song.mp3", "b/song.flac", "c/song.flac", "d/song"])
    assert [p.track for p in (first, second, third, fourth)] == [
        "song",
        "song (flac)",
        "song (2)",
        "song (3)",
    ]
    assert second.stems["vocals"] == Path("out/htdemucs/song (flac)/vocals.wav")
    every = [f for p in (first, second, third, fourth) for f in (*p.stems.values(), p.sidecar)]
    assert len(every) == len(set(every))


def test_names_differing_only_in_case_collide() -> None:
    """On macOS/Windows ``Song/`` and ``song/`` are one folder: both inputs must still be kept."""
    first, second = plan(["a/Song.mp3", "b/song.flac"])
    assert (first.track, second.track) == ("Song", "song (flac)")


def test_no_collision_when_the_template_separates_the_inputs() -> None:
    one, two = plan(["a/song.mp3", "b/song.flac"], template="{track}.{trackext}/{stem}.{ext}")
    assert (one.track, two.track) == ("song", "song")


def test_template_without_track_cannot_hold_two_inputs() -> None:
    """Regression (#7): a template without {track} and two inputs crashed with a bare ValueError."""
    (only,) = plan(["a.wav"], template="{model}/{stem}.{ext}")
    assert only.stems["vocals"] == Path("out/htdemucs/vocals.wav")
    with pytest.raises(InvalidOptionError, match=r"\{track\}") as info:
        plan(["a.wav", "b.wav"], template="{model}/{stem}.{ext}")
    assert info.value.option == "--filename"


def test_stems_of_another_input_from_an_earlier_run_are_passed_over() -> None:
    """An earlier run's folders that belong to other inputs get the same suffixes as in-batch clashes."""
    others = {Path("out/htdemucs/song/stemsplit.json"), Path("out/htdemucs/song (flac)/stemsplit.json")}
    asked: list[tuple[Path, Path]] = []

    def owned_by_other(sidecar: Path, source: Path) -> bool:
        asked.append((sidecar, source))
        return sidecar in others

    new, again = plan_outputs(
        [Path("b/song.flac"), Path("c/song.flac")], out_dir=Path("out"), template=DEFAULT_TEMPLATE,
        models=["htdemucs"] * 2, stems=STEMS, ext="wav", owned_by_other=owned_by_other,
    )  # fmt: skip
    assert (new.track, again.track) == ("song (2)", "song (3)")
    assert new.sidecar == Path("out/htdemucs/song (2)/stemsplit.json")
    assert asked[:3] == [
        (Path("out/htdemucs/song/stemsplit.json"), Path("b/song.flac")),
        (Path("out/htdemucs/song (flac)/stemsplit.json"), Path("b/song.flac")),
        (Path("out/htdemucs/song (2)/stemsplit.json"), Path("b/song.flac")),
    ]
    # Flat templates: the per-track sidecar is what is asked about.
    (flat,) = plan_outputs(
        [Path("b/song.flac")], out_dir=Path("out"), template="{model}/{track}_{stem}.{ext}",
        models=["htdemucs"], stems=STEMS, ext="wav",
        owned_by_other=lambda sidecar, _: sidecar.name == "song.stemsplit.json",
    )  # fmt: skip
    assert flat.track == "song (flac)" and flat.stems["bass"] == Path("out/htdemucs/song (flac)_bass.wav")


def test_a_template_without_track_is_not_checked_for_other_inputs() -> None:
    """No other name exists for it: the user chose fixed names, so they are reused as before."""
    (only,) = plan_outputs(
        [Path("a.wav")], out_dir=Path("out"), template="{model}/{stem}.{ext}", models=["htdemucs"],
        stems=STEMS, ext="wav", owned_by_other=lambda *_: pytest.fail("must not be asked"),
    )  # fmt: skip
    assert only.stems["vocals"] == Path("out/htdemucs/vocals.wav")


def test_tracks_of_different_models_get_their_own_folders_and_still_never_collide() -> None:
    """``--model auto``: ``{model}`` is each track's model; without it in the template, names still differ."""
    inputs = [Path("a/song.wav"), Path("b/song.flac")]
    models = ["htdemucs", "hdemucs_mmi"]
    apart = plan_outputs(
        inputs, out_dir=Path("out"), template=DEFAULT_TEMPLATE, models=models, stems=STEMS, ext="wav"
    )
    assert [o.stems["vocals"] for o in apart] == [
        Path("out/htdemucs/song/vocals.wav"), Path("out/hdemucs_mmi/song/vocals.wav"),
    ]  # fmt: skip
    flat = plan_outputs(
        inputs, out_dir=Path("out"), template="{track}/{stem}.{ext}", models=models, stems=STEMS, ext="wav"
    )
    assert [o.track for o in flat] == ["song", "song (flac)"]
