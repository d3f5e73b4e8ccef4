"""Reading checkpoints: both formats, bags, strict validation, and refusing unsafe or broken files."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import zipfile
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from checkpoints import SIX, damage_tensors, random_state, save_safetensors, save_th, tiny_kwargs
from stemsplit.errors import (
    CheckpointError,
    StateDictMismatchError,
    UnsafeCheckpointError,
    UnsupportedCheckpointError,
)
from stemsplit.model import HTDemucs
from stemsplit.weights.checkpoint import (
    config_from_kwargs,
    load_bag,
    load_checkpoint,
    read_bag_header,
    read_header,
)


def _tiny(**overrides: object) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    kwargs = tiny_kwargs(**overrides)
    return kwargs, random_state(HTDemucs(config_from_kwargs(kwargs)))


def _fp16(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.float16).to(torch.float32) for k, v in state.items()}


@pytest.mark.parametrize("fmt", ["th", "safetensors"])
def test_round_trip_restores_config_and_fp16_weights_exactly(tmp_path: Path, fmt: str) -> None:
    kwargs, state = _tiny()
    save = save_th if fmt == "th" else save_safetensors
    loaded = load_checkpoint(save(tmp_path / f"m.{fmt}", kwargs, state))
    assert loaded.config == config_from_kwargs(kwargs)
    assert loaded.config.segment == Fraction(1, 4)
    model = loaded.build()
    assert not model.training
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, _fp16(state)[key]), key


def test_th_file_references_the_demucs_class_like_the_official_files(tmp_path: Path) -> None:
    kwargs, state = _tiny()
    path = save_th(tmp_path / "m.th", kwargs, state)
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"demucs.htdemucs\nHTDemucs" in data  # GLOBAL opcode: module, newline, name
    assert b"fractions\nFraction" in data


_LOAD_WITHOUT_DEMUCS = """
import importlib.abc, sys, torch
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "demucs" or name.startswith("demucs."):
            raise ImportError("demucs is blocked in this test")
sys.meta_path.insert(0, Block())
from stemsplit.weights.checkpoint import load_checkpoint
model = load_checkpoint(sys.argv[1]).build()
expected = torch.load(sys.argv[2], weights_only=True)
assert set(model.state_dict()) == set(expected)
assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())
assert not any(m == "demucs" or m.startswith("demucs.") for m in sys.modules)
print("ok", len(expected))
"""


@pytest.mark.parametrize("fmt", ["th", "safetensors"])
def test_round_trip_in_a_process_where_demucs_cannot_be_imported(tmp_path: Path, fmt: str) -> None:
    kwargs, state = _tiny()
    save = save_th if fmt == "th" else save_safetensors
    path = save(tmp_path / f"m.{fmt}", kwargs, state)
    torch.save(_fp16(state), tmp_path / "expected.pt")
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_DEMUCS, str(path), str(tmp_path / "expected.pt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", str(len(state))]


def test_numpy_scalars_in_metrics_are_tolerated(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    kwargs, state = _tiny()
    metrics = ({"nsdr": np.float64(8.8), "epoch": np.int64(3)}, {"sdr": np.float32(9.0)})
    path = save_th(tmp_path / "m.th", kwargs, state, extra={"metrics": metrics})
    assert load_checkpoint(path).config == config_from_kwargs(kwargs)


def test_six_stem_safetensors_loads(tmp_path: Path) -> None:
    kwargs, state = _tiny(sources=list(SIX), bottom_channels=0)
    loaded = load_checkpoint(save_safetensors(tmp_path / "six.safetensors", kwargs, state))
    assert loaded.config.sources == tuple(SIX)
    assert loaded.build()(torch.zeros(1, 2, 100)).shape == (1, 6, 2, 100)


# --- unsafe pickles ----------------------------------------------------------------------------


class _RunsACommand:
    """Pickles as a call of os.system, the classic malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("where", ["kwargs", "training_args", "metrics"])
