"""Separating a whole library on a Ray cluster: the same planner, the same writer, one model per worker.

::

    from stemsplit.distributed import ClusterOptions, separate
    from stemsplit.pipeline import SeparationOptions

    results = separate(["/nfs/music"], "/nfs/stems", SeparationOptions(format="flac"),
                       ClusterOptions(address="auto"))

Modules, one job each:

* :mod:`~stemsplit.distributed.cluster`: ``--ray local|auto|ADDRESS`` → a connected Ray, how many workers
  and what each reserves; Ray is imported only here and only when a Ray run starts.
* :mod:`~stemsplit.distributed.worker`: one worker (a Ray actor): the model loaded once, one device
  runner, tracks written by the local pipeline's own steps.
* :mod:`~stemsplit.distributed.driver`: planning (the local planner), handing out tracks, results,
  faults.

**Why plain actors with bounded in-flight work rather than Ray Data** (``map_batches`` over an
``ActorPoolStrategy``): a track is a large unit of work whose real output is files written by the worker,
not rows, and the driver must know about each track as it happens. With actors:

* each result (or failure) reaches the driver as it ends (``ray.wait``), so progress, the per-track
  report and the exit code are the local run's; Ray Data hands back rows of a dataset instead;
* a lost worker costs only its tracks, retried a bounded number of times with a check that a track its
  worker finished before dying is not written again; under Ray Data a task that keeps failing fails the
  whole dataset (``max_errored_blocks`` defaults to 0), and its retries are opaque to us;
* the worker's model load is a call of its own, so a node that cannot load the model is named in the
  error; under Ray Data it surfaces as an actor-pool start failure;
* ``pip install "stemsplit-cli[ray]"`` needs only Ray Core: Ray Data adds pyarrow and pandas, and its
  streaming executor's start-up and per-block bookkeeping, for no gain at a few tracks per worker.

``max_in_flight`` bounds the tracks handed out and not finished (by default two per worker: one running,
one queued behind it, so a worker never waits for the driver between tracks).

Every node must see the inputs, the output folder and a local model file at the same paths (NFS, or a
one-node cluster); a worker checks that a local model file is the very file the driver hashed.
"""

from __future__ import annotations

from stemsplit.distributed.cluster import ClusterOptions, import_ray
from stemsplit.distributed.driver import plan, run_batch, separate

__all__ = ["ClusterOptions", "import_ray", "plan", "run_batch", "separate"]
