"""The norms' export form (two-level sums, for OpenVINO) against PyTorch's own norms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stemsplit.model import norms
from stemsplit.model.norms import GroupNorm, chunked_mean
from stemsplit.model.transformer import TokenGroupNorm


@pytest.fixture
def exporting(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Make the model believe it is being exported; the list records every time it asked."""
    asked: list[bool] = []
    monkeypatch.setattr(norms, "exporting", lambda: asked.append(True) or True)
    return asked


@pytest.mark.parametrize("shape", [(2, 3, 1), (2, 3, 511), (1, 4, 512), (2, 2, 1537), (2, 4, 5, 700)])
def test_chunked_mean_is_the_mean(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(len(shape)))
    dims = tuple(range(1, len(shape)))
    torch.testing.assert_close(chunked_mean(x, dims), x.mean(dim=dims, keepdim=True), atol=1e-12, rtol=0)
    torch.testing.assert_close(chunked_mean(x, (-1,)), x.mean(dim=-1, keepdim=True), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="last axis"):
        chunked_mean(x, (1,))


@pytest.mark.parametrize(
    ("groups", "shape"), [(1, (2, 8, 1000)), (4, (2, 8, 700)), (1, (2, 8, 3, 600)), (2, (1, 4, 7))]
)
def test_group_norm_exports_what_torch_computes(
    groups: int, shape: tuple[int, ...], exporting: list[bool]
) -> None:
    norm = GroupNorm(groups, shape[1]).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = 3 * torch.randn(shape, dtype=torch.float64) + 1
    expected = F.group_norm(x, groups, norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(norm(x), expected, atol=1e-10, rtol=0)
    assert exporting  # the export form ran
    assert set(GroupNorm(groups, shape[1]).state_dict()) == {"weight", "bias"}  # the checkpoints' keys


def test_group_norm_outside_an_export_is_torchs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(norms, "normalise", lambda *a: pytest.fail("the export form ran in PyTorch"))
    x = torch.randn(2, 4, 50)
    norm = GroupNorm(2, 4)
    torch.testing.assert_close(norm(x), F.group_norm(x, 2, norm.weight, norm.bias), atol=0, rtol=0)


def test_token_group_norm_exports_what_it_computes(monkeypatch: pytest.MonkeyPatch) -> None:
    norm = TokenGroupNorm(6).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 900, 6, dtype=torch.float64) - 2
    eager = norm(x)
    asked: list[bool] = []
    import stemsplit.model.transformer as transformer

    monkeypatch.setattr(transformer, "exporting", lambda: asked.append(True) or True)
    torch.testing.assert_close(norm(x), eager, atol=1e-10, rtol=0)
    assert asked
