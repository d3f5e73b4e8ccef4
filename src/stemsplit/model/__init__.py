"""Pure PyTorch hybrid networks (HT Demucs v4, Hybrid Demucs v3): no file or network I/O, no printing,
no randomness, no device moves.

Nothing here imports from the rest of stemsplit.
"""

from stemsplit.model.config import HDemucsConfig, HTDemucsConfig, HybridConfig
from stemsplit.model.hdemucs import HDemucs
from stemsplit.model.htdemucs import HTDemucs
from stemsplit.model.hybrid import HybridModel

__all__ = ["HDemucs", "HDemucsConfig", "HTDemucs", "HTDemucsConfig", "HybridConfig", "HybridModel"]
