"""From ``--model NAME|PATH`` to a runnable :class:`~stemsplit.inference.ModelBag`.

:func:`describe_model` answers "what would this model produce, and from which weights?" before any
network is built or anything downloaded (a local file is read and hashed then, so that a bad file stops a
run before any work; ``load=False``, for ``--dry-run``, reads only its header); :func:`load_model` then
obtains the files (downloading registry models on first use) and builds the networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from stemsplit.errors import UnknownModelError
from stemsplit.inference import ModelBag
from stemsplit.weights import registry
from stemsplit.weights.cache import ModelCache
from stemsplit.weights.checkpoint import LoadedModel, window_seconds
from stemsplit.weights.download import sha256_file

_CHECKPOINT_SUFFIXES = (".th", ".safetensors", ".pt", ".pth")
_MODEL_FORMS = (
    "pass a registry name ({}) or a model file: a .th or .safetensors checkpoint, or a bag .yaml "
    "with its member files beside it"
)
_BAG_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class ModelMembers:
    """Where a described model's networks come from, kept so that :func:`load_model` looks nothing up again.

    Attributes:
        spec: the registry entry (its files, hashes, bag weights and segment), for a registry model.
        checkpoints: a local file's checkpoints as read while describing it (a bag's members in order).
        weights: a local bag's weights (models x sources; None: all 1).
        segment: a local bag's segment in seconds (None: its members' own).
    """

    spec: registry.ModelSpec | None = None
    checkpoints: tuple[LoadedModel, ...] | None = None
    weights: tuple[tuple[float, ...], ...] | None = None
    segment: Fraction | None = None


@dataclass(frozen=True)
class ModelInfo:
    """A model as the user named it, before any network is built or any file downloaded.

    Attributes:
        name: registry name, or the file's stem for a local file (the ``{model}`` of output paths).
        sources: stem names it outputs.
        weights_id: identifies the exact weights: the registry's SHA-256 (prefixes) of its files, or the
            full SHA-256 of a local file (bag members joined with ``+``); empty for a local file described
            with ``load=False`` (see :func:`weights_identity`).
        path: the local checkpoint or bag file, or None for a registry model.
        bag_size: number of networks.
        max_segment: the longest ``--segment`` in seconds (the window: the shortest member's segment, with
            a bag's applied as :func:`~stemsplit.weights.checkpoint.with_bag_segment` says), when known
            before loading: from the registry, or from a local file's checkpoints; None if unknown.
        members: what :func:`load_model` builds from: the registry entry, or a local file's checkpoints as
            read while describing it; None for a local file described with ``load=False``.
    """

    name: str
    sources: tuple[str, ...]
    weights_id: str
    path: Path | None
    bag_size: int
    max_segment: Fraction | None = None
    members: ModelMembers | None = field(default=None, repr=False, compare=False)


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(_CHECKPOINT_SUFFIXES + _BAG_SUFFIXES) or "/" in spec or "\\" in spec


def describe_model(spec: str, *, load: bool = True) -> ModelInfo:
    """Name, stems and weights identity of a registry name or a local checkpoint / bag file.

    Args:
        spec: a registry name or a path.
        load: read a local file's tensors (kept for :func:`load_model`) and hash it, which validates it
            fully. ``False`` (``--dry-run``) reads only the header: the format and the model arguments,
            no tensor data and no hash, so ``members`` is None and ``weights_id`` empty.

    Raises:
        UnknownModelError: not a registry name and not an existing file (or a folder); the message says
            what a model can be.
        CheckpointError: the local file is not a usable checkpoint or bag (with ``load=False``: its
            header is not).
    """
    path = Path(spec).expanduser()
    if path.is_file():
        if not load:
            return _describe_header(path)
        if path.suffix.lower() in _BAG_SUFFIXES:
            from stemsplit.weights.checkpoint import load_bag

            bag = load_bag(path)
            ids = "+".join(sha256_file(m.path) for m in bag.models if m.path is not None)
            window = window_seconds([m.config for m in bag.models], bag.segment)
            members = ModelMembers(checkpoints=bag.models, weights=bag.weights, segment=bag.segment)
            return ModelInfo(path.stem, bag.sources, ids, path, len(bag.models), window, members)
        from stemsplit.weights.checkpoint import load_checkpoint

        loaded = load_checkpoint(path)
        window = window_seconds([loaded.config])
        members = ModelMembers(checkpoints=(loaded,))
        return ModelInfo(path.stem, loaded.config.sources, sha256_file(path), path, 1, window, members)
    known = registry.model_names()
    if spec == registry.AUTO:  # a rule for batches, resolved per track by the pipeline
        raise UnknownModelError(
            f"model 'auto' picks a model per track of a batch (the stemsplit command); name one model here: "
            f"{', '.join(known)}",
            name=spec,
            known=known,
        )
    if path.is_dir():
        raise UnknownModelError(
            f"--model {spec}: is a folder, not a model; {_MODEL_FORMS.format(', '.join(known))}",
            name=spec,
            known=known,
        )
    if _looks_like_path(spec):
        raise UnknownModelError(
            f"model file {spec} does not exist; {_MODEL_FORMS.format(', '.join(known))}",
            name=spec,
            known=known,
        )
    try:
        entry = registry.get_model_spec(spec)
    except UnknownModelError as err:
        raise UnknownModelError(
            f"{err} --model also takes a model file: a .th or .safetensors checkpoint, or a bag .yaml.",
            name=err.name,
            known=err.known,
            suggestion=err.suggestion,
        ) from None
    ids = "+".join(f.sha256 for f in entry.files)
    return ModelInfo(
        entry.name, entry.sources, ids, None, len(entry.files), entry.segment, ModelMembers(spec=entry)
    )


def _describe_header(path: Path) -> ModelInfo:
    """A local checkpoint or bag described from its header(s) alone: no tensor data, no hash."""
    from stemsplit.weights.checkpoint import read_bag_header, read_header

    headers, segment = (
        read_bag_header(path) if path.suffix.lower() in _BAG_SUFFIXES else ((read_header(path),), None)
    )
    window = window_seconds([h.config for h in headers], segment)
    return ModelInfo(path.stem, headers[0].config.sources, "", path, len(headers), window)


def weights_identity(info: ModelInfo) -> str:
    """``info.weights_id``; for a local file described with ``load=False``, computed now by hashing it
    (and a bag's members), as :func:`describe_model` would have.

    Raises:
        CheckpointError: a bag's header no longer reads.
        OSError: a file can no longer be read.
    """
    if info.weights_id or info.path is None:
        return info.weights_id
    if info.path.suffix.lower() in _BAG_SUFFIXES:
        from stemsplit.weights.checkpoint import read_bag_header

        return "+".join(sha256_file(m.path) for m in read_bag_header(info.path)[0])
    return sha256_file(info.path)


def load_model(info: ModelInfo, cache: ModelCache | None = None) -> ModelBag:
    """Obtain and build the networks of a described model.

    Args:
        info: from :func:`describe_model`.
        cache: where registry models are cached and how they are downloaded (default
            :class:`~stemsplit.weights.cache.ModelCache`: the environment's cache, server and offline
            setting, no progress).

    Raises:
        ModelUnavailableError: a registry model could not be downloaded or is not cached offline.
        CheckpointError: a file is not a usable checkpoint.
    """
    from stemsplit.weights.checkpoint import load_checkpoint

    loaded: list[LoadedModel]
    weights: tuple[tuple[float, ...], ...] | None
    members = info.members
    if members is None:  # a local file described with load=False (or sent without its tensors): read it now
        members = describe_model(str(info.path)).members if info.path is not None else None
    if members is not None and members.checkpoints is not None:  # a local file, already read
        loaded, weights, segment = list(members.checkpoints), members.weights, members.segment
    else:
        cache = cache or ModelCache()
        resolved = cache.resolve(members.spec if members is not None and members.spec else info.name)
        loaded = cache.load(resolved, load_checkpoint)
        weights, segment = resolved.weights, resolved.spec.segment
    networks = tuple(m.build(segment) for m in loaded)
    first = networks[0]
    window = window_seconds([m.config for m in loaded], segment)
    return ModelBag(
        models=networks,
        sources=first.sources,
        samplerate=first.samplerate,
        audio_channels=first.audio_channels,
        segment_samples=int(window * first.samplerate),
        weights=weights,
        fixed_window=first.fixed_window,
    )