def test_malicious_th_is_refused_and_nothing_runs(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "pwned"
    kwargs, state = _tiny()
    extra = {"training_args": {}, "metrics": {}}
    payload = _RunsACommand(marker)
    if where == "kwargs":
        kwargs = {**kwargs, "channels": payload}
    else:
        extra[where] = {"x": payload}
    path = save_th(tmp_path / "evil.th", kwargs, state, extra=extra)
    for read in (load_checkpoint, read_header):
        with pytest.raises(
            UnsafeCheckpointError, match=r"evil\.th was refused.*'(posix|nt|os)\.system'"
        ) as info:
            read(path)
        assert info.value.global_name.endswith(".system")
    assert not marker.exists()


class _OversizedView:
    """Pickles as a tensor view that reaches past the end of its (real, saved) storage."""

    def __init__(self, base: torch.Tensor, size: tuple[int, ...], offset: int) -> None:
        self.base, self.size, self.offset = base, size, offset

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        import collections
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TypedStorage is deprecated but is what torch.save pickles
            storage = self.base.storage()
        layout = (self.offset, self.size, (1,) * len(self.size), False, collections.OrderedDict())
        return (torch._utils._rebuild_tensor_v2, (storage, *layout))


@pytest.mark.parametrize(("size", "offset"), [((1000,), 2), ((7,), 2), ((-1,), 0)])
def test_a_tensor_view_outside_its_storage_is_a_checkpoint_error(
    tmp_path: Path, size: tuple[int, ...], offset: int
) -> None:
    kwargs, state = _tiny()
    view = _OversizedView(torch.zeros(8, dtype=torch.float16), size, offset)
    path = save_th(tmp_path / "crafted.th", kwargs, state, extra={"metrics": {"x": view}})
    with pytest.raises(
        CheckpointError, match=r"crafted\.th is truncated or corrupt.*(storage has 8|invalid)"
    ):
        load_checkpoint(path)


def test_builtins_eval_is_refused(tmp_path: Path) -> None:
    kwargs, state = _tiny()
    path = save_th(tmp_path / "evil.th", kwargs, state, extra={"metrics": _CallsEval()})
    with pytest.raises(UnsafeCheckpointError, match=r"__builtin__\.eval|builtins\.eval"):
        load_checkpoint(path)


def test_a_plain_torch_save_of_a_state_dict_is_not_a_model_package(tmp_path: Path) -> None:
    _, state = _tiny()
    torch.save(state, tmp_path / "weights.th")
    with pytest.raises(CheckpointError, match="not a demucs model package"):
        load_checkpoint(tmp_path / "weights.th")


# --- broken files ------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.th").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.th is empty \(0 bytes\)"):
        load_checkpoint(tmp_path / "empty.th")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "nope.th")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.97])
@pytest.mark.parametrize("fmt", ["th", "safetensors"])
def test_truncated_file(tmp_path: Path, fraction: float, fmt: str) -> None:
    kwargs, state = _tiny()
    save = save_th if fmt == "th" else save_safetensors
    data = save(tmp_path / f"m.{fmt}", kwargs, state).read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match=r"cut\.(th|safetensors)") as info:
        load_checkpoint(cut)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content", [b"hello, this is a text file\n", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, b"PK\x03\x04garbage"]
)
def test_not_a_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "thing.th"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"thing\.th") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_zip_that_is_not_a_torch_archive(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "a.th", "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "a.th")


# --- strict arguments and tensors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("t_sparse_self_attn", True),
        ("t_sparse_cross_attn", True),
        ("cac", False),
        ("t_emb", "scaled"),
        ("t_emb", "cape"),
        ("wiener_iters", 1),
        ("use_train_segment", False),
        ("channels_time", 32),
        ("multi_freqs", [0.5]),
        ("norm_starts", 1),
        ("t_sin_random_shift", 3),
        ("some_future_option", 1),
    ],
)
def test_unsupported_arguments_are_named(tmp_path: Path, field: str, value: object) -> None:
    kwargs, state = _tiny()
    path = save_th(tmp_path / "m.th", {**kwargs, field: value}, state)
    with pytest.raises(UnsupportedCheckpointError, match=rf"{field}={value!r}".replace("[", r"\[")) as info:
        load_checkpoint(path)
    assert (info.value.field, info.value.value) == (field, value)


def test_other_model_classes_are_unsupported(tmp_path: Path) -> None:
    kwargs, state = _tiny()
    path = save_safetensors(tmp_path / "h.safetensors", kwargs, state, klass="demucs.demucs.Demucs")
    with pytest.raises(UnsupportedCheckpointError, match=r"klass='demucs\.demucs\.Demucs'"):
        load_checkpoint(path)


def test_training_only_arguments_are_ignored() -> None:
    base = config_from_kwargs(tiny_kwargs())
    assert (
        config_from_kwargs(tiny_kwargs(t_dropout=0.3, dconv_init=0.5, t_weight_decay=0.05, rescale=0)) == base
    )


def test_float_segment_keeps_the_reference_sample_count() -> None:
    assert config_from_kwargs(tiny_kwargs(segment=7.8)).segment_samples == int(7.8 * 44100)


