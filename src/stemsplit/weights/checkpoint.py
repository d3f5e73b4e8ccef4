"""Read HT Demucs and Hybrid Demucs checkpoints safely and build the model from them (htdemucs-spec §3).

Two single-model formats and one bag format are understood:

* ``.th``, the official format: a PyTorch zip archive whose pickle holds ``{klass, args, kwargs, state,
  training_args, metrics}``. It is read with a restricted unpickler that resolves only the globals this
  format uses (tensor rebuilding, ``OrderedDict``, ``fractions.Fraction``, numpy scalars, the demucs class
  references, which map to our own markers). Any other global, ``os.system`` for example, stops the read
  with :class:`~stemsplit.errors.UnsafeCheckpointError` before anything is called. Neither ``torch.load``
  nor demucs is used.
* ``.safetensors``, the pickle-free export: tensors plus ``klass``, ``args`` and ``kwargs`` in the
  metadata (JSON, fractions as ``{"_type": "fraction", "numerator": n, "denominator": d}``).

In both, the class (``demucs.htdemucs.HTDemucs`` or ``demucs.hdemucs.HDemucs``, pickled by reference or
named in the metadata) picks the network: :class:`~stemsplit.model.HTDemucs` or :class:`~stemsplit.model.HDemucs`.
* ``.yaml`` bags: ``models`` (signatures), optional ``weights`` (one row of per-source weights per model)
  and optional ``segment``, resolved against ``<sig>-<hash>.th``, ``<sig>.th`` or ``<sig>.safetensors``
  beside the yaml.

Constructor arguments are checked strictly (:func:`config_from_kwargs`) and so are the tensors
(:meth:`LoadedModel.build`): every problem is a :class:`~stemsplit.errors.CheckpointError` with a
one-line message naming the file.

:func:`read_header` and :func:`read_bag_header` read only the constructor arguments (the ``.th``
pickle without its tensor data, the ``.safetensors`` JSON header), for a ``--dry-run`` that must stay
cheap: a file whose tensors are damaged passes them and fails :func:`load_checkpoint`.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from stemsplit.errors import (
    CheckpointError,
    StateDictMismatchError,
    UnsafeCheckpointError,
    UnsupportedCheckpointError,
)
from stemsplit.model import HDemucs, HDemucsConfig, HTDemucs, HTDemucsConfig, HybridConfig, HybridModel

# --- constructor arguments ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Schema:
    """How one reference class's constructor arguments map onto our config.

    Attributes:
        config: the config class built.
        fields: arguments that map one-to-one onto its fields.
        required: arguments we implement only at one value (the one every released model uses).
        ignored: arguments that only matter for training or for options rejected through ``required``.
    """

    config: type[HybridConfig]
    fields: tuple[str, ...]
    required: Mapping[str, object]
    ignored: frozenset[str]


_SHARED_FIELDS = (
    "sources", "audio_channels", "samplerate", "channels", "growth", "nfft", "depth", "freq_emb",
    "emb_scale", "kernel_size", "stride", "context", "context_enc", "dconv_mode", "dconv_depth",
    "dconv_comp",
)  # fmt: skip
_SHARED_REQUIRED = {
    "channels_time": None,
    "wiener_iters": 0,
    "end_iters": 0,
    "wiener_residual": False,
    "cac": True,
    "rewrite": True,
}
_SHARED_IGNORED = frozenset({"multi_freqs_depth", "emb_smooth", "dconv_init", "rescale"})

_SCHEMAS = {
    "HTDemucs": _Schema(
        HTDemucsConfig,
        (*_SHARED_FIELDS, "bottom_channels", "t_layers", "t_hidden_scale", "t_heads", "t_norm_in",
         "t_norm_out", "t_layer_scale", "t_gelu", "t_max_period", "t_weight_pos_embed", "t_cross_first"),
        {
            **_SHARED_REQUIRED,
            "use_train_segment": True,
            "t_emb": "sin",
            "t_norm_in_group": False,
            "t_group_norm": False,
            "t_norm_first": True,
            "t_sin_random_shift": 0,
            "t_sparse_self_attn": False,
            "t_sparse_cross_attn": False,
        },
        _SHARED_IGNORED | {
            "time_stride", "norm_groups", "t_dropout", "t_max_positions", "t_weight_decay", "t_lr",
            "t_cape_mean_normalize", "t_cape_augment", "t_cape_glob_loc_scale", "t_mask_type",
            "t_mask_random_seed", "t_sparse_attn_window", "t_global_window", "t_sparsity", "t_auto_sparsity",
        },
    ),
    "HDemucs": _Schema(
        HDemucsConfig,
        (*_SHARED_FIELDS, "time_stride", "norm_starts", "norm_groups", "dconv_attn", "dconv_lstm"),
        {**_SHARED_REQUIRED, "hybrid": True, "hybrid_old": False},
        _SHARED_IGNORED,
    ),
}  # fmt: skip

_MODELS: Mapping[type[HybridConfig], Callable[[Any], HybridModel]] = {
    HTDemucsConfig: HTDemucs,
    HDemucsConfig: HDemucs,
}


def _unsupported(path: Path | None, field: str, value: object, why: str) -> UnsupportedCheckpointError:
    where = f"{path}: " if path else ""
    return UnsupportedCheckpointError(
        f"{where}unsupported model argument {field}={value!r} ({why}); only HT Demucs checkpoints like "
        "htdemucs, htdemucs_ft and htdemucs_6s, and Hybrid Demucs ones like hdemucs_mmi, can be loaded",
        field=field,
        value=value,
        path=path,
    )


def _segment(value: object, samplerate: int, path: Path | None) -> Fraction:
    """The training segment as an exact fraction of seconds, with the reference's sample count."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        # The reference computes int(segment * samplerate) in float arithmetic; keep that sample count.
        return Fraction(int(value * samplerate), samplerate)
    raise _unsupported(path, "segment", value, "expected a positive number of seconds")


