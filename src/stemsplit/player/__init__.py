"""``stemsplit play``'s mixer: a local web server (:mod:`~stemsplit.player.server`) and its page (``static/``).

The stems are read part by part (:mod:`~stemsplit.player.source`) and mixed in the browser; Download mix
renders through :mod:`stemsplit.audio.mix`, as ``stemsplit mix`` does. Only :mod:`stemsplit.cli` imports
this package; it imports no torch.
"""

from __future__ import annotations

from stemsplit.player.server import PlayerServer

__all__ = ["PlayerServer"]
