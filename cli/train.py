"""``simkit train simbert|cosent|mlm|simcse``: train a model, from scratch or from a checkpoint."""

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
    sentence_files: list[Path] = (),
    nli_files: list[Path] = (),
    extend: bool = False,
    stack: int | None = None,
    threads: int | None = None,
    **cfg,
) -> None:
    from simkit.encoder import Encoder
    from simkit.models.factory import check_sizes
    from simkit.threads import configure_threads
    from simkit.train.config import TrainConfig, check_config
    from simkit.train.data import load_training_files, read_nli_triples, sentences_of
    from simkit.train.setup import build_model
    from simkit.train.trainer import Trainer

    configure_threads(threads)
    config = TrainConfig(max_seq_length=max_seq_length, **cfg)
    check_config(config)  # a bad option value fails before any file is read
    if init is None:  # a from-scratch shape (a resumed run rebuilds it before loading the checkpoint)
        check_sizes(backbone, hidden_size, num_layers, num_heads)
    objective = cfg["objective"]
    positives, labelled = ([], []) if objective in ("mlm", "simcse") else load_training_files(
        data, graded_threshold=graded_threshold)
    sentences = sentences_of([*(data if objective == "mlm" else []), *sentence_files])
    triples = [t for f in [*(data if objective == "simcse" else []), *nli_files] for t in read_nli_triples(f)]
    texts = ([t for a, b in positives for t in (a, b)] + [t for p in labelled for t in (p.a, p.b)]
             + sentences + [t for tri in triples for t in tri])
    model, tok, info = build_model(texts, init=init, backbone=backbone, hidden_size=hidden_size,
                                   num_layers=num_layers, num_heads=num_heads, max_seq_length=max_seq_length,
                                   vocab_min_freq=vocab_min_freq, extend_vocab_=extend, stack_layers=stack,
                                   seed=cfg["seed"], source=f"simkit train {cfg['objective']} (from scratch)")
    evaluator = _valid_evaluator(valid) if valid else None
    teacher_enc = Encoder(teacher) if teacher else None
    trainer = Trainer(model, tok, info, config, positives, labelled, sentences, triples, evaluator=evaluator,
                      teacher=teacher_enc)
    log.info("training on %d positive pairs, %d labelled pairs, %d sentences and %d NLI triples; %d steps",
             len(positives), len(labelled), len(sentences), len(triples), trainer.total_steps())
    final = trainer.train(output, resume_from=resume, overwrite=overwrite)
    echo_json({"model": str(final), "steps": trainer.step, "best_main_score": trainer.best_score,
               "positives": len(positives), "labelled": len(labelled), "sentences": len(sentences),
               "triples": len(triples), "log": str(Path(output) / "log.jsonl")})


def _valid_evaluator(files: list[Path]):
    from simkit_eval.evaluator import pairs_evaluator

    return pairs_evaluator(files)