def _schema(klass: str, path: Path | None) -> _Schema:
    """The schema of a pickled or exported class name (``demucs.hdemucs.HDemucs`` …)."""
    schema = _SCHEMAS.get(klass.rsplit(".", 1)[-1])
    if schema is None:
        raise _unsupported(path, "klass", klass, "only HTDemucs and HDemucs models are implemented")
    return schema


def config_from_kwargs(
    kwargs: Mapping[str, Any],
    args: Sequence[Any] = (),
    *,
    path: Path | None = None,
    klass: str = "demucs.htdemucs.HTDemucs",
) -> HybridConfig:
    """Validate reference constructor arguments and turn them into a config.

    Args:
        kwargs: the checkpoint's ``kwargs``.
        args: the checkpoint's positional ``args`` (must be empty, as in every released file).
        path: the file they came from, for error messages.
        klass: the reference class they are for (its last dotted part decides: ``HTDemucs`` or ``HDemucs``).

    Returns:
        The model configuration: an :class:`HTDemucsConfig` or an :class:`HDemucsConfig`.

    Raises:
        UnsupportedCheckpointError: another class, an unknown argument, or a value selecting a variant we
            do not implement (sparse attention, non-CaC, another ``t_emb``…); the error names the field.
    """
    schema = _schema(klass, path)
    if args:
        raise _unsupported(path, "args", tuple(args), "positional constructor arguments")
    values: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name in schema.fields:
            values[name] = value
        elif name in schema.required:
            want = schema.required[name]
            if value != want or type(value) is not type(want):
                raise _unsupported(path, name, value, f"only {want!r} is implemented")
        elif name == "multi_freqs":
            if value:
                raise _unsupported(path, name, value, "frequency band splitting is not implemented")
        elif name == "norm_starts":  # HT Demucs only (a field of Hybrid Demucs)
            if value < kwargs.get("depth", 4):
                raise _unsupported(path, name, value, "GroupNorm inside encoder layers is not implemented")
        elif name not in schema.ignored and name != "segment":
            raise _unsupported(path, name, value, "unknown argument")
    if "sources" not in values:
        raise _unsupported(path, "sources", None, "the checkpoint does not name its stems")
    values["sources"] = tuple(str(s) for s in values["sources"])
    samplerate = values.get("samplerate", 44100)
    default_segment = schema.config(sources=values["sources"]).segment
    values["segment"] = _segment(kwargs.get("segment", default_segment), samplerate, path)
    if values.get("freq_emb", 0.2) <= 0:
        raise _unsupported(path, "freq_emb", values["freq_emb"], "a model without frequency embedding")
    try:
        return schema.config(**values)
    except (TypeError, ValueError) as err:
        raise _unsupported(path, "kwargs", dict(kwargs), str(err)) from err


