"""A decoded track held in memory or spilled to a temporary file reads back the same, as arrays torch can
take without a warning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stemsplit.audio.buffer import TrackBuffer


@pytest.mark.parametrize("memory_frames", [10_000, 100], ids=["in memory", "spilled"])
def test_reads_give_back_what_was_appended_as_writable_arrays(memory_frames: int, tmp_path: Path) -> None:
    """Regression: a spilled track's spans were read-only views of the bytes read, so that every window
    taken from them made torch print a "NumPy array is not writable" warning (issue #17's helper report)."""
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((2, n)).astype(np.float32) for n in (300, 41, 700)]
    whole = np.concatenate(blocks, axis=1)
    buffer = TrackBuffer(2, memory_frames=memory_frames, spill_dir=tmp_path)
    try:
        for block in blocks:
            buffer.append(block)
        buffer.finish()
        assert buffer.spilled == (memory_frames < whole.shape[1])
        for lo, hi in [(0, 1041), (5, 333), (299, 342), (1040, 1041), (7, 7)]:
            span = buffer.read(lo, hi)
            assert span.shape == (2, hi - lo)
            np.testing.assert_array_equal(span, whole[:, lo:hi])
            torch.as_tensor(span)  # warnings are errors in this suite
    finally:
        buffer.close()
