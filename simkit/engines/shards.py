"""What both engines share: the shard plan of a job, the staging directory, one shard's work,
and the final atomic store.

A job is a list of input files, a pipeline and a ``shard_size``. Shard ``k`` is records
``[start, stop)`` of one input (inputs in the order given, ``shard_size`` records each, the
last one of an input shorter), so the plan depends only on the inputs, never on the engine
or on how many workers ran it.

Shards are written, as they finish, into a staging directory beside the output,
``.OUT.partial/``: the vectors and ids first (each through a temporary name and a rename),
then ``part-NNNNN.json`` saying what the shard holds and the sha256 of its two files. A
shard is complete only when its ``.json`` exists and the checksums match, so re-running the
same job (same input checksums, pipeline and shard size: ``job.json``) skips complete
shards, whichever engine wrote them. When every shard is complete, the store is assembled
with :func:`~simkit.fsutil.atomic_dir` (hard links, or copies across file systems) and the
staging directory is removed: a killed job never leaves a complete-looking store.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from ..corpus import CorpusStats
from ..errors import InputError
from ..fsutil import atomic_dir, read_json, write_json
from ..pipeline import Pipeline
from ..store import FORMAT as STORE_FORMAT
from ..store import SHARDS_DIR, file_sha256, shard_files, write_ids, write_manifest
from .inputs import expand_inputs, input_format, read_records

log = logging.getLogger("simkit")

JOB_FORMAT = "simkit-encode-job"
ROW_ORDER = ("inputs in the order given (globs and directories expanded sorted by name); within an "
             "input, records in file order; shard k holds the rows that follow shard k-1")


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """Records ``[start, stop)`` of input ``input`` go to shard ``name``."""

    name: str
    input: int
    path: str
    format: str
    start: int
    stop: int
    input_sha256: str

    def to_row(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Job:
    """A planned encoding job (see the module docstring)."""

    output: Path
    stage: Path
    inputs: list[dict]
    tasks: list[ShardTask]
    pipeline: Pipeline
    shard_size: int
    options: dict  # text_field, id_field: what the records are

    def key(self) -> dict:
        """What must match for staged shards to be reused."""
        return {"format": JOB_FORMAT, "inputs": [{k: i[k] for k in ("path", "format", "sha256", "records")}
                                                 for i in self.inputs],
                "pipeline": self.pipeline.to_dict(), "shard_size": self.shard_size, **self.options}


def stage_dir(output: Path) -> Path:
    return output.parent / f".{output.name}.partial"


def plan_job(inputs, output: str | os.PathLike, pipeline: Pipeline, *, format: str = "auto",
             text_field: str | None = None, id_field: str | None = None, shard_size: int = 10000) -> Job:
    """Check and count every input (one streamed pass, with its sha256) and cut it into shards.

    The pipeline's model is loaded here, so its weights fingerprint and dimension are known
    and recorded, and every worker is held to them.
    """
    if shard_size < 1:
        raise InputError(f"shard_size={shard_size}; expected a positive integer")
    output = Path(output)
    files = expand_inputs(inputs)
    pipeline.encoder  # noqa: B018 -- pins model path, fingerprint and dimension
    described, tasks = [], []
    for i, f in enumerate(files):
        fmt = input_format(f, format)
        stats = CorpusStats()
        n = sum(1 for _ in read_records(f, fmt, text_field, id_field, stats))
        sha = file_sha256(f)
        described.append({"path": str(f.resolve()), "format": fmt, "sha256": sha, "records": n,
                          "empty": stats.empty, "blank_lines_skipped": stats.blank})
        for a in range(0, n, shard_size):
            tasks.append(ShardTask(f"part-{len(tasks):05d}", i, str(f.resolve()), fmt, a,
                                   min(a + shard_size, n), sha))
    return Job(output, stage_dir(output), described, tasks, pipeline, shard_size,
               {"text_field": text_field, "id_field": id_field})


def open_stage(job: Job) -> list[ShardTask]:
    """Create or reuse the staging directory; returns the shards still to do.

    Staged shards of another job (other inputs, pipeline or shard size) are discarded.
    """
    stage, key = job.stage, job.key()
    if stage.exists():
        old = read_json(stage / "job.json") if (stage / "job.json").is_file() else None
        if old != key:
            log.warning("%s: staged shards are from another job (other inputs, model or shard size); "
                        "starting over", stage)
            shutil.rmtree(stage)
    (stage / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    if not (stage / "pipeline").exists():
        tmp = stage / f".pipeline.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        job.pipeline.save_into(tmp)
        os.replace(tmp, stage / "pipeline")
    write_json(stage / "job.json", key)
    todo = [t for t in job.tasks if shard_record(stage, t) is None]
    if len(todo) < len(job.tasks):
        log.info("%s: resuming: %d of %d shards already complete", stage, len(job.tasks) - len(todo),
                 len(job.tasks))
    return todo


def shard_record(stage: Path, task: ShardTask) -> dict | None:
    """The record of a complete staged shard (its files present and matching), else None."""
    meta = stage / SHARDS_DIR / f"{task.name}.json"
    if not meta.is_file():
        return None
    try:
        rec = read_json(meta)
    except Exception:
        return None
    if not isinstance(rec, dict) or rec.get("task") != task.to_row():
        return None
    emb, ids = shard_files(stage, task.name)
    if not (emb.is_file() and ids.is_file()):
        return None
    if file_sha256(emb) != rec.get("sha256") or file_sha256(ids) != rec.get("ids_sha256"):
        return None
    return rec


def load_stage_pipeline(stage: str | os.PathLike, **runtime) -> Pipeline:
    """The job's pipeline as a worker loads it (``runtime``: ``dtype``, ``num_threads``)."""
    return Pipeline.load(Path(stage) / "pipeline", **runtime)


