"""Training speed: simkit's Trainer vs a plain forward/backward loop, same model, same batches.

One random-weight SimBERT-style model built from a config exactly as ``simkit train simbert``
builds a from-scratch model (``new_model``: RoFormer, linear pooler, tied LM head; by default
4 layers x 192 hidden x 3 heads, the bundled default model before stage 9 stacked it to 8
layers: ``--layers 8`` for its present depth), a character vocabulary of the training pairs,
dropout 0.1. The pairs are the positives of ``DIR/*/*.valid.data``
(``--data-dir``, senteval_cn layout, positives chosen as ``simkit train`` chooses them) or
random Chinese-character pairs drawn with a fixed seed.

* ``simkit Trainer``: ``Trainer(..., TrainConfig(objective="simbert")).train(tmpdir)`` for
  ``--warmup + --steps + 1`` steps, with the CLI's defaults (log every 10 steps, checkpoint
  every 500, progress bar on unless ``--quiet``). The clock covers steps ``warmup+1 ..
  warmup+steps`` in full: batch assembly from token ids, autocast, the two SimBERT losses,
  the NaN check, zero_grad, backward, gradient clipping (max norm 1.0), AdamW, the LR
  scheduler, progress bar, logging, and the checkpoint / evaluation checks. Outside the
  clock: ``Trainer(...)`` (it tokenizes the data), ``train``'s set-up (optimizer, output
  files) and the extra last step's end-of-run checkpoint and model save; the last two are
  printed as a one-time cost per run.
* ``plain loop``: the same model (reset to the same initial weights), the trainer's own
  batches pre-built as tensors before the clock starts, ``torch.manual_seed(seed)`` as the
  trainer does, then per step ``simbert_losses`` (simkit's loss functions, so only the
  machinery differs), ``loss.backward()``, ``clip_grad_norm_(max_norm=1.0)`` (the trainer
  clips, so the plain loop clips too), ``AdamW.step()`` (the same two parameter groups, no
  weight decay on biases and LayerNorm; a constant LR, no scheduler), ``zero_grad()``.

Both start from the same weights and RNG state on the same batch, so their first-step losses
must be equal; the script checks that, and that the trainer's batches are the pre-built ones.
Runs alternate (simkit, plain, plain, simkit, ...); the table shows medians, and the line under
it the median of the per-repeat ratios. tokens/s counts non-padding tokens (two rows per pair:
``[CLS] a [SEP] b [SEP]`` and ``[CLS] b [SEP] a [SEP]``). On a shared machine runs of the same
loop differ by 5-10 %, so a ratio of 3 repeats is only good to a few per cent; the trainer's
batch assembly, timed inside its clock, is printed separately (its only per-step work that a
plain loop does not do, besides the scheduler, the NaN check and logging every 10 steps).

Two options time the trainer on other batches, beside the two loops above:
``--group-by-length`` (``TrainConfig.group_by_length``: batches of similar-length pairs, so
other pairs per step) and ``--micro-batches N`` (the same batches, each cut by length into N
forward passes padded to their own longest row; the losses are those of the whole batch).
Their speed is compared in non-padding tokens a second.

Measured 2026-11-28 (Intel Xeon, 2 threads, bf16 autocast, quiet machine), RoFormer 8 x 192
(the bundled model's shape), the STS valid positives, batch 32 pairs, 12 steps, 3 repeats;
``--data-dir ../shared/data/chinese-sts --layers 8 --bf16 --threads 2 --steps 12 --warmup 2``
with ``--group-by-length --micro-batches 3``, then ``--micro-batches 2`` and ``4``. A random
batch is 51 % real tokens. Per-repeat medians of tokens/s against the plain loop:

* ``group_by_length``: 99 % real tokens, 1.88x (1.85x in an earlier run of the same command).
* ``micro_batches`` 2 / 3 / 4: 69 / 79 / 84 % real tokens, 1.27x / 1.27x (table median
  1.40x) / 1.36x.

Grouping is faster, but it changes the batches: lengths differ by source, so a batch comes
mostly from one task. From scratch (RoFormer 4 x 192, the card's stage-1 recipe, 2 epochs,
one seed each), grouping took 571 s instead of 1,122 s and scored 35.1 instead of 39.0 on
the mean of the five select parts, after the same 740 steps. Micro-batches keep every batch
and its loss (equal to the one padded batch up to rounding, tested), so ``--micro-batches 3``
is the CPU speed-up to use without re-validating a recipe.

    OMP_NUM_THREADS=1 python bench/train.py                        # ~2 min on one busy core
    OMP_NUM_THREADS=1 python bench/train.py --data-dir ../shared/data/chinese-sts --bf16
    OMP_NUM_THREADS=1 python bench/train.py --layers 1 --hidden 16 --heads 1 --steps 50 --repeats 5

The last one makes the compute almost nothing, so the difference of the two loops is the
trainer's machinery in ms per step; at the default size it is well under the run-to-run noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_model  # bench/ is on sys.path when a bench runs

from simkit.models.checkpoint import ModelInfo
from simkit.models.factory import build_vocab, new_model
from simkit.train.data import load_training_files
from simkit.train.objectives import simbert_losses
from simkit.train.trainer import TrainConfig, Trainer


def training_pairs(data_dir: Path | None, n: int, seed: int, chars: int) -> list[tuple[str, str]]:
    """Positive pairs of the valid files (as ``simkit train`` picks them), or random ones."""
    if data_dir is not None:
        files = sorted(data_dir.glob("*/*.valid.data"))
        if not files:
            raise SystemExit(f"{data_dir}: no */*.valid.data files (senteval_cn layout)")
        positives, _ = load_training_files(files)
        return positives
    pool = [chr(0x4E00 + i) for i in range(chars)]  # CJK ideographs, a vocabulary of ~`chars`
    rng = np.random.default_rng(seed)

    def sentence() -> str:
        return "".join(rng.choice(pool, size=int(rng.integers(6, 31))))

    return [(sentence(), sentence()) for _ in range(n)]


def optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with the trainer's parameter groups (the step costs the same), constant LR."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def run_simkit(model, init: dict, tok, info, pairs, cfg: TrainConfig, warmup: int, steps: int) -> dict:
    """Trainer.train over warmup + steps + 1 steps; times steps warmup+1 .. warmup+steps."""
    model.load_state_dict(init)
    trainer = Trainer(model, tok, info, cfg, positives=pairs, device="cpu")
    stamps: list[float] = []
    batches: list[dict] = []
    assembly: list[float] = []
    first: list[dict] = []
    losses_fn, batch_fn, checkpoint_fn = trainer._losses, trainer._simbert_batches, trainer._checkpoint
    saved: list[float] = []

    def timed_losses():
        stamps.append(time.perf_counter())  # the start of each step
        out = losses_fn()
        if not first:
            first.append(out[0])
        return out

    def recorded_batch(idx):
        t = time.perf_counter()
        batches.append(batch_fn(idx))
        assembly.append(time.perf_counter() - t)
        return batches[-1]

    def timed_checkpoint(*args):
        saved.append(time.perf_counter())
        return checkpoint_fn(*args)

    trainer._losses, trainer._simbert_batches = timed_losses, recorded_batch
    trainer._checkpoint = timed_checkpoint
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        trainer.train(Path(d) / "run")
        t_end = time.perf_counter()
    assert trainer.step == warmup + steps + 1 == len(stamps) and len(saved) == 1
    loop = stamps[warmup + steps] - stamps[warmup]
    return {"time": loop, "setup": stamps[0] - t0, "teardown": t_end - saved[0],
            "assembly": sum(assembly[warmup : warmup + steps]),
            "first_loss": float(sum(first[0].values()).detach()), "batches": batches}


def run_plain(model, init: dict, batches: list[list[dict]], cfg: TrainConfig, warmup: int, steps: int) -> dict:
    """The same math by hand: forward, SimBERT losses, backward, clip, AdamW step, zero_grad."""
    model.load_state_dict(init)
    model.train()
    opt = optimizer(model, cfg)
    torch.manual_seed(cfg.seed)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16)
    first = None
    for i, batch in enumerate(batches[: warmup + steps]):
        if i == warmup:
            t0 = time.perf_counter()
        with autocast:
            loss = sum(simbert_losses(model, batch).values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        opt.zero_grad()
        if i == 0:
            first = loss.item()
    return {"time": time.perf_counter() - t0, "first_loss": first}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="senteval_cn layout (TASK/TASK.valid.data); default: random pairs")
    ap.add_argument("--n", type=int, default=4096, help="random pairs (without --data-dir)")
    ap.add_argument("--chars", type=int, default=3675, help="distinct characters of the random pairs")
    ap.add_argument("--backbone", choices=["roformer", "bert"], default="roformer")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32, help="pairs per step (2 rows per pair)")
    ap.add_argument("--max-seq-length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast (both loops)")
    ap.add_argument("--group-by-length", action="store_true",
                    help="also time the trainer with group_by_length (its own batches)")
    ap.add_argument("--micro-batches", type=int, default=1,
                    help="also time the trainer with this many forward passes per batch (same batches)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true", help="no progress bar (as `simkit -q train`)")
    a = ap.parse_args()
    if a.micro_batches < 1:
        ap.error(f"--micro-batches {a.micro_batches}: expected an int >= 1")
    torch.set_num_threads(a.threads)
    # As the CLI: INFO shows the trainer's progress bar on stderr, -q (here --quiet) hides it.
    logging.basicConfig(level=logging.WARNING if a.quiet else logging.INFO, format="%(message)s")
    for noisy in ("httpx", "huggingface_hub", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    pairs = training_pairs(a.data_dir, a.n, a.seed, a.chars)
    vocab = build_vocab([t for p in pairs for t in p])
    model, tok = new_model(a.backbone, vocab, seed=a.seed, hidden_size=a.hidden, num_layers=a.layers,
                           num_heads=a.heads, max_position=max(512, a.max_seq_length))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    info = ModelInfo(a.backbone, pooling="pooler", max_seq_length=a.max_seq_length)
    cfg = TrainConfig(objective="simbert", batch_size=a.batch_size, max_seq_length=a.max_seq_length,
                      max_steps=a.warmup + a.steps + 1, seed=a.seed, bf16=a.bf16)

    # Each runner's config; the plain loop runs the default trainer's batches.
    configs = {"simkit Trainer": cfg, "plain loop": cfg}
    if a.group_by_length:
        configs["simkit, grouped"] = dataclasses.replace(cfg, group_by_length=True)
    if a.micro_batches > 1:
        configs[f"simkit, {a.micro_batches} passes"] = dataclasses.replace(cfg, micro_batches=a.micro_batches)

    # Every runner's batches (each step: its list of forward passes), built ahead: the plain
    # loop runs the trainer's own, and each trainer run is checked against its list.
    def batches_of(c: TrainConfig) -> list[list[dict]]:
        maker = Trainer(model, tok, info, c, positives=pairs, device="cpu")
        return [maker._simbert_batches(maker.main.next()[0]) for _ in range(a.warmup + a.steps)]

    batches = {name: batches_of(c) for name, c in configs.items() if name != "plain loop"}
    batches["plain loop"] = batches["simkit Trainer"]

    def count(name: str, what) -> int:
        return sum(what(b) for step in batches[name][a.warmup:] for b in step)

    tokens = {name: count(name, lambda b: int(b["attention_mask"].sum())) for name in configs}
    padded = {name: count(name, lambda b: b["attention_mask"].numel()) for name in configs}
    rows = count("plain loop", lambda b: len(b["input_ids"]))

    names = list(configs)
    times: dict[str, list[float]] = {name: [] for name in names}
    setup: list[float] = []
    teardown: list[float] = []
    assembly: list[float] = []
    first: dict[str, float] = {}
    for r in range(a.repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            if name == "plain loop":
                res = run_plain(model, init, batches[name], cfg, a.warmup, a.steps)
            else:
                res = run_simkit(model, init, tok, info, pairs, configs[name], a.warmup, a.steps)
                if name == "simkit Trainer":
                    setup.append(res["setup"])
                    teardown.append(res["teardown"])
                    assembly.append(res["assembly"])
                for mine, theirs in zip(res["batches"], batches[name]):
                    assert len(mine) == len(theirs) and all(
                        torch.equal(m[k], t[k]) for m, t in zip(mine, theirs) for k in t), \
                        "the trainer saw other batches"
            times[name].append(res["time"])
            first.setdefault(name, res["first_loss"])

    n_params = sum(p.numel() for p in model.parameters())
    print(f"\nCPU: {cpu_model()}, {os.cpu_count()} logical CPUs; torch threads: {a.threads}")
    print(f"{a.backbone} {a.layers} layers x {a.hidden} ({a.heads} heads), vocab {len(vocab)}, "
          f"{n_params / 1e6:.1f} M parameters, random weights, dropout 0.1; "
          f"{'STS valid positives' if a.data_dir else 'random pairs'}: {len(pairs)}; "
          f"batch {a.batch_size} pairs ({rows // a.steps} rows/step on average), max_seq_length "
          f"{a.max_seq_length}, {tokens['plain loop'] / a.steps:.0f} non-padding tokens/step "
          f"(share of the padded batches: "
          + ", ".join(f"{name} {tokens[name] / padded[name]:.0%}" for name in names if name != "plain loop")
          + f"); {'bf16 autocast' if a.bf16 else 'fp32'}; "
          f"{a.threads} thread{'s' if a.threads > 1 else ''}; {a.steps} timed steps after {a.warmup}, "
          f"median of {a.repeats} alternating runs")
    print(f"first-step loss: simkit {first['simkit Trainer']:.6f}, plain {first['plain loop']:.6f} "
          f"({'identical' if first['simkit Trainer'] == first['plain loop'] else 'DIFFERENT'}); "
          f"the trainer's batches equal the plain loop's\n")
    def speed(name: str, t: float) -> float:  # non-padding tokens a second
        return tokens[name] / t

    plain = speed("plain loop", statistics.median(times["plain loop"]))
    print(f"| {'loop':<18} | {'s/step':>7} | {'steps/s':>7} | {'tokens/s':>8} | {'vs plain':>8} | all runs (s/step) |")
    print(f"|{'-' * 20}|{'-' * 9}|{'-' * 9}|{'-' * 10}|{'-' * 10}|{'-' * 19}|")
    for name, ts in times.items():
        med = statistics.median(ts)
        runs = " ".join(f"{t / a.steps:.4f}" for t in ts)
        print(f"| {name:<18} | {med / a.steps:7.4f} | {a.steps / med:7.2f} | {speed(name, med):8.0f} | "
              f"{speed(name, med) / plain:7.3f}x | {runs:<17} |")
    print("\n(tokens/s: non-padding tokens; 'vs plain' compares them, so a loop on other batches compares fairly)")
    for name in (n for n in names if n != "plain loop"):
        paired = statistics.median(speed(name, s) / speed("plain loop", p)
                                   for p, s in zip(times["plain loop"], times[name]))
        print(f"{name} / plain loop in tokens/s, median of the per-repeat ratios (each repeat runs the "
              f"loops back to back, so slow drifts of the machine's load cancel): {paired:.3f}x")
    asm = statistics.median(assembly)
    print(f"of the trainer's time, batch assembly from token ids (the plain loop's batches are "
          f"pre-built): {asm / a.steps * 1e3:.1f} ms/step, "
          f"{asm / statistics.median(times['simkit Trainer']) * 100:.1f} %")
    print(f"outside the clock, once per run: Trainer.train set-up {statistics.median(setup):.2f} s, "
          f"end-of-run checkpoint and model save {statistics.median(teardown):.2f} s")
    if first["simkit Trainer"] != first["plain loop"]:
        raise SystemExit("the first-step losses differ: the two loops did not do the same work")


if __name__ == "__main__":
    main()
