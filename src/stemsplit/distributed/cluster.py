"""Which Ray cluster a run uses, how it is joined, and how many workers it holds (``--ray``).

Nothing here imports Ray at module level: ``stemsplit --help`` and a plain install never load it, and
:func:`import_ray` turns its absence into a one-line error that says how to install it.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from stemsplit.errors import ClusterError, InvalidOptionError, first_line

INSTALL_HINT = 'pip install "stemsplit-cli[ray]" (from a checkout: pip install ".[ray]")'
"""How to get Ray with the version stemsplit is tested with (the release's name, and what works from a
checkout before it is released)."""

DEVICES = ("auto", "cpu", "cuda")
"""The ``--device`` values a Ray run accepts: each worker gets one GPU (or a share of one) or CPU slots."""

CONNECT_TIMEOUT_S = 5.0
"""How long the head's port may take to answer before the address counts as unreachable (Ray itself
would wait for it indefinitely)."""

_ADDRESS = re.compile(r"(ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")


@dataclass(frozen=True)
class ClusterOptions:
    """How a run uses a Ray cluster (the ``--ray*`` options).

    Attributes:
        address: ``local`` (a private cluster on this machine, for this run only), ``auto`` (the running
            cluster: ``RAY_ADDRESS``, or the one ``ray start`` started here) or a cluster's address
            (``10.0.0.5:6379``, ``ray://head:10001``).
        workers_per_gpu: on a cluster with GPUs, workers sharing each GPU (each loads its own model).
        cpus_per_worker: on a cluster without GPUs, CPU slots (and threads) per worker.
        max_in_flight: the most tracks given to workers and not yet finished (None: two per worker, so
            that a worker starts its next track as soon as it ends one).
        max_attempts: the most workers a track is given to when workers are lost while they have it.
    """

    address: str = "local"
    workers_per_gpu: int = 1
    cpus_per_worker: int = 1
    max_in_flight: int | None = None
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if self.address not in ("local", "auto") and not _ADDRESS.fullmatch(self.address):
            raise InvalidOptionError.bad_value(
                "--ray",
                self.address,
                "local, auto or a cluster address such as 10.0.0.5:6379 or ray://head:10001",
            )
        for option, value in (
            ("--ray-workers-per-gpu", self.workers_per_gpu),
            ("--ray-cpus-per-worker", self.cpus_per_worker),
            ("--ray-in-flight", self.max_in_flight),
        ):
            if value is not None and value < 1:
                raise InvalidOptionError.bad_value(option, value, "a whole number, 1 or more")
        if self.max_attempts < 1:
            raise InvalidOptionError(f"max_attempts must be 1 or more, got {self.max_attempts}")


def import_ray() -> ModuleType:
    """Ray, or the error saying how to install it.

    Raises:
        InvalidOptionError: Ray is not installed (``--ray``).
    """
    try:
        return importlib.import_module("ray")
    except ImportError:
        raise InvalidOptionError(
            f"--ray needs Ray, which is not installed; install it with: {INSTALL_HINT}", option="--ray"
        ) from None


def check_device(device: str) -> None:
    """Refuse a ``--device`` that a Ray run cannot honour (before any work).

    Raises:
        InvalidOptionError: not ``auto``, ``cpu`` or ``cuda``.
    """
    if device not in DEVICES:
        raise InvalidOptionError(
            f"--device {device} cannot be used with --ray: each worker gets one GPU (or a share of one, "
            "--ray-workers-per-gpu) or CPU slots; use --device auto, cuda or cpu",
            option="--device",
        )


@contextmanager
def connected(address: str) -> Iterator[ModuleType]:
    """Ray, connected to the cluster at ``address`` for the block (see :class:`ClusterOptions`).

    ``local`` starts a private cluster on this machine and stops it on leaving; otherwise the driver joins
    the cluster and leaves it on leaving. A process already connected to Ray (``ray.is_initialized()``, a
    library caller's own ``ray.init``) keeps its connection, whatever ``address`` says.

    Raises:
        InvalidOptionError: Ray is not installed.
        ClusterError: no cluster answers at the address, or Ray refused to start or join it.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    # Workers' own output stays in Ray's logs: their results and warnings come back as data.
    quiet: dict[str, Any] = {"log_to_driver": False}
    try:
        if address == "local":  # ours alone: its start-up notices (token authentication ...) are noise
            ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR, **quiet)
        else:
            _check_reachable(address if address != "auto" else os.environ.get("RAY_ADDRESS", "auto"))
            ray.init(address=address, logging_level=logging.WARNING, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as err:
        if isinstance(err, ClusterError):
            raise
        where = "start a local Ray cluster" if address == "local" else f"join the Ray cluster at {address}"
        raise ClusterError(f"could not {where}: {first_line(err)}") from err
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """Fail fast when nothing listens at ``host:port`` (Ray would retry for ever)."""
    match = _ADDRESS.fullmatch(address)
    if match is None:  # ``auto`` with no RAY_ADDRESS: Ray looks for a local cluster and says if there is none
        return
    host, port = match.group(2).strip("[]"), int(match.group(3))
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise ClusterError(
            f"no Ray cluster answers at {address} ({err.strerror or err}); start its head with "
            "`ray start --head` there, or use --ray local for a private cluster on this machine"
        ) from None


@dataclass(frozen=True)
class WorkerShape:
    """How many workers a run starts and what each holds.

    Attributes:
        count: the workers.
        device: each worker's ``--device`` (``cuda``: the GPU Ray gives it; ``cpu``).
        resources: the Ray resources each worker reserves (``num_gpus`` or ``num_cpus``).
        threads: each worker's CPU threads (None: torch's default, for GPU workers).
    """

    count: int
    device: str
    resources: dict[str, float]
    threads: int | None


def node_resources(ray: ModuleType) -> list[dict[str, float]]:
    """The resources of each live node of the cluster Ray is connected to."""
    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def worker_shape(nodes: Sequence[Mapping[str, float]], cluster: ClusterOptions, device: str) -> WorkerShape:
    """The workers for a cluster whose live nodes have ``nodes`` resources (:func:`node_resources`), for a
    ``--device``.

    GPUs are used when the cluster has any and ``device`` is ``auto`` or ``cuda``: ``workers_per_gpu``
    workers per GPU. Otherwise each node's CPU slots are shared out, ``cpus_per_worker`` per worker: a
    worker is never counted on slots spread over two nodes, where it could never start.

    Raises:
        ClusterError: ``--device cuda`` on a cluster without GPUs, or no node with the CPU slots one worker
            needs.
    """
    gpus = sum(int(node.get("GPU", 0)) for node in nodes)
    if gpus and device in ("auto", "cuda"):
        share = 1.0 / cluster.workers_per_gpu
        return WorkerShape(gpus * cluster.workers_per_gpu, "cuda", {"num_gpus": share}, None)
    if device == "cuda":
        raise ClusterError("--device cuda: the Ray cluster has no GPU; use --device auto or cpu")
    per_node = [int(node.get("CPU", 0)) for node in nodes]
    count = sum(cpus // cluster.cpus_per_worker for cpus in per_node)
    if count < 1:
        largest = max(per_node, default=0)
        raise ClusterError(
            f"no node of the Ray cluster has the {cluster.cpus_per_worker} CPU slots a worker needs "
            f"(--ray-cpus-per-worker; the largest has {largest}); use fewer, or add bigger nodes"
        )
    slots = float(cluster.cpus_per_worker)
    return WorkerShape(count, "cpu", {"num_cpus": slots}, cluster.cpus_per_worker)