def encode_shard(stage: str | os.PathLike, task: ShardTask, pipeline: Pipeline, *, batch_size: int = 32,
                 records=None, options: dict | None = None, progress_bar=None) -> dict:
    """Encode one shard and stage it; returns its record (what ``part-NNNNN.json`` holds).

    ``records``: the shard's records when the caller already streams the input (the local
    engine); otherwise records ``[start, stop)`` are read from ``task.path``.
    """
    stage = Path(stage)
    options = options or {}
    if records is None:
        it = read_records(task.path, task.format, options.get("text_field"), options.get("id_field"))
        records = list(itertools.islice(it, task.start, task.stop))
    if len(records) != task.stop - task.start:
        raise InputError(f"{task.path} changed while it was being encoded (shard {task.name}: "
                         f"{len(records)} records, expected {task.stop - task.start})")
    for r in records:
        if "\n" in r.id or "\r" in r.id:
            raise InputError(f"{task.path}:{r.line}: id {r.id!r} contains a newline")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the count goes into the manifest instead
        X = pipeline.encode([r.text for r in records], batch_size=batch_size, progress_bar=progress_bar)
    truncated = int(pipeline.encoder.last_encode_info_["truncated"])
    emb, ids = shard_files(stage, task.name)
    suffix = f".tmp-{os.getpid()}"
    with open(emb.with_name(emb.name + suffix), "wb") as f:
        np.save(f, np.ascontiguousarray(X, dtype=np.float32), allow_pickle=False)
    os.replace(emb.with_name(emb.name + suffix), emb)
    write_ids(ids.with_name(ids.name + suffix), [r.id for r in records])
    os.replace(ids.with_name(ids.name + suffix), ids)
    rec = {"task": task.to_row(), "name": task.name, "count": len(records), "dim": int(X.shape[1]),
           "input": task.input, "start": task.start, "sha256": file_sha256(emb), "ids_sha256": file_sha256(ids),
           "truncated": truncated, "seconds": round(time.perf_counter() - t0, 3)}
    write_json(stage / SHARDS_DIR / f"{task.name}.json", rec)  # last: the shard is now complete
    return rec


def finish(job: Job, *, overwrite: bool = False, engine: str, seconds: float, extra: dict | None = None) -> dict:
    """Assemble the store from the staged shards (all must be complete) and remove the stage."""
    records = []
    for t in job.tasks:
        rec = shard_record(job.stage, t)
        if rec is None:
            raise InputError(f"{job.stage}: shard {t.name} is missing or damaged; re-run the job to redo it")
        records.append(rec)
    dim = job.pipeline.dim
    n = sum(r["count"] for r in records)
    shards = [{k: r[k] for k in ("name", "count", "input", "start", "sha256", "ids_sha256", "seconds")}
              for r in records]
    truncated = sum(r["truncated"] for r in records)
    with atomic_dir(job.output, overwrite=overwrite, kind=STORE_FORMAT) as tmp:
        (tmp / SHARDS_DIR).mkdir()
        for t in job.tasks:
            for src, dst in zip(shard_files(job.stage, t.name), shard_files(tmp, t.name)):
                try:
                    os.link(src, dst)
                except OSError:  # another file system, or no hard links
                    shutil.copyfile(src, dst)
        enc = job.pipeline.encoder
        summary = {**enc.model_card, "normalize_embeddings": job.pipeline.normalize_embeddings, "dim": dim,
                   "engine": engine, "inputs": job.inputs, "shard_size": job.shard_size, **job.options,
                   "row_order": ROW_ORDER, "truncated": truncated,
                   "empty": sum(i["empty"] for i in job.inputs),
                   "blank_lines_skipped": sum(i["blank_lines_skipped"] for i in job.inputs),
                   "seconds": round(seconds, 3), **(extra or {})}
        write_manifest(tmp, {**summary, "shards": shards}, (n, dim), job.pipeline)
    shutil.rmtree(job.stage, ignore_errors=True)
    return {"output": str(job.output), "count": n, **summary, "shards": len(shards),
            "pipeline": job.pipeline.to_dict(), "sentences_per_second": round(n / max(seconds, 1e-9), 1)}
