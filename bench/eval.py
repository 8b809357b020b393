"""Cost of the eval grid against one encoding pass, and against re-encoding per pooling.

    python bench/eval.py --data-dir ../shared/data/chinese-sts                 # base size, full
    python bench/eval.py --data-dir D --layers 4 --hidden 256 --limit 400      # ~1-2 min on 2 cores

Measured, each as the median of ``--repeats`` runs, on a random-weight BERT of the given
shape (speed does not depend on the weights) with a character vocabulary of the data:

* ``one pass``: ``Encoder.encode_poolings(unique sentences, ['cls'])``, once per distinct
  max_seq_length (64, and 128 for PAWSX) over the distinct sentences of the tasks using it;
* ``simkit grid``: ``run_grid`` with 4 poolings × 3 transforms (none, whitening,
  whitening-k) on every task, from an empty cache: encoding, fingerprinting, whitening fits
  and scoring included;
* ``peer: re-encode``: what the reference scripts do, one run per pooling, each encoding
  sentence1 and sentence2 of every pair (duplicates included) and scoring ``none``.

The issue's target: simkit grid ≤ ~1.1 × one pass. The default (12 layers, hidden 768, all
pairs of the five valid splits: 68,867 distinct sentences, 65,290 at max_len 64 and 3,577 at
128) encodes ~69k sentences per pass and ~170k per pooling for the peer: hours on 2 CPU cores.
On a shared machine use ``--threads 1``: two torch threads competing with other jobs ran
3-5x slower than one here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import numpy as np
import torch
from simkit_eval.cache import EmbeddingCache
from simkit_eval.data import DEFAULT_MAX_SEQ_LENGTH, TASKS, load_task
from simkit_eval.grid import GRID_POOLINGS, GridConfig, ModelSpec, parse_transforms, run_grid
from simkit_eval.report import markdown_table
from simkit_eval.scoring import sts_scores

from simkit.encoder import Encoder
from simkit.models.checkpoint import ModelInfo
from simkit.models.factory import build_vocab, new_model


def interleaved(fns: dict, repeats: int) -> tuple[dict[str, float], dict[str, object]]:
    """Median seconds of each fn; runs are interleaved (a b c a b c ...) so that a slow spell
    on a shared machine hits every contender alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    outs: dict[str, object] = {}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, outs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--split", default="valid")
    ap.add_argument("--limit", type=int, default=None, help="first N pairs of each task")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--whitening-k", type=int, default=256, help="whitening-k column (at most --hidden)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-peer", action="store_true", help="skip the re-encode peer (the slowest part)")
    ap.add_argument("--overhead-only", action="store_true",
                    help="replace the model's forward pass by random vectors: times what the grid "
                         "adds to encoding (fingerprint, loading, whitening fits, scoring) at any size")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # truncation warnings: counted in the grid's manifest
    tasks = [t.strip() for t in args.tasks.split(",")]
    data = {t: load_task(args.data_dir, t, args.split).head(args.limit) for t in tasks}
    vocab = build_vocab(s for d in data.values() for s in (*d.sentences1, *d.sentences2))
    model, tok = new_model("bert", vocab, seed=0, hidden_size=args.hidden, num_layers=args.layers,
                           max_position=512)
    enc = Encoder.from_model(model, tok, ModelInfo("bert", pooling="cls", max_seq_length=64,
                                                   source=f"random-bert-L{args.layers}-H{args.hidden}"))
    if args.overhead_only:
        rng = np.random.default_rng(0)

        def fake_encode(sentences, poolings, **kw):  # same shapes and dtype as the real thing
            return {p: rng.standard_normal((len(sentences), args.hidden), dtype=np.float32) for p in poolings}

        enc.encode_poolings = fake_encode
        enc.last_encode_info_ = {"truncated": 0}
        args.no_peer = True
    by_len: dict[int, list[str]] = {}
    for t, d in data.items():
        by_len.setdefault(DEFAULT_MAX_SEQ_LENGTH[t], []).extend([*d.sentences1, *d.sentences2])
    unique = {n: list(dict.fromkeys(s)) for n, s in by_len.items()}
    n_unique = sum(len(u) for u in unique.values())
    n_pairs = sum(len(d) for d in data.values())
    print(f"model: random BERT {args.layers} layers, hidden {args.hidden}, vocab {len(vocab)}; "
          f"torch threads {torch.get_num_threads()}", file=sys.stderr)
    print(f"data: {', '.join(f'{t} {len(d)}' for t, d in data.items())} pairs ({args.split}); "
          f"{n_unique} distinct sentences per max_len", file=sys.stderr)

    def one_pass():
        for n, texts in unique.items():
            enc.encode_poolings(texts, ["cls"], batch_size=args.batch_size, max_seq_length=n,
                                show_progress_bar=False)

    cfg = GridConfig(tasks=tasks, splits=[args.split], poolings=GRID_POOLINGS, limit=args.limit,
                     transforms=parse_transforms(f"0,full,{min(args.whitening_k, args.hidden)}"), batch_size=args.batch_size,
                     show_progress_bar=False)

    def grid():
        return run_grid([ModelSpec(enc.info.source, enc)], args.data_dir, cfg, EmbeddingCache(None))

    def peer():
        scores = []
        for p in GRID_POOLINGS:
            for t, d in data.items():
                n = DEFAULT_MAX_SEQ_LENGTH[t]
                a = enc.encode_poolings(d.sentences1, [p], batch_size=args.batch_size, max_seq_length=n,
                                        show_progress_bar=False)[p]
                b = enc.encode_poolings(d.sentences2, [p], batch_size=args.batch_size, max_seq_length=n,
                                        show_progress_bar=False)[p]
                scores.append(sts_scores(a, b, d.labels, distances=False)["main_score"])
        return scores

    enc.encode_poolings(next(iter(unique.values()))[:64], ["cls"], show_progress_bar=False)  # warm-up: thread pool, allocator
    fns = {"pass": one_pass, "grid": grid, **({} if args.no_peer else {"peer": peer})}
    t, out = interleaved(fns, args.repeats)
    run = out["grid"]
    rows = [("one pass (cls) over the distinct sentences", t["pass"], n_unique),
            (f"simkit grid: 4 poolings x 3 transforms, {len(tasks)} tasks", t["grid"], run.cache["encoded"])]
    if not args.no_peer:
        rows.append(("peer: re-encode pairs per pooling (reference scripts)", t["peer"],
                     len(GRID_POOLINGS) * 2 * n_pairs))
        none = [c.scores["main_score"] for c in run.cells if c.transform == "none"]
        # same vectors up to batch composition: the peer's 'none' scores must agree
        assert np.allclose(sorted(none), sorted(out["peer"]), atol=1e-3), (none, out["peer"])
    floored = sum("rank-deficient" in n for n in run.notes)
    if floored:  # a random model's LayerNorm (gain 1, bias 0) leaves a null direction
        print(f"note: {floored} whitening fits floored rank-deficient directions (eps)", file=sys.stderr)
    for note in (n for n in run.notes if "rank-deficient" not in n):
        print(f"note: {note}", file=sys.stderr)
    print(f"\n| run (median of {args.repeats}) | seconds | sentences encoded | x one pass |")
    print("|---|---:|---:|---:|")
    for name, sec, n in rows:
        print(f"| {name} | {sec:.2f} | {n} | {sec / t['pass']:.3f} |")
    print()
    print(markdown_table(run))


if __name__ == "__main__":
    main()
