"""``simkit train simbert|cosent``: train a model from pairs, from scratch or from a checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from .common import THREADS_HELP, echo_json, handle_errors, sub_app

log = logging.getLogger("simkit.cli")

train_app = sub_app("Train SimBERT / RoFormer-Sim models (UniLM seq2seq + contrastive) or fine-tune with CoSENT.")


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")


DATA_HELP = ("Training files: senteval_cn TSV pairs 'a<TAB>b<TAB>label' (positives: label 1, or >= "
             "--graded-threshold for 0-5 labels) or .jsonl groups of similar sentences.")


def _common(
    data: list[Path],
    output: Path,
    init: str | None,
    backbone: str,
    hidden_size: int,
    num_layers: int,
    num_heads: int | None,
    max_seq_length: int,
    vocab_min_freq: int,
    valid: list[Path],
    graded_threshold: float,
    resume: Path | None,
    overwrite: bool,
    teacher: str | None,
    extend: bool = False,
    stack: int | None = None,
    threads: int | None = None,
    **cfg,
) -> None:
    from simkit.encoder import Encoder
    from simkit.threads import configure_threads
    from simkit.train.data import load_training_files
    from simkit.train.setup import build_model
    from simkit.train.trainer import TrainConfig, Trainer

    configure_threads(threads)
    positives, labelled = load_training_files(data, graded_threshold=graded_threshold)
    texts = [t for a, b in positives for t in (a, b)] + [t for p in labelled for t in (p.a, p.b)]
    model, tok, info = build_model(texts, init=init, backbone=backbone, hidden_size=hidden_size,
                                   num_layers=num_layers, num_heads=num_heads, max_seq_length=max_seq_length,
                                   vocab_min_freq=vocab_min_freq, extend_vocab_=extend, stack_layers=stack,
                                   seed=cfg["seed"], source=f"simkit train {cfg['objective']} (from scratch)")
    config = TrainConfig(max_seq_length=max_seq_length, **cfg)
    evaluator = _valid_evaluator(valid) if valid else None
    teacher_enc = Encoder(teacher) if teacher else None
    trainer = Trainer(model, tok, info, config, positives, labelled, evaluator=evaluator, teacher=teacher_enc)
    log.info("training on %d positive pairs and %d labelled pairs; %d steps", len(positives),
             len(labelled), trainer.total_steps())
    final = trainer.train(output, resume_from=resume, overwrite=overwrite)
    echo_json({"model": str(final), "steps": trainer.step, "best_main_score": trainer.best_score,
               "positives": len(positives), "labelled": len(labelled), "log": str(Path(output) / "log.jsonl")})


def _valid_evaluator(files: list[Path]):
    from simkit_eval.evaluator import pairs_evaluator

    return pairs_evaluator(files)


def _options(objective: str):
    def command(
        data: list[Path] = typer.Argument(..., help=DATA_HELP),
        output: Path = typer.Option(..., "--output", "-o", help="Run dir: model/ (best or last), checkpoints/, log.jsonl."),
        init: str | None = typer.Option(None, "--init", help="Start from this model (simkit / HF dir). Default: from scratch."),
        backbone: str = typer.Option("roformer", "--backbone", help="From scratch: bert or roformer."),
        hidden_size: int = typer.Option(256, "--hidden-size", help="From scratch: hidden size."),
        num_layers: int = typer.Option(4, "--num-layers", help="From scratch: transformer layers."),
        num_heads: int | None = typer.Option(None, "--num-heads", help="From scratch: heads (default hidden/64)."),
        vocab_min_freq: int = typer.Option(1, "--vocab-min-freq", help="Vocabulary: keep characters seen this often."),
        extend: bool = typer.Option(False, "--extend-vocab", help="With --init: add the training text's characters "
                                    "that the model maps to [UNK] (each starts as a copy of [UNK])."),
        stack: int | None = typer.Option(None, "--stack-layers", help="With --init: deepen the model to this "
                                         "many layers, layer i starting as a copy of layer i mod L (progressive stacking)."),
        max_seq_length: int = typer.Option(64, "--max-seq-length"),
        valid: list[Path] = typer.Option([], "--valid", help="Valid pair file(s); evaluated each epoch, best model kept."),
        graded_threshold: float = typer.Option(4.0, "--graded-threshold", help="Graded labels: positives are >= this."),
        batch_size: int = typer.Option(32, "--batch-size", "-b", help="Pairs per step."),
        cosent_batch_size: int = typer.Option(64, "--cosent-batch-size"),
        cosent_weight: float = typer.Option(0.0, "--cosent-weight", help="simbert: add CoSENT on labelled pairs with this weight."),
        cosent_scope: str = typer.Option("file", "--cosent-scope", help="CoSENT ranks pairs of the same input "
                                         "file only (file), or all pairs of a batch (batch: labels must share one scale)."),
        epochs: int = typer.Option(1, "--epochs"),
        max_steps: int | None = typer.Option(None, "--max-steps"),
        time_budget: float | None = typer.Option(None, "--time-budget", help="Seconds; stop and save when exceeded."),
        lr: float = typer.Option(5e-5, "--lr"),
        warmup_ratio: float = typer.Option(0.1, "--warmup-ratio"),
        mask_prob: float = typer.Option(0.0, "--mask-prob", help="RoFormer-Sim: mask this fraction of source tokens."),
        teacher: str | None = typer.Option(None, "--teacher", help="Distil this model's similarity matrix."),
        distill_weight: float = typer.Option(0.0, "--distill-weight"),
        seed: int = typer.Option(0, "--seed"),
        bf16: bool = typer.Option(False, "--bf16", help="bfloat16 autocast (CPU with AMX, or GPU)."),
        threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
        checkpoint_every: int = typer.Option(500, "--checkpoint-every"),
        resume: Path | None = typer.Option(None, "--resume", help="Resume from a checkpoint dir or a run dir (latest)."),
        overwrite: bool = typer.Option(False, "--overwrite"),
    ) -> None:
        _common(data, output, init, backbone, hidden_size, num_layers, num_heads, max_seq_length,
                vocab_min_freq, valid, graded_threshold, resume, overwrite, teacher, extend=extend, stack=stack,
                objective=objective, batch_size=batch_size, cosent_batch_size=cosent_batch_size,
                cosent_weight=cosent_weight, cosent_scope=cosent_scope, epochs=epochs, max_steps=max_steps, time_budget=time_budget,
                lr=lr, warmup_ratio=warmup_ratio, mask_prob=mask_prob, distill_weight=distill_weight,
                seed=seed, bf16=bf16, checkpoint_every=checkpoint_every, threads=threads)

    return handle_errors(command)


train_app.command("simbert", help="SimBERT objective: UniLM seq2seq on each pair in both orders + in-batch "
                  "contrastive on pooler vectors (scale 30). Example: simkit train simbert pairs.tsv -o runs/sim")(
    _options("simbert"))
train_app.command("cosent", help="CoSENT ranking loss on cosine similarities of labelled pairs (lambda 20). "
                  "Example: simkit train cosent sts.tsv --init runs/sim/model -o runs/cosent")(_options("cosent"))