# --- the loaded model --------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint read from disk: configuration plus tensors, not yet a module.

    Attributes:
        config: the architecture (its class says which network: HT Demucs or Hybrid Demucs).
        state: state_dict tensors as stored (float16 in the official files).
        path: the file it was read from.
    """

    config: HybridConfig
    state: Mapping[str, torch.Tensor]
    path: Path | None = None

    def build(self, bag_segment: Fraction | None = None) -> HybridModel:
        """Instantiate the model on the CPU in float32, load the tensors strictly, set eval mode.

        Args:
            bag_segment: the segment of the bag it is a member of, applied by :func:`with_bag_segment`.

        Raises:
            StateDictMismatchError: a missing, unexpected or mis-shaped tensor (the first one is named).
        """
        config = with_bag_segment(self.config, bag_segment)
        model = _MODELS[type(config)](config)
        check_state_dict(model.state_dict(), self.state, path=self.path)
        model.load_state_dict(dict(self.state), strict=True)  # float16 → float32 is exact
        return model.eval().requires_grad_(False)


def check_state_dict(
    expected: Mapping[str, torch.Tensor], actual: Mapping[str, torch.Tensor], *, path: Path | None = None
) -> None:
    """Raise on the first key that is missing, unexpected or of another shape (model order first).

    Raises:
        StateDictMismatchError: naming the key and both shapes.
    """
    where = f"{path}: " if path else ""
    for key, tensor in expected.items():
        want = tuple(tensor.shape)
        if key not in actual:
            raise StateDictMismatchError(
                f"{where}tensor {key} {want} is missing from the checkpoint; the file does not match its "
                "own model arguments",
                key=key, expected=want, actual=None, path=path,
            )  # fmt: skip
        got = tuple(actual[key].shape)
        if got != want:
            raise StateDictMismatchError(
                f"{where}tensor {key} has shape {got} in the checkpoint but the model needs {want}",
                key=key, expected=want, actual=got, path=path,
            )  # fmt: skip
    for key, tensor in actual.items():
        if key not in expected:
            raise StateDictMismatchError(
                f"{where}unexpected tensor {key} {tuple(tensor.shape)} in the checkpoint; the file does not "
                "match its own model arguments",
                key=key, expected=None, actual=tuple(tensor.shape), path=path,
            )  # fmt: skip


def load_checkpoint(path: Path | str) -> LoadedModel:
    """Read one model checkpoint (``.th`` or ``.safetensors``, told apart by content).

    Args:
        path: the file.

    Returns:
        Its configuration and tensors; call :meth:`LoadedModel.build` for the module.

    Raises:
        CheckpointError: missing, empty, truncated or non-checkpoint file (or a subclass: unsafe pickle,
            unsupported model, mismatching tensors).
    """
    path = Path(path)
    return _load_th(path) if _sniff(path) == "th" else _load_safetensors(path)


@dataclass(frozen=True)
class CheckpointHeader:
    """What a checkpoint's header says, read without its tensors (see :func:`read_header`).

    Attributes:
        config: the architecture, checked like :func:`load_checkpoint` checks it.
        path: the file.
    """

    config: HybridConfig
    path: Path


def read_header(path: Path | str) -> CheckpointHeader:
    """Read a checkpoint's format and model arguments only, without reading its tensor data.

    ``.th``: the pickle is unpickled (restricted as in :func:`load_checkpoint`) with every storage as an
    empty ``meta`` tensor, so no tensor byte is read; ``.safetensors``: only the JSON header. Cheap enough
    for ``--dry-run``; missing, mis-shaped or truncated tensors are found only by :func:`load_checkpoint`.

    Raises:
        CheckpointError: missing, empty or non-checkpoint file, unreadable header, unsafe pickle or
            unsupported model arguments.
    """
    path = Path(path)
    if _sniff(path) == "th":
        return CheckpointHeader(_th_config(_read_th_package(path, _HeaderUnpickler), path), path)
    return CheckpointHeader(_config_from_metadata(_safetensors_metadata(path), path), path)


def _sniff(path: Path) -> str:
    """``th`` or ``safetensors``, from the first bytes of the file."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except IsADirectoryError as err:
        raise CheckpointError(f"{path} is a folder, not a checkpoint file", path=path) from err
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}", path=path) from err
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes): download it again or pass another file", path=path)
    if head.startswith(b"PK"):
        return "th"
    if len(head) == 8 and int.from_bytes(head, "little") < _MAX_SAFETENSORS_HEADER:
        return "safetensors"
    raise CheckpointError(
        f"{path} is not a model checkpoint (neither a PyTorch .th archive nor .safetensors)", path=path
    )


