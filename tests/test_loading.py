"""``--model NAME|PATH`` to a model: describing a local file fully or from its header only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from separation_helpers import make_ft_bag, make_tiny_th
from stemsplit.weights import loading
from stemsplit.weights.download import sha256_file


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_th(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def bag_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ft_bag(tmp_path_factory.mktemp("bag"))[0]


@pytest.mark.parametrize("which", ["checkpoint", "bag"])
def test_header_description_matches_the_full_one_except_weights(
    which: str, model_file: Path, bag_file: Path
) -> None:
    path = model_file if which == "checkpoint" else bag_file
    full = loading.describe_model(str(path))
    light = loading.describe_model(str(path), load=False)

    assert (light.name, light.sources, light.path, light.bag_size, light.max_segment) == (
        full.name, full.sources, full.path, full.bag_size, full.max_segment,
    )  # fmt: skip
    assert light.members is None and light.weights_id == ""
    assert loading.weights_identity(light) == full.weights_id  # hashed on demand, identically
    assert loading.weights_identity(full) == full.weights_id


def test_the_full_description_hashes_the_file(model_file: Path) -> None:
    assert loading.describe_model(str(model_file)).weights_id == sha256_file(model_file)


def test_a_header_description_still_loads_the_same_network(model_file: Path) -> None:
    full = loading.load_model(loading.describe_model(str(model_file)))
    light = loading.load_model(loading.describe_model(str(model_file), load=False))

    mix = torch.randn(1, 2, 2000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(light.models[0](mix), full.models[0](mix), rtol=0, atol=0)


def test_registry_names_are_described_alike_with_or_without_load() -> None:
    assert loading.describe_model("htdemucs", load=False) == loading.describe_model("htdemucs")


def test_a_registry_model_is_looked_up_once_and_loaded_from_its_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The description carries the registry entry; loading hands that entry to the cache, not the name."""
    from stemsplit.weights import registry

    info = loading.describe_model("htdemucs")
    assert info.members is not None and info.members.spec == registry.get_model_spec("htdemucs")
    assert info.members.checkpoints is None
    lookups: list[str] = []
    monkeypatch.setattr(registry, "get_model_spec", lambda name, *a: lookups.append(name))  # type: ignore[func-returns-value]
    asked: list[object] = []

    class Recording:
        def resolve(self, model: object) -> None:
            asked.append(model)
            raise LookupError("stop here: nothing is downloaded")

    with pytest.raises(LookupError, match="stop here"):
        loading.load_model(info, Recording())  # type: ignore[arg-type]
    assert asked == [info.members.spec] and lookups == []
