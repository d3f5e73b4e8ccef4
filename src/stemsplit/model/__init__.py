"""Pure PyTorch HT Demucs: no file or network I/O, no printing, no randomness, no device moves.

Nothing here imports from the rest of stemsplit.
"""

from stemsplit.model.config import HTDemucsConfig
from stemsplit.model.htdemucs import HTDemucs

__all__ = ["HTDemucs", "HTDemucsConfig"]