_MAX_SAFETENSORS_HEADER = 100_000_000


# --- .safetensors --------------------------------------------------------------------------------


def _decode_fractions(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(int(value["numerator"]), int(value["denominator"]))
        return {k: _decode_fractions(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_fractions(v) for v in value]
    return value


def _load_safetensors(path: Path) -> LoadedModel:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            state = {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} is truncated or not a valid .safetensors file ({err})", path=path
        ) from err
    return LoadedModel(_config_from_metadata(metadata, path), state, path)


def _config_from_metadata(metadata: Mapping[str, str], path: Path) -> HybridConfig:
    """The model arguments stored in a ``.safetensors`` file's metadata, checked."""
    missing = [key for key in ("klass", "kwargs") if key not in metadata]
    if missing:
        raise CheckpointError(
            f"{path} has no '{missing[0]}' in its metadata: not a stemsplit/demucs model export", path=path
        )
    if "structure" in metadata:
        raise _unsupported(path, "structure", "…", "quantized (diffq) models are not implemented")
    _schema(metadata["klass"], path)
    try:
        args = _decode_fractions(json.loads(metadata.get("args", "[]")))
        kwargs = _decode_fractions(json.loads(metadata["kwargs"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path} has unreadable model arguments in its metadata ({err})", path=path
        ) from err
    return config_from_kwargs(kwargs, args, path=path, klass=metadata["klass"])


def _safetensors_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a ``.safetensors`` header (8-byte little-endian length, then JSON)."""
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            raw = f.read(size)
        if len(raw) != size:
            raise ValueError(f"the header is cut short at {len(raw)} of {size} bytes")
        header = json.loads(raw)
        metadata = header.get("__metadata__", {}) if isinstance(header, dict) else None
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise ValueError("malformed __metadata__")
    except (OSError, ValueError) as err:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(
            f"{path} is truncated or not a valid .safetensors file ({err})", path=path
        ) from err
    return metadata


# --- .th (restricted unpickling of the PyTorch zip format) -----------------------------------------


@dataclass(frozen=True)
class _ModelClass:
    """What a pickled ``demucs.*`` class reference turns into: its dotted name, nothing callable."""

    name: str


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


_STORAGE_DTYPES = {
    "HalfStorage": torch.float16, "FloatStorage": torch.float32, "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}  # fmt: skip

_DEMUCS_CLASSES = frozenset({"demucs.htdemucs.HTDemucs", "demucs.hdemucs.HDemucs", "demucs.demucs.Demucs"})


def _rebuild_tensor(
    storage: torch.Tensor, offset: int, size: Sequence[int], stride: Sequence[int], *_: object
) -> torch.Tensor:
    """Our own replacement for ``torch._utils._rebuild_tensor_v2``: a strided view of a storage.

    Raises:
        pickle.UnpicklingError: the view does not fit inside the storage (a damaged or crafted file).
    """
    shape, steps = tuple(size), tuple(stride)
    fields = (offset, *shape, *steps)
    if len(shape) != len(steps) or not all(isinstance(v, int) and v >= 0 for v in fields):
        raise pickle.UnpicklingError(f"invalid tensor layout: size {shape}, stride {steps}, offset {offset}")
    if 0 not in shape:
        end = offset + sum((n - 1) * step for n, step in zip(shape, steps, strict=True)) + 1
        if end > storage.numel():
            raise pickle.UnpicklingError(
                f"a tensor of size {shape} at offset {offset} needs {end} elements; its storage has "
                f"{storage.numel()}"
            )
    return storage.as_strided(shape, steps, offset)


def _rebuild_parameter(data: torch.Tensor, *_: object) -> torch.Tensor:
    return data


def _numpy_dtype(name: str, align: bool = False, copy: bool = True) -> np.dtype[Any]:
    dtype = np.dtype(name)
    if dtype.hasobject:
        raise pickle.UnpicklingError("numpy object dtypes are not allowed in a checkpoint")
    return dtype


def _numpy_scalar(dtype: np.dtype[Any], data: bytes = b"") -> Any:
    if dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError("numpy object scalars are not allowed in a checkpoint")
    return np.frombuffer(data, dtype=dtype)[0].item() if data else None


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    if encoding != "latin1":
        raise pickle.UnpicklingError(f"unexpected byte encoding {encoding!r}")
    return text.encode("latin1")


_SAFE_GLOBALS: dict[str, object] = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "collections.OrderedDict": OrderedDict,
    "fractions.Fraction": Fraction,
    "numpy.dtype": _numpy_dtype,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
    "_codecs.encode": _latin1_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals of the official checkpoint format."""

    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str, path: Path) -> None:
        super().__init__(file)
        self.archive = archive
        self.prefix = prefix
        self.path = path
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[full]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if full in _DEMUCS_CLASSES:
            return _ModelClass(full)
        raise UnsafeCheckpointError(
            f"{self.path} was refused: its pickle asks for '{full}', which model checkpoints never contain "
            "(nothing was executed); only load files from sources you trust",
            global_name=full,
            path=self.path,
        )

    @staticmethod
    def _storage_id(pid: Any) -> tuple[_StorageType, str, int]:
        """``(storage type, key, number of values)`` of a persistent id, checked."""
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
        if not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"unexpected storage size {numel!r}")
        return storage_type, str(key), numel

    def persistent_load(self, pid: Any) -> torch.Tensor:
        storage_type, key, numel = self._storage_id(pid)
        if key not in self.storages:
            data = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            itemsize = torch.empty(0, dtype=storage_type.dtype).element_size()
            if len(data) != numel * itemsize:
                raise pickle.UnpicklingError(
                    f"storage {key} holds {len(data)} bytes, expected {numel} values of {itemsize} bytes"
                )
            flat = (
                torch.frombuffer(data, dtype=storage_type.dtype)
                if data
                else torch.empty(0, dtype=storage_type.dtype)
            )
            self.storages[key] = flat
        return self.storages[key]


