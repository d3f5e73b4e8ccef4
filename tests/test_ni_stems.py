"""The NI stem manifest, its names and colours, and the fold into four stems (issue #18)."""

from __future__ import annotations

import json

import pytest

from stemsplit.audio import NI_STEMS, StemManifest, fold_sources, parse_assignments
from stemsplit.errors import InvalidOptionError


def test_the_default_manifest_is_nis() -> None:
    document = json.loads(StemManifest().to_json())
    assert document["version"] == 1
    assert [s["name"] for s in document["stems"]] == ["Drums", "Bass", "Other", "Vocals"]
    assert [s["color"] for s in document["stems"]] == ["#009E73", "#D55E00", "#CC79A7", "#56B4E9"]
    assert document["mastering_dsp"]["compressor"]["enabled"] is False
    assert document["mastering_dsp"]["limiter"]["enabled"] is False


def test_relabel_changes_only_what_it_names() -> None:
    manifest = StemManifest().relabel(names={"other": "Keys"}, colors={"vocals": "#abcdef"})
    assert manifest.names == ("Drums", "Bass", "Keys", "Vocals")
    assert manifest.colors == ("#009E73", "#D55E00", "#CC79A7", "#ABCDEF")
    assert "Keys" in manifest.to_json().decode("utf-8")


@pytest.mark.parametrize(
    ("names", "colors", "option", "words"),
    [
        ({"voice": "A"}, None, "--stem-names", "'voice' is not a stem"),
        ({"vocals": " "}, None, "--stem-names", "1 to 64 characters"),
        ({"vocals": "x" * 65}, None, "--stem-names", "1 to 64 characters"),
        (None, {"bass": "red"}, "--stem-colors", "#RRGGBB"),
        (None, {"bass": "#12345"}, "--stem-colors", "#RRGGBB"),
    ],
)
def test_bad_names_and_colours_are_refused(names, colors, option: str, words: str) -> None:
    with pytest.raises(InvalidOptionError, match=words) as info:
        StemManifest().relabel(names=names, colors=colors)
    assert info.value.option == option and "\n" not in str(info.value)


def test_parse_assignments() -> None:
    assert parse_assignments("vocals=#FF0000, Drums = #00ff00", "--stem-colors") == {
        "vocals": "#FF0000",
        "drums": "#00ff00",
    }
    for bad in ("vocals", "=x", "vocals=a,vocals=b"):
        with pytest.raises(InvalidOptionError) as info:
            parse_assignments(bad, "--stem-names")
        assert info.value.option == "--stem-names"


def test_fold_sources() -> None:
    assert fold_sources(NI_STEMS) == {s: (s,) for s in NI_STEMS}
    six = fold_sources(("drums", "bass", "other", "vocals", "guitar", "piano"))
    assert six["other"] == ("other", "guitar", "piano") and six["vocals"] == ("vocals",)
    for bad in (("vocals", "accompaniment"), ("drums", "bass", "vocals")):
        with pytest.raises(InvalidOptionError, match=r"stem\.mp4") as info:
            fold_sources(bad)
        assert info.value.option == "--format"
