#!/usr/bin/env python3
"""Before a lease's long run: a few training steps of every objective, small, on the GPU.

Seconds, not minutes: if the trainer's GPU path is broken the lease stops here (exit 1)
instead of after its budget. It also counts the calls that made the host wait for the GPU
(torch.cuda.set_sync_debug_mode), so a lease's log says how many a tune step still has.

    python3 recipes/cuda-check.py                 # on the lent machine, before v3-lease.sh
    python3 recipes/cuda-check.py --device cpu    # the same steps here (no wait counting)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from simkit.models.checkpoint import ModelInfo
from simkit.models.factory import build_vocab, new_model
from simkit.train.config import TrainConfig
from simkit.train.data import LabelledPair
from simkit.train.trainer import Trainer

POSITIVES = [("花呗怎么还款", "怎么还花呗"), ("借呗可以提前还款吗", "借呗能提前还吗"),
             ("明天会下雨吗", "明天下雨吗"), ("孩子发烧了应该怎么办", "小孩发烧怎么办")]
LABELLED = [LabelledPair(a, b, y, source=s) for a, b, y, s in (
    ("花呗怎么还款", "怎么还花呗", 1.0, 0), ("花呗怎么还款", "明天会下雨吗", 0.0, 0),
    ("电脑开不了机怎么办", "电脑无法开机", 5.0, 1), ("孩子发烧了应该怎么办", "电脑无法开机", 1.0, 1))]
TRIPLES = [("一个男人在弹吉他", "有人在演奏乐器", "这个男人在睡觉"),
           ("两只狗在草地上奔跑", "动物在户外", "狗在家里睡觉"),
           ("孩子们在踢足球", "孩子们在运动", "孩子们在看书")]
SENTENCES = [t for pair in POSITIVES for t in pair] + [t for tri in TRIPLES for t in tri]


def steps(device: str, objective: str, n: int) -> tuple[float, int]:
    """Seconds for ``n`` steps of ``objective`` (with every extra loss it takes), and the waits."""
    model, tok = new_model("roformer", build_vocab(SENTENCES + [p.b for p in LABELLED]), seed=0,
                           hidden_size=64, num_layers=2, num_heads=2, max_position=128)
    extra = {"simbert": {"cosent_weight": 1.0, "simcse_weight": 1.0, "mlm_weight": 1.0}, "mlm": {}}[objective]
    cfg = TrainConfig(objective=objective, batch_size=4, cosent_batch_size=4, simcse_batch_size=3,
                      mlm_batch_size=8, max_steps=n, epochs=1000, log_every=1000, checkpoint_every=1000,
                      bf16=device == "cuda", **extra)
    t = Trainer(model, tok, ModelInfo("roformer", pooling="pooler", max_seq_length=32), cfg, POSITIVES, LABELLED,
                sentences=SENTENCES, triples=TRIPLES, device=device)
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        start = time.perf_counter()
        try:
            t.train(out)
        finally:
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode(0)
        seconds = time.perf_counter() - start
        vectors = t.encoder().encode(SENTENCES[:3], show_progress_bar=False)
    if vectors.shape != (3, 64) or not torch.isfinite(torch.from_numpy(vectors)).all():
        raise RuntimeError(f"encoding after {objective} training gave {vectors.shape}, or values that are not finite")
    return seconds, sum("synchroniz" in str(w.message) for w in caught)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("cuda-check: no GPU is visible to torch", file=sys.stderr)
        return 1
    try:
        for objective in ("simbert", "mlm"):
            seconds, waits = steps(args.device, objective, 6)
            print(f"cuda-check: {objective}: 6 steps in {seconds:.2f} s on {args.device}; "
                  f"{waits} calls waited for the GPU" if args.device == "cuda" else
                  f"cuda-check: {objective}: 6 steps in {seconds:.2f} s on {args.device}", flush=True)
    except Exception as e:  # the point is a one-line verdict in the lease's log
        print(f"cuda-check: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