def test_missing_tensor_is_named_with_its_shape(tmp_path: Path) -> None:
    kwargs, state = _tiny()
    del state["crosstransformer.layers.1.norm3.weight"]
    with pytest.raises(
        StateDictMismatchError, match=r"crosstransformer\.layers\.1\.norm3\.weight \(32,\) is missing"
    ):
        load_checkpoint(save_th(tmp_path / "m.th", kwargs, state)).build()


def test_unexpected_tensor_is_named(tmp_path: Path) -> None:
    kwargs, state = _tiny()
    state["encoder.0.norm1.weight"] = torch.ones(8)
    with pytest.raises(StateDictMismatchError, match=r"unexpected tensor encoder\.0\.norm1\.weight") as info:
        load_checkpoint(save_th(tmp_path / "m.th", kwargs, state)).build()
    assert info.value.key == "encoder.0.norm1.weight"
    assert (info.value.expected, info.value.actual) == (None, (8,))


def test_mis_shaped_tensor_names_both_shapes(tmp_path: Path) -> None:
    kwargs, state = _tiny()
    state["freq_emb.embedding.weight"] = torch.zeros(63, 8)
    with pytest.raises(
        StateDictMismatchError, match=r"freq_emb\.embedding\.weight has shape \(63, 8\).*needs \(64, 8\)"
    ):
        load_checkpoint(save_th(tmp_path / "m.th", kwargs, state)).build()


def test_quantized_safetensors_is_unsupported(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "q.safetensors"
    save_file(
        {"x": torch.zeros(2)},
        str(path),
        {"klass": "demucs.htdemucs.HTDemucs", "args": "[]", "kwargs": "{}", "structure": "{}"},
    )
    with pytest.raises(UnsupportedCheckpointError, match="quantized"):
        load_checkpoint(path)


def test_safetensors_without_metadata_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="no 'klass' in its metadata"):
        load_checkpoint(path)


# --- headers only (for --dry-run) --------------------------------------------------------------


def _damage_tensors(path: Path) -> Path:
    return damage_tensors(path, path.with_name(f"damaged{path.suffix}"))


@pytest.mark.parametrize("fmt", ["th", "safetensors"])
def test_read_header_gives_the_config_without_reading_any_tensor(tmp_path: Path, fmt: str) -> None:
    kwargs, state = _tiny()
    save = save_th if fmt == "th" else save_safetensors
    path = save(tmp_path / f"m.{fmt}", kwargs, state)

    header = read_header(path)

    assert header.config == load_checkpoint(path).config and header.path == path
    damaged = _damage_tensors(path)
    with pytest.raises(CheckpointError):
        load_checkpoint(damaged)  # control: the damage is real
    assert read_header(damaged).config == header.config  # yet the header reader never looked


@pytest.mark.parametrize("drop_bytes", [1, 2])
def test_a_tensor_entry_cut_short_is_a_checkpoint_error(tmp_path: Path, drop_bytes: int) -> None:
    """One byte short leaves a length that is no whole number of fp16 values (torch.frombuffer would
    raise a bare ValueError); two bytes short is one value too few."""
    kwargs, state = _tiny()
    path = save_th(tmp_path / "m.th", kwargs, state)
    damaged = damage_tensors(path, tmp_path / "short.th", drop_bytes=drop_bytes)
    with pytest.raises(CheckpointError, match=r"short\.th is truncated or corrupt .*bytes, expected"):
        load_checkpoint(damaged)


@pytest.mark.parametrize(
    "content", [b"", b"hello, this is a text file\n", b"PK\x03\x04garbage", b'\x10\0\0\0\0\0\0\0{"__meta']
)
def test_read_header_still_refuses_what_is_no_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "thing.th"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"thing\.th"):
        read_header(path)


def test_read_header_checks_the_model_arguments(tmp_path: Path) -> None:
    kwargs, state = _tiny()
    path = save_th(tmp_path / "m.th", {**kwargs, "wiener_iters": 1}, state)
    with pytest.raises(UnsupportedCheckpointError, match="wiener_iters"):
        read_header(path)


def test_read_bag_header_reads_members_like_load_bag(tmp_path: Path) -> None:
    save_th(tmp_path / "aaaa0001-12345678.th", *_tiny())
    save_safetensors(tmp_path / "bbbb0002.safetensors", *_tiny())
    _damage_tensors(tmp_path / "bbbb0002.safetensors").replace(tmp_path / "bbbb0002.safetensors")
    (tmp_path / "bag.yaml").write_text("models: ['aaaa0001', 'bbbb0002']\n")

    headers, segment = read_bag_header(tmp_path / "bag.yaml")

    assert segment is None
    assert [h.path.name for h in headers] == ["aaaa0001-12345678.th", "bbbb0002.safetensors"]
    assert headers[0].config == headers[1].config
    with pytest.raises(CheckpointError):
        load_bag(tmp_path / "bag.yaml")
    (tmp_path / "bad.yaml").write_text("models: ['aaaa0001', 'ffff9999']\n")
    with pytest.raises(CheckpointError, match="model ffff9999 not found"):
        read_bag_header(tmp_path / "bad.yaml")


