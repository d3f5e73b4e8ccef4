"""stemsplit: split music into stems with Hybrid Transformer Demucs.

The public API is re-exported lazily (PEP 562) so that ``import stemsplit`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stemsplit._version import __version__

if TYPE_CHECKING:
    from stemsplit.model import HTDemucs, HTDemucsConfig
    from stemsplit.pipeline import SeparationOptions, TrackResult
    from stemsplit.separator import Separator
    from stemsplit.weights.checkpoint import LoadedModel, load_checkpoint

__all__ = [
    "HTDemucs",
    "HTDemucsConfig",
    "LoadedModel",
    "SeparationOptions",
    "Separator",
    "TrackResult",
    "__version__",
    "load_checkpoint",
]

_LAZY = {
    "HTDemucs": "stemsplit.model",
    "HTDemucsConfig": "stemsplit.model",
    "LoadedModel": "stemsplit.weights.checkpoint",
    "load_checkpoint": "stemsplit.weights.checkpoint",
    "SeparationOptions": "stemsplit.pipeline",
    "Separator": "stemsplit.separator",
    "TrackResult": "stemsplit.pipeline",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stemsplit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
