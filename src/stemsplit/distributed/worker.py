"""One Ray worker: the model loaded once, one device runner, then tracks one at a time.

:class:`TrackWorker` is a plain class; :mod:`~stemsplit.distributed.driver` turns it into a Ray actor, so
this module imports Ray only to name its node. Each track goes through the local pipeline's own steps
(:func:`~stemsplit.pipeline.separate_track`: decode once, the shared runner, the atomic writer, the
sidecar), so its files are exactly those of a local run and a rerun, local or on Ray, skips it by the same
rules.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stemsplit.errors import InvalidOptionError, ModelUnavailableError, StemsplitError, StemsplitWarning
from stemsplit.inference import DeviceRunner, ModelBag, make_runner
from stemsplit.pipeline import SeparationOptions, StemPlan, TrackResult, compute_for, model_cache, run_plan
from stemsplit.pipeline.outputs import TrackOutputs
from stemsplit.pipeline.sidecar import Provenance, is_complete
from stemsplit.pipeline.track import separate_track
from stemsplit.pipeline.workers import failed_result
from stemsplit.weights.loading import ModelInfo, describe_model, load_model


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker of a run is given (pickled once per worker).

    Attributes:
        model: the model as the driver described it (a local file by its absolute path, not its tensors).
        options: the run's settings, with ``device`` the worker's (``cpu`` or ``cuda``) and ``jobs`` its
            CPU threads.
        plan: the stems computed and written.
        provenance: the sidecar record (its ``weights_id`` is checked against the file the worker reads).
        seconds: audio this worker is expected to separate (for the automatic compile decision).
        loader: builds ``model`` in place of :func:`~stemsplit.weights.loading.load_model` (a stand-in
            model in benchmarks); must be picklable.
    """

    model: ModelInfo
    options: SeparationOptions
    plan: StemPlan
    provenance: Provenance
    seconds: float | None = None
    loader: Callable[[ModelInfo], ModelBag] | None = None


@dataclass(frozen=True)
class Ready:
    """A worker with its model loaded: where it is and how it computes."""

    node: str
    device: str
    precision: str


@dataclass(frozen=True)
class LoadFailed:
    """A worker that could not load the model (``option``: a setting that fails everywhere)."""

    node: str
    message: str
    kind: Literal["model", "option"]


@dataclass
class Outcome:
    """One track's result from a worker; ``fatal`` when it failed on an option (the same for every track)."""

    result: TrackResult
    fatal: bool = False


def node_name() -> str:
    """This process's node, as ``host (ip)``."""
    import ray

    return f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"


class TrackWorker:
    """The body of a Ray actor: one model and one device runner for the worker's whole life.

    Args:
        spec: the run's model and settings.
    """

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.node = node_name()
        self._bag: ModelBag | None = None
        self._runner: DeviceRunner | None = None

    def load(self) -> Ready | LoadFailed:
        """Load the model and place it on the worker's device (once); any failure is returned, not raised,
        so that the driver can name this node."""
        spec = self.spec
        try:
            bag = spec.loader(spec.model) if spec.loader is not None else self._load_model()
            compute = compute_for(spec.options, seconds=spec.seconds)  # resolved on this node, once
            runner = make_runner(bag, run_plan(bag, spec.options, spec.plan.computed), compute)
            with runner:
                runner.prepare()  # a first OpenVINO export here, while the worker counts as loading
        except InvalidOptionError as err:
            return LoadFailed(self.node, str(err), "option")
        except Exception as err:
            return LoadFailed(self.node, _describe(err), "model")
        self._bag, self._runner = bag, runner
        return Ready(self.node, str(runner.device), str(runner.dtype).removeprefix("torch."))

    def _load_model(self) -> ModelBag:
        """The run's model, read on this node; a local file must be the very file the driver hashed."""
        spec = self.spec
        info = spec.model
        if info.path is not None:
            info = describe_model(str(info.path))
            if info.weights_id != spec.provenance.weights_id:
                raise ModelUnavailableError(
                    f"{info.path} on this node is not the file the driver read (its SHA-256 differs); "
                    "every node must see the same model file (shared storage)",
                    path=info.path,
                )
        return load_model(info, model_cache(spec.options))

    def separate(self, path: Path, outputs: TrackOutputs, duration_s: float | None, retry: bool) -> Outcome:
        """Separate one track and write its stems and sidecar, as a local run would.

        A track whose stems are already complete is not written again: one finished by a worker that was
        lost before it could answer (``retry``; ``done``), or by another run meanwhile (``skipped``). With
        ``--overwrite`` the driver removed the track's old sidecar before its first attempt, so only this
        run's stems can count as complete on a retry.

        Args:
            path, outputs: the input and its planned outputs (absolute paths, as every node sees them).
            duration_s: the input's duration as probed (for a result without separation).
            retry: an earlier attempt's worker was lost.
        """
        spec = self.spec
        assert self._bag is not None and self._runner is not None, "load() first"
        if (retry or not spec.options.overwrite) and is_complete(
            outputs.sidecar, spec.provenance, outputs.stems, path
        ):
            status: Literal["done", "skipped"] = "done" if retry else "skipped"
            found = TrackResult(path, status, outputs=dict(outputs.stems), duration_s=duration_s)
            found.node = self.node
            return Outcome(found)
        try:
            with warnings.catch_warnings():
                # Kept in the result's warnings; the driver shows them where the user is.
                warnings.simplefilter("ignore", StemsplitWarning)
                result = separate_track(
                    self._bag, path, outputs, spec.options, spec.plan,
                    runner=self._runner, provenance=spec.provenance,
                )  # fmt: skip
        except InvalidOptionError as err:
            return Outcome(failed_result(path, err), fatal=True)
        except Exception as err:  # this track fails; the worker goes on with the next
            result = failed_result(path, err)
        result.node = self.node
        return Outcome(result)


def _describe(err: BaseException) -> str:
    """An error in one line: ours say everything; others get their type."""
    if isinstance(err, StemsplitError):
        return str(err)
    return f"{type(err).__name__}: {err}"
