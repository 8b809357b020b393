"""The local engine: this process encodes the shards one after another, streaming each input
once (no re-reading to find a shard's records)."""

from __future__ import annotations

import itertools

from ..embed import _bar
from .inputs import read_records
from .shards import Job, ShardTask, encode_shard


def run(job: Job, todo: list[ShardTask], *, batch_size: int = 32, show_progress_bar: bool | None = None) -> dict:
    """Encode the shards ``todo`` of ``job`` into its staging directory."""
    left = {t.name for t in todo}
    total = sum(t.stop - t.start for t in todo)
    with _bar(total, "encode", show_progress_bar, "sent") as bar:
        for i, _ in enumerate(job.inputs):
            tasks = [t for t in job.tasks if t.input == i]
            if not any(t.name in left for t in tasks):
                continue
            first = tasks[0]
            it = read_records(first.path, first.format, job.options.get("text_field"),
                              job.options.get("id_field"))
            for t in tasks:
                records = list(itertools.islice(it, t.stop - t.start))
                if t.name in left:
                    encode_shard(job.stage, t, job.pipeline, batch_size=batch_size, records=records,
                                 options=job.options, progress_bar=bar)
    return {"workers": 1}