class _HeaderUnpickler(_RestrictedUnpickler):
    """The same restricted unpickler, but no tensor data is read: each storage is an empty ``meta``
    tensor of the right dtype and size (views of it are free, and nothing can compute with it)."""

    def persistent_load(self, pid: Any) -> torch.Tensor:
        storage_type, _key, numel = self._storage_id(pid)
        return torch.empty(numel, dtype=storage_type.dtype, device="meta")


def _read_th_package(path: Path, unpickler: type[_RestrictedUnpickler] = _RestrictedUnpickler) -> Any:
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise CheckpointError(f"{path} is a zip archive but not a PyTorch checkpoint", path=path)
            prefix = pickles[0][: -len("data.pkl")]
            byteorder = f"{prefix}byteorder"
            if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
                raise CheckpointError(f"{path} was saved on a big-endian machine; not supported", path=path)
            with archive.open(pickles[0]) as f:
                return unpickler(f, archive, prefix, path).load()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, KeyError, zlib_error(), pickle.UnpicklingError, OSError) as err:
        raise CheckpointError(
            f"{path} is truncated or corrupt ({type(err).__name__}: {err}); download it again", path=path
        ) from err


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


def _load_th(path: Path) -> LoadedModel:
    package = _read_th_package(path)
    return LoadedModel(_th_config(package, path), dict(package["state"]), path)


