"""The norms' export form (two-level sums, for OpenVINO) against PyTorch's own norms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stemsplit.model import norms
from stemsplit.model.norms import GroupNorm, chunked_mean, group_norm_halves
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


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_norm_halves_are_the_norm_of_the_whole(groups: int) -> None:
    norm = GroupNorm(groups, 8).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    a, b = (
        2 * torch.randn(2, 4, 3, 300, dtype=torch.float64),
        torch.randn(2, 4, 3, 300, dtype=torch.float64) - 1,
    )
    whole = F.group_norm(torch.cat([a, b], dim=1), groups, norm.weight, norm.bias, norm.eps)
    halves = torch.cat(group_norm_halves(norm, a, b), dim=1)
    torch.testing.assert_close(halves, whole, atol=1e-10, rtol=0)
    if groups == 1:  # per row of a (B, C, Fq, T) map: each row normalised over its (C, T) alone
        rows = torch.cat(group_norm_halves(norm, a, b, (1, 3)), dim=1)
        per_row = torch.stack(
            [F.group_norm(torch.cat([a, b], 1)[:, :, f], 1, norm.weight, norm.bias) for f in range(3)], 2
        )
        torch.testing.assert_close(rows, per_row, atol=1e-10, rtol=0)


def test_group_norm_halves_refuse_a_group_across_the_halves() -> None:
    with pytest.raises(ValueError, match="3 groups"):
        group_norm_halves(GroupNorm(3, 6), torch.randn(1, 3, 4), torch.randn(1, 3, 4))


def test_group_norm_halves_refuse_rows_for_several_groups() -> None:
    with pytest.raises(ValueError, match="every axis but the batch"):
        group_norm_halves(GroupNorm(2, 4), torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), (1, 3))
