"""The ray engine: Ray Data runs the shards on an actor pool, one pipeline per worker.

The job's shard plan (:mod:`simkit.engines.shards`) becomes a Ray dataset of shard tasks, one
row a shard; ``map_batches`` sends them one at a time to a pool of ``num_workers`` actors,
each of which loads the job's pipeline once (from the staging directory, so the workers run
the very pipeline the driver recorded, held to its weights fingerprint), reads its shard's
records with simkit's own readers (the same ids, texts and row order as the local engine),
encodes them and writes the shard. Ray retries a shard whose worker died; the driver only
collects the small shard records.

On a cluster, the inputs, the model directory and the output's parent must be on a file
system every node sees at the same path (NFS, a mounted bucket); see the README.
"""

from __future__ import annotations

import numpy as np

from .shards import Job, ShardTask, encode_shard, load_stage_pipeline


class ShardWorker:
    """A Ray Data actor: the pipeline loaded once, then one shard per call."""

    def __init__(self, stage: str, options: dict, batch_size: int, dtype: str, num_threads: int | None):
        self.stage, self.options, self.batch_size = stage, options, batch_size
        self.pipeline = load_stage_pipeline(stage, dtype=dtype, num_threads=num_threads)
        self.pipeline.encoder  # noqa: B018 -- load the model now, not inside the first shard

    def __call__(self, batch: dict) -> dict:
        names, counts = [], []
        for i in range(len(batch["name"])):
            task = ShardTask(name=str(batch["name"][i]), input=int(batch["input"][i]), path=str(batch["path"][i]),
                             format=str(batch["format"][i]), start=int(batch["start"][i]),
                             stop=int(batch["stop"][i]), input_sha256=str(batch["input_sha256"][i]))
            rec = encode_shard(self.stage, task, self.pipeline, batch_size=self.batch_size, options=self.options)
            names.append(rec["name"])
            counts.append(rec["count"])
        return {"name": np.array(names), "count": np.array(counts, dtype=np.int64)}


def run(job: Job, todo: list[ShardTask], *, batch_size: int = 32, address: str | None = None,
        num_workers: int | None = None, num_cpus_per_worker: float = 1, num_gpus_per_worker: float = 0,
        show_progress_bar: bool | None = None) -> dict:
    """Encode the shards ``todo`` on Ray (connecting to ``address``, or starting a local Ray
    when none is running and no address is given)."""
    import ray

    from ..embed import _bar
    from ..errors import InputError

    if not todo:
        return {"workers": 0}
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise InputError(f"cannot start or reach Ray at {address or 'a new local instance'}: {e}") from None
        started = True
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1))
        workers = num_workers or max(1, int(cpus // max(num_cpus_per_worker, 1e-9)))
        if workers < 1:
            raise InputError(f"num_workers={num_workers}; expected a positive integer")
        ds = ray.data.from_items([t.to_row() for t in todo], override_num_blocks=len(todo))
        threads = max(1, int(num_cpus_per_worker))
        out = ds.map_batches(
            ShardWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(workers, len(todo))),
            num_cpus=num_cpus_per_worker, num_gpus=num_gpus_per_worker or None,
            fn_constructor_kwargs={"stage": str(job.stage), "options": job.options, "batch_size": batch_size,
                                   "dtype": job.pipeline.dtype, "num_threads": threads})
        with _bar(sum(t.stop - t.start for t in todo), "encode", show_progress_bar, "sent") as bar:
            try:
                for batch in out.iter_batches(batch_size=1, batch_format="numpy"):
                    bar.update(int(batch["count"].sum()))
            except Exception as e:  # a worker's own error (bad input, other weights): say it plainly
                cause = _simkit_cause(e)
                if cause is None:
                    raise
                raise cause from None
    finally:
        if started:
            ray.shutdown()
    return {"workers": workers, "num_cpus_per_worker": num_cpus_per_worker,
            "num_gpus_per_worker": num_gpus_per_worker}


def _simkit_cause(e: BaseException) -> BaseException | None:
    """The simkit error a Ray exception wraps (Ray keeps it as ``cause`` / ``__cause__``)."""
    from ..errors import SimkitError

    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, SimkitError):
            return e
        seen.add(id(e))
        e = getattr(e, "cause", None) or e.__cause__
    return None
