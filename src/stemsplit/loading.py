"""From ``--model NAME|PATH`` to a runnable :class:`~stemsplit.inference.ModelBag`.

:func:`describe_model` answers "what would this model produce, and from which weights?" without reading
tensors (for ``--dry-run`` and for deciding whether finished tracks can be skipped); :func:`load_model`
then obtains the files (downloading registry models on first use) and builds the networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stemsplit.checkpoint import LoadedModel
from stemsplit.download import DownloadReporter, sha256_file
from stemsplit.errors import UnknownModelError
from stemsplit.inference import ModelBag

_CHECKPOINT_SUFFIXES = (".th", ".safetensors", ".pt", ".pth")
_BAG_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class ModelInfo:
    """A model as the user named it, before any network is built or any file downloaded.

    Attributes:
        name: registry name, or the file's stem for a local file (the ``{model}`` of output paths).
        sources: stem names it outputs.
        weights_id: identifies the exact weights: the registry's SHA-256 (prefixes) of its files, or the
            full SHA-256 of a local file (bag members joined with ``+``).
        path: the local checkpoint or bag file, or None for a registry model.
        bag_size: number of networks.
        members: a local file's checkpoints as read while describing it (reused by :func:`load_model`),
            with the bag weights; None for a registry model.
    """

    name: str
    sources: tuple[str, ...]
    weights_id: str
    path: Path | None
    bag_size: int
    members: tuple[tuple[LoadedModel, ...], tuple[tuple[float, ...], ...] | None] | None = field(
        default=None, repr=False, compare=False
    )


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(_CHECKPOINT_SUFFIXES + _BAG_SUFFIXES) or "/" in spec or "\\" in spec


def describe_model(spec: str) -> ModelInfo:
    """Name, stems and weights identity of a registry name or a local checkpoint / bag file.

    Raises:
        UnknownModelError: not a registry name and not an existing file.
        CheckpointError: the local file is not a usable checkpoint or bag.
    """
    from stemsplit import models

    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() in _BAG_SUFFIXES:
            from stemsplit.checkpoint import load_bag

            bag = load_bag(path)
            ids = "+".join(sha256_file(m.path) for m in bag.models if m.path is not None)
            return ModelInfo(path.stem, bag.sources, ids, path, len(bag.models), (bag.models, bag.weights))
        from stemsplit.checkpoint import load_checkpoint

        loaded = load_checkpoint(path)
        return ModelInfo(path.stem, loaded.config.sources, sha256_file(path), path, 1, ((loaded,), None))
    if _looks_like_path(spec):
        raise UnknownModelError(
            f"model file {spec} does not exist; pass a registry name ({', '.join(models.model_names())}) "
            "or an existing file",
            name=spec,
            known=models.model_names(),
        )
    entry = models.get_model_spec(spec)
    return ModelInfo(
        entry.name, entry.sources, "+".join(f.sha256 for f in entry.files), None, len(entry.files)
    )


def load_model(
    info: ModelInfo,
    *,
    offline: bool | None = None,
    reporter: DownloadReporter | None = None,
) -> ModelBag:
    """Obtain and build the networks of a described model.

    Args:
        info: from :func:`describe_model`.
        offline: forbid downloads (None: ``STEMSPLIT_OFFLINE``).
        reporter: download progress.

    Raises:
        ModelUnavailableError: a registry model could not be downloaded or is not cached offline.
        CheckpointError: a file is not a usable checkpoint.
    """
    from stemsplit import models
    from stemsplit.checkpoint import load_checkpoint

    loaded: list[LoadedModel]
    weights: tuple[tuple[float, ...], ...] | None
    if info.members is not None:  # a local file, already read by describe_model
        loaded, weights = list(info.members[0]), info.members[1]
    else:
        resolved = models.resolve_model(info.name, offline=offline, reporter=reporter)
        loaded = models.load_resolved(resolved, load_checkpoint)
        weights = resolved.weights
    networks = tuple(m.build() for m in loaded)
    first = networks[0]
    return ModelBag(
        models=networks,
        sources=first.sources,
        samplerate=first.samplerate,
        audio_channels=first.audio_channels,
        segment_samples=min(n.segment_samples for n in networks),
        weights=weights,
    )
