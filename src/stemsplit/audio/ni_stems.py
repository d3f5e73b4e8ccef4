"""The Native Instruments STEMS manifest: stem names and colours, and the four stems a file holds.

An NI stem file (``.stem.mp4``) holds five stereo tracks: the master (the full mix) and exactly four
stems, in the order :data:`NI_STEMS` (drums, bass, other, vocals). Its ``moov/udta/stem`` box holds
this JSON (what Traktor writes and Mixxx reads; Mixxx checks ``version`` and reads each name and
colour)::

    {"version": 1,
     "stems": [{"name": "Drums", "color": "#009E73"}, ... four entries, in track order ...],
     "mastering_dsp": {"compressor": {...}, "limiter": {...}}}

The mastering settings are NI's stem creator defaults, with both processors off: the stems are
played as separated, nothing is compressed or limited on top.

A model with other sources than those four (``htdemucs_6s`` adds guitar and piano) is folded by
:func:`fold_sources`: every source that is not drums, bass or vocals is summed into ``other``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stemsplit.errors import InvalidOptionError

NI_STEMS = ("drums", "bass", "other", "vocals")
"""The four stems of an NI stem file, in track order (tracks 2 to 5; track 1 is the master)."""

DEFAULT_NAMES = ("Drums", "Bass", "Other", "Vocals")
"""The names shown in Traktor and Mixxx, in :data:`NI_STEMS` order."""

DEFAULT_COLORS = ("#009E73", "#D55E00", "#CC79A7", "#56B4E9")
"""NI's default stem colours, in :data:`NI_STEMS` order."""

MANIFEST_VERSION = 1
"""The manifest version readers accept (Mixxx refuses a missing or non-positive one)."""

MASTERING_DSP: dict[str, dict[str, float | bool]] = {
    "compressor": {
        "enabled": False,
        "input_gain": 0.5,
        "output_gain": 0.5,
        "threshold": 0.0,
        "ratio": 3.0,
        "attack": 0.003,
        "release": 0.3,
        "hp_cutoff": 300.0,
        "dry_wet": 50.0,
    },
    "limiter": {"enabled": False, "threshold": 0.0, "ceiling": -0.35, "release": 0.05},
}
"""NI's stem creator defaults for the playback processors (both off)."""

MAX_NAME_CHARS = 64
"""The longest stem name accepted (Traktor shows a handful of characters)."""

_COLOR = re.compile(r"#[0-9A-Fa-f]{6}")


def _check_color(stem: str, color: str) -> None:
    """Refuse a colour that is not ``#RRGGBB``.

    Raises:
        InvalidOptionError: naming the stem and quoting the colour.
    """
    if not _COLOR.fullmatch(color):
        raise InvalidOptionError(
            f"--stem-colors: the colour of {stem} must be #RRGGBB (six hex digits), got {color!r}",
            option="--stem-colors",
        )


@dataclass(frozen=True, slots=True)
class StemManifest:
    """The names and colours of the four stems, in :data:`NI_STEMS` order.

    Attributes:
        names: four display names.
        colors: four ``#RRGGBB`` colours.

    Raises:
        InvalidOptionError: not four of each, an empty or overlong name, or a colour not ``#RRGGBB``.
    """

    names: tuple[str, ...] = DEFAULT_NAMES
    colors: tuple[str, ...] = DEFAULT_COLORS

    def __post_init__(self) -> None:
        if len(self.names) != len(NI_STEMS) or len(self.colors) != len(NI_STEMS):
            raise ValueError(f"a stem file has {len(NI_STEMS)} stems: give 4 names and 4 colours")
        for stem, name in zip(NI_STEMS, self.names, strict=True):
            if not name.strip() or len(name) > MAX_NAME_CHARS:
                raise InvalidOptionError(
                    f"--stem-names: the name of {stem} must have 1 to {MAX_NAME_CHARS} characters, "
                    f"got {name!r}",
                    option="--stem-names",
                )
        for stem, color in zip(NI_STEMS, self.colors, strict=True):
            _check_color(stem, color)

    def relabel(
        self, names: Mapping[str, str] | None = None, colors: Mapping[str, str] | None = None
    ) -> StemManifest:
        """A copy with some stems renamed or recoloured; keys are stems of :data:`NI_STEMS`.

        Raises:
            InvalidOptionError: a key that is not one of the four stems, or an invalid value.
        """
        for option, given in (("--stem-names", names or {}), ("--stem-colors", colors or {})):
            unknown = sorted(set(given) - set(NI_STEMS))
            if unknown:
                raise InvalidOptionError(
                    f"{option}: {unknown[0]!r} is not a stem of a stem file; use {', '.join(NI_STEMS)}",
                    option=option,
                )
        for stem, color in (colors or {}).items():  # checked as given, so that the message quotes it
            _check_color(stem, color)
        return StemManifest(
            names=tuple((names or {}).get(s, n) for s, n in zip(NI_STEMS, self.names, strict=True)),
            colors=tuple(
                (colors or {}).get(s, c).upper() for s, c in zip(NI_STEMS, self.colors, strict=True)
            ),
        )

    def to_json(self) -> bytes:
        """The manifest as UTF-8 JSON, the payload of the ``moov/udta/stem`` box."""
        document = {
            "version": MANIFEST_VERSION,
            "stems": [{"name": n, "color": c} for n, c in zip(self.names, self.colors, strict=True)],
            "mastering_dsp": MASTERING_DSP,
        }
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def parse_assignments(text: str, option: str) -> dict[str, str]:
    """Parse ``STEM=VALUE`` pairs separated by commas (``vocals=Acapella,other=Music``).

    Args:
        text: the option's value.
        option: the option's name, for the error message.

    Raises:
        InvalidOptionError: a pair without ``=``, an empty stem, or a stem given twice.
    """
    pairs: dict[str, str] = {}
    for item in text.split(","):
        stem, sep, value = item.partition("=")
        stem = stem.strip().lower()
        if not sep or not stem:
            raise InvalidOptionError(
                f"{option} {text!r}: use STEM=VALUE pairs separated by commas (for example "
                f"vocals=...), STEM one of {', '.join(NI_STEMS)}",
                option=option,
            )
        if stem in pairs:
            raise InvalidOptionError(f"{option}: {stem} is given twice", option=option)
        pairs[stem] = value.strip()
    return pairs


def fold_sources(sources: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Which of a model's sources make each stem of a stem file, in :data:`NI_STEMS` order.

    Drums, bass and vocals keep their own source; ``other`` is the sum of every remaining source
    (``other``, and for ``htdemucs_6s`` also ``guitar`` and ``piano``).

    Raises:
        InvalidOptionError: the model lacks drums, bass, vocals, or any source for ``other``.
    """
    named = {"drums", "bass", "vocals"}
    rest = tuple(s for s in sources if s not in named)
    missing = sorted(named - set(sources))
    if missing or not rest:
        raise InvalidOptionError(
            f"--format stem.mp4 needs a model with drums, bass, vocals and at least one other source; "
            f"this one has {', '.join(sources)}",
            option="--format",
        )
    return {"drums": ("drums",), "bass": ("bass",), "other": rest, "vocals": ("vocals",)}
