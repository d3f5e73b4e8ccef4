"""Small path helpers shared by modules that look at folders before they exist."""

from __future__ import annotations

from pathlib import Path


def nearest_existing(path: Path) -> Path | None:
    """``path`` or its nearest ancestor that exists (a file or a folder); None when nothing does.

    Used to ask about the disk a folder will be created on (free space, writability) before creating it.
    """
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return None