def _options(objective: str, data_help: str = DATA_HELP):
    def command(
        data: list[Path] = typer.Argument(..., help=data_help),
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
        lr_schedule: str = typer.Option("steps", "--lr-schedule", help="Warm up and decay the rate over the "
                                        "steps, or over --time-budget (time: it reaches zero as the budget "
                                        "runs out, on any machine; counted across --resume)."),
        lr: float = typer.Option(5e-5, "--lr"),
        warmup_ratio: float = typer.Option(0.1, "--warmup-ratio"),
        mask_prob: float = typer.Option(0.0, "--mask-prob", help="RoFormer-Sim: mask this fraction of source tokens."),
        teacher: str | None = typer.Option(None, "--teacher", help="Distil this model's similarity matrix."),
        distill_weight: float = typer.Option(0.0, "--distill-weight"),
        sentence_files: list[Path] = typer.Option([], "--sentences", help="Sentence file (one a line) for the "
                                                  "masked-LM loss; repeatable."),
        mlm_weight: float = typer.Option(0.0, "--mlm-weight", help="Add masked LM on the sentences with this weight."),
        mlm_batch_size: int = typer.Option(64, "--mlm-batch-size", min=1),
        mlm_prob: float = typer.Option(0.15, "--mlm-prob", min=0.01, max=0.9, help="Share of tokens masked."),
        nli_files: list[Path] = typer.Option([], "--nli", help="NLI file 'premise<TAB>hypothesis<TAB>entailment|"
                                             "neutral|contradiction' for the SimCSE loss; repeatable."),
        simcse_weight: float = typer.Option(0.0, "--simcse-weight", help="Add supervised SimCSE on the NLI "
                                            "triples with this weight."),
        simcse_batch_size: int = typer.Option(64, "--simcse-batch-size", min=1),
        seed: int = typer.Option(0, "--seed"),
        bf16: bool = typer.Option(False, "--bf16", help="bfloat16 autocast (CPU with AMX, or GPU)."),
        group_by_length: bool = typer.Option(False, "--group-by-length", help="Batch items of similar "
                                             "length together (random within windows of 50 batches): "
                                             "far less padding, faster steps."),
        micro_batches: int = typer.Option(1, "--micro-batches", min=1, help="Forward passes per batch: "
                                          "its items sorted by length and cut into N passes, each padded "
                                          "to its own longest. Same pair losses, less padding (CPU: "
                                          "try 2-4); not for the masked-LM loss."),
        threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
        checkpoint_every: int = typer.Option(500, "--checkpoint-every"),
        resume: Path | None = typer.Option(None, "--resume", help="Resume from a checkpoint dir or a run dir (latest)."),
        overwrite: bool = typer.Option(False, "--overwrite"),
    ) -> None:
        _common(data, output, init, backbone, hidden_size, num_layers, num_heads, max_seq_length,
                vocab_min_freq, valid, graded_threshold, resume, overwrite, teacher, sentence_files, nli_files,
                extend=extend, stack=stack,
                objective=objective, batch_size=batch_size, cosent_batch_size=cosent_batch_size,
                cosent_weight=cosent_weight, cosent_scope=cosent_scope, epochs=epochs, max_steps=max_steps, time_budget=time_budget,
                lr_schedule=lr_schedule,
                lr=lr, warmup_ratio=warmup_ratio, mask_prob=mask_prob, distill_weight=distill_weight,
                seed=seed, bf16=bf16, group_by_length=group_by_length, micro_batches=micro_batches, checkpoint_every=checkpoint_every, threads=threads, mlm_weight=mlm_weight,
                mlm_batch_size=mlm_batch_size, mlm_prob=mlm_prob, simcse_weight=simcse_weight,
                simcse_batch_size=simcse_batch_size)

    return handle_errors(command)


train_app.command("simbert", help="SimBERT objective: UniLM seq2seq on each pair in both orders + in-batch "
                  "contrastive on pooler vectors (scale 30). Example: simkit train simbert pairs.tsv -o runs/sim")(
    _options("simbert"))
train_app.command("cosent", help="CoSENT ranking loss on cosine similarities of labelled pairs (lambda 20). "
                  "Example: simkit train cosent sts.tsv --init runs/sim/model -o runs/cosent")(_options("cosent"))
train_app.command("mlm", help="Masked-LM pre-training (BERT's 15 %, 80/10/10) on sentences, bidirectional "
                  "attention. Example: simkit train mlm sentences/*.txt pairs/*.tsv -o runs/mlm")(
    _options("mlm", "Sentence files (.txt, one a line) and pair / NLI files (.tsv, .data: both sentences)."))
train_app.command("simcse", help="Supervised SimCSE on NLI triples (entailment positive, contradiction hard "
                  "negative, temperature 0.05). Example: simkit train simcse nli/*.tsv --init runs/mlm/model "
                  "-o runs/simcse")(
    _options("simcse", "NLI files 'premise<TAB>hypothesis<TAB>entailment|neutral|contradiction'."))