def _th_config(package: Any, path: Path) -> HybridConfig:
    """The checked model arguments of an unpickled ``.th`` package (whose ``state`` is checked too)."""
    if not isinstance(package, dict) or not {"klass", "kwargs", "state"} <= package.keys():
        raise CheckpointError(
            f"{path} is a PyTorch file but not a demucs model package (no klass/kwargs/state)", path=path
        )
    klass = package["klass"]
    if not isinstance(klass, _ModelClass):
        raise CheckpointError(f"{path} has an unexpected 'klass' entry", path=path)
    _schema(klass.name, path)
    state = package["state"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        if isinstance(state, Mapping) and "__quantized" in state:
            raise _unsupported(path, "state", "__quantized", "quantized (diffq) models are not implemented")
        raise CheckpointError(f"{path} has a 'state' entry that is not a dictionary of tensors", path=path)
    kwargs = package["kwargs"]
    if not isinstance(kwargs, Mapping):
        raise CheckpointError(f"{path} has a 'kwargs' entry that is not a dictionary", path=path)
    args = package.get("args", ())
    return config_from_kwargs(kwargs, args or (), path=path, klass=klass.name)


# --- bags --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedBag:
    """A bag of models whose per-source outputs are mixed with weights (htdemucs-spec §3.4).

    Attributes:
        models: the member checkpoints, in yaml order.
        weights: ``weights[m][s]``, the weight of model ``m`` for source ``s``.
        segment: the bag's segment in seconds, if the yaml sets one, applied to the members by
            :func:`with_bag_segment` (always to Hybrid Demucs, to HT Demucs when not longer than its own).
        path: the yaml file.
    """

    models: tuple[LoadedModel, ...]
    weights: tuple[tuple[float, ...], ...]
    segment: Fraction | None
    path: Path

    @property
    def sources(self) -> tuple[str, ...]:
        """Stem names shared by every member."""
        return self.models[0].config.sources


def with_bag_segment(config: HybridConfig, bag_segment: Fraction | None) -> HybridConfig:
    """A bag member's configuration with the bag's ``segment`` applied as demucs 4.1.0 applies it.

    A Hybrid Demucs member always takes it (its default window: ``hdemucs_mmi.yaml`` gives its 40-s model
    44 s). An HT Demucs member takes it only when it is not longer than its own training window, which it
    then replaces: the model pads each input to that shorter window. None of the released HT bags sets one.
    """
    if bag_segment is None or (isinstance(config, HTDemucsConfig) and bag_segment > config.segment):
        return config
    return dataclasses.replace(config, segment=bag_segment)


def window_seconds(configs: Sequence[HybridConfig], bag_segment: Fraction | None = None) -> Fraction:
    """The window, in seconds, that members with these configs run on together: the shortest member's
    segment, with the bag's applied by :func:`with_bag_segment`."""
    return min(with_bag_segment(c, bag_segment).segment for c in configs)


def _find_member(folder: Path, signature: str, yaml_path: Path) -> Path:
    candidates = sorted(folder.glob(f"{signature}-*.th")) + [
        p for p in (folder / f"{signature}.th", folder / f"{signature}.safetensors") if p.is_file()
    ]
    if not candidates:
        raise CheckpointError(
            f"{yaml_path}: model {signature} not found; put {signature}-<hash>.th or "
            f"{signature}.safetensors in {folder}",
            path=yaml_path,
        )
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise CheckpointError(
            f"{yaml_path}: several files for model {signature} ({names}); keep one", path=yaml_path
        )
    return candidates[0]


def load_bag(path: Path | str) -> LoadedBag:
    """Read a bag ``.yaml`` and the member checkpoints beside it.

    Raises:
        CheckpointError: malformed yaml, a member file missing, members that disagree on sources,
            samplerate or channels, or a weight matrix of the wrong shape.
    """
    path = Path(path)
    models, weights, segment = _read_bag(path, load_checkpoint)
    return LoadedBag(models=models, weights=weights, segment=segment, path=path)


def read_bag_header(path: Path | str) -> tuple[tuple[CheckpointHeader, ...], Fraction | None]:
    """The members of a bag ``.yaml``, each read with :func:`read_header` (no tensor data), in yaml order,
    and the bag's segment (None when the yaml sets none).

    Raises:
        CheckpointError: as :func:`load_bag`, except for problems only the tensors reveal.
    """
    models, _weights, segment = _read_bag(Path(path), read_header)
    return models, segment


_Member = TypeVar("_Member", LoadedModel, CheckpointHeader)


def _read_bag(
    path: Path, read: Callable[[Path], _Member]
) -> tuple[tuple[_Member, ...], tuple[tuple[float, ...], ...], Fraction | None]:
    """A bag's members (each read with ``read``), weight matrix and segment, all checked."""
    import yaml

    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise CheckpointError(f"cannot read bag file {path} ({err})", path=path) from err
    signatures = spec.get("models") if isinstance(spec, dict) else None
    if not isinstance(signatures, list) or not signatures or not all(isinstance(s, str) for s in signatures):
        raise CheckpointError(
            f"{path} is not a model bag: it needs a non-empty 'models' list of names", path=path
        )
    models = tuple(read(_find_member(path.parent, sig, path)) for sig in signatures)
    first = models[0].config
    for member in models[1:]:
        c = member.config
        if (c.sources, c.samplerate, c.audio_channels) != (
            first.sources,
            first.samplerate,
            first.audio_channels,
        ):
            raise CheckpointError(
                f"{path}: {member.path} separates {c.sources} at {c.samplerate} Hz, unlike {models[0].path}",
                path=path,
            )
        if type(c) is not type(first):  # their windows work differently (fixed, or any length)
            raise CheckpointError(
                f"{path}: {member.path} and {models[0].path} are different kinds of model (HT Demucs and "
                "Hybrid Demucs); a bag must hold one kind",
                path=path,
            )
    weights = spec.get("weights")
    if weights is None:
        weights = [[1.0] * len(first.sources) for _ in models]
    if (
        not isinstance(weights, list)
        or len(weights) != len(models)
        or not all(isinstance(row, list) and len(row) == len(first.sources) for row in weights)
    ):
        raise CheckpointError(
            f"{path}: 'weights' must have one row of {len(first.sources)} numbers per model", path=path
        )
    try:
        matrix = tuple(tuple(float(w) for w in row) for row in weights)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: 'weights' must be numbers ({err})", path=path) from err
    segment = spec.get("segment")
    if segment is None:
        return models, matrix, None
    if not isinstance(segment, (int, float)) or isinstance(segment, bool) or not segment > 0:
        raise CheckpointError(
            f"{path}: 'segment' must be a positive number of seconds, got {segment!r}", path=path
        )
    # The reference's window is int(samplerate * segment) in float arithmetic; keep that sample count.
    return models, matrix, Fraction(int(segment * first.samplerate), first.samplerate)