# --- bags --------------------------------------------------------------------------------------


def test_bag_resolves_members_beside_the_yaml(tmp_path: Path) -> None:
    members = []
    for i, sig in enumerate(["aaaa0001", "bbbb0002", "cccc0003", "dddd0004"]):
        kwargs, state = _tiny()
        if i % 2:
            save_th(tmp_path / f"{sig}-0badc0de.th", kwargs, state)
        else:
            save_safetensors(tmp_path / f"{sig}.safetensors", kwargs, state)
        members.append(sig)
    identity = [[1.0 if r == c else 0.0 for c in range(4)] for r in range(4)]
    (tmp_path / "ft.yaml").write_text(f"models: {members}\nweights: {identity}\n")
    bag = load_bag(tmp_path / "ft.yaml")
    assert [m.path.name for m in bag.models if m.path] == [
        "aaaa0001.safetensors", "bbbb0002-0badc0de.th", "cccc0003.safetensors", "dddd0004-0badc0de.th"
    ]  # fmt: skip
    assert bag.weights == tuple(tuple(row) for row in identity)
    assert bag.segment is None and bag.sources == ("drums", "bass", "other", "vocals")


def test_bag_defaults_to_unit_weights_and_reads_segment(tmp_path: Path) -> None:
    save_th(tmp_path / "aaaa0001-12345678.th", *_tiny())
    (tmp_path / "one.yaml").write_text("models: ['aaaa0001']\nsegment: 44\n")
    bag = load_bag(tmp_path / "one.yaml")
    assert bag.weights == ((1.0, 1.0, 1.0, 1.0),) and bag.segment == 44


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("models: ['aaaa0001', 'ffff9999']\n", "model ffff9999 not found"),
        ("models: []\n", "needs a non-empty 'models' list"),
        ("just text\n", "needs a non-empty 'models' list"),
        ("models: ['aaaa0001']\nweights: [[1, 1]]\n", "one row of 4 numbers per model"),
        ("models: [\n", "cannot read bag file"),
        ("models: ['aaaa0001']\nweights: [['a', 'b', 'c', 'd']]\n", "must be numbers"),
        ("models: ['aaaa0001']\nsegment: soon\n", "positive number of seconds"),
    ],
)
def test_bad_bags(tmp_path: Path, yaml_text: str, message: str) -> None:
    save_th(tmp_path / "aaaa0001-12345678.th", *_tiny())
    (tmp_path / "bag.yaml").write_text(yaml_text)
    with pytest.raises(CheckpointError, match=message):
        load_bag(tmp_path / "bag.yaml")


def test_bag_members_must_agree_on_sources(tmp_path: Path) -> None:
    save_th(tmp_path / "aaaa0001-12345678.th", *_tiny())
    save_th(tmp_path / "bbbb0002-12345678.th", *_tiny(sources=list(SIX), bottom_channels=0))
    (tmp_path / "mixed.yaml").write_text("models: ['aaaa0001', 'bbbb0002']\n")
    with pytest.raises(CheckpointError, match="separates"):
        load_bag(tmp_path / "mixed.yaml")


def test_pickle_protocol_is_what_the_loader_expects(tmp_path: Path) -> None:
    """Guard against torch changing its archive layout: the test writer's output must be a zip with data.pkl."""
    path = save_th(tmp_path / "m.th", *_tiny())
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    assert any(n.endswith("/data.pkl") for n in names)
    assert pickle.HIGHEST_PROTOCOL >= 2


# --- Hybrid Demucs (hdemucs_mmi) ---------------------------------------------------------------------

HD = "demucs.hdemucs.HDemucs"


def _tiny_hybrid(**overrides: object) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    from checkpoints import tiny_hdemucs_kwargs
    from stemsplit.model import HDemucs

    kwargs = tiny_hdemucs_kwargs(**overrides)
    return kwargs, random_state(HDemucs(config_from_kwargs(kwargs, klass=HD)))  # type: ignore[arg-type]


