"""The command line: the only place Typer and Rich are used (:mod:`~stemsplit.cli.ui`).

``stemsplit = "stemsplit.cli:main"``; importing this package does not import torch.
"""

from __future__ import annotations

from stemsplit.cli.app import main

__all__ = ["main"]