def _save_hybrid(path: Path, kwargs: dict[str, object], state: dict[str, torch.Tensor]) -> Path:
    if path.suffix == ".th":
        return save_th(path, kwargs, state, qualified=HD)
    return save_safetensors(path, kwargs, state, klass=HD)


@pytest.mark.parametrize("fmt", ["th", "safetensors"])
def test_hybrid_demucs_round_trip_in_both_formats(tmp_path: Path, fmt: str) -> None:
    from stemsplit.model import HDemucs, HDemucsConfig

    kwargs, state = _tiny_hybrid()
    path = _save_hybrid(tmp_path / f"m.{fmt}", kwargs, state)
    if fmt == "th":
        with zipfile.ZipFile(path) as archive:
            data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
        assert b"demucs.hdemucs\nHDemucs" in data  # pickled by reference, like the official 75fc33f5 file
    loaded = load_checkpoint(path)
    assert isinstance(loaded.config, HDemucsConfig) and loaded.config.merge_layer == 3
    assert loaded.config.segment == Fraction(5, 2) and read_header(path).config == loaded.config
    model = loaded.build()
    assert isinstance(model, HDemucs) and not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, _fp16(state)[key]), key


def test_hdemucs_mmi_arguments_make_its_config() -> None:
    from checkpoints import hdemucs_kwargs
    from stemsplit.model import HDemucsConfig

    config = config_from_kwargs(hdemucs_kwargs(), klass=HD)
    assert config == HDemucsConfig(sources=("drums", "bass", "other", "vocals"), segment=Fraction(40))
    assert config.segment_samples == 1_764_000


@pytest.mark.parametrize(
    ("field", "value"), [("hybrid", False), ("hybrid_old", True), ("multi_freqs", [0.25]), ("cac", False)]
)
def test_hybrid_demucs_variants_we_do_not_implement_are_named(field: str, value: object) -> None:
    from checkpoints import hdemucs_kwargs

    with pytest.raises(UnsupportedCheckpointError, match=re.escape(f"{field}={value!r}")):
        config_from_kwargs(hdemucs_kwargs(**{field: value}), klass=HD)


@pytest.mark.parametrize("fmt", ["th", "safetensors"])
def test_a_mis_shaped_hybrid_demucs_file_is_refused_naming_the_key_and_both_shapes(
    tmp_path: Path, fmt: str
) -> None:
    kwargs, state = _tiny_hybrid()
    state["encoder.3.dconv.layers.1.3.lstm.weight_hh_l0"] = torch.zeros(32, 7)
    path = _save_hybrid(tmp_path / f"m.{fmt}", kwargs, state)
    with pytest.raises(StateDictMismatchError) as info:
        load_checkpoint(path).build()
    assert "encoder.3.dconv.layers.1.3.lstm.weight_hh_l0 has shape (32, 7) in the checkpoint but the model needs " \
        "(32, 8)" in str(info.value)  # fmt: skip
    assert (info.value.key, info.value.actual, info.value.expected) == (
        "encoder.3.dconv.layers.1.3.lstm.weight_hh_l0", (32, 7), (32, 8),
    )  # fmt: skip


def test_a_hybrid_demucs_bag_runs_on_its_segment(tmp_path: Path) -> None:
    """demucs 4.1.0 gives a bag's segment to its non-HT members (spec §3.4): hdemucs_mmi.yaml's 44 s."""
    from stemsplit.weights import loading

    _save_hybrid(tmp_path / "aaaa0001-12345678.th", *_tiny_hybrid())
    (tmp_path / "bag.yaml").write_text("models: ['aaaa0001']\nsegment: 3\n")
    info = loading.describe_model(str(tmp_path / "bag.yaml"))
    assert (
        info.max_segment == 3
        and loading.describe_model(str(tmp_path / "bag.yaml"), load=False).max_segment == 3
    )
    bag = loading.load_model(info)
    assert (bag.segment_samples, bag.fixed_window) == (3 * 44100, False)
    alone = loading.load_model(loading.describe_model(str(tmp_path / "aaaa0001-12345678.th")))
    assert (alone.segment_samples, alone.fixed_window) == (int(2.5 * 44100), False)  # its own segment


def test_a_bag_of_both_kinds_is_refused(tmp_path: Path) -> None:
    save_th(tmp_path / "aaaa0001-12345678.th", *_tiny())
    _save_hybrid(tmp_path / "bbbb0002-12345678.th", *_tiny_hybrid())
    (tmp_path / "mixed.yaml").write_text("models: ['aaaa0001', 'bbbb0002']\n")
    with pytest.raises(CheckpointError, match="different kinds of model"):
        load_bag(tmp_path / "mixed.yaml")
