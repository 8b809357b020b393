"""``simkit eval sts``: the five Chinese STS tasks, a grid of pooling × whitening, a report."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import typer

from simkit.errors import InputError

from .common import handle_errors, log, progress_enabled, refuse_existing


def register(app: typer.Typer) -> None:
    eval_app = typer.Typer(help="Evaluate encoders on benchmarks.", no_args_is_help=True)
    eval_app.command("sts", help=STS_HELP)(handle_errors(sts))
    eval_app.command("mteb")(handle_errors(mteb_run))
    app.add_typer(eval_app, name="eval")


STS_HELP = """Score models on ATEC, BQ, LCQMC, PAWSX and STS-B (Spearman of cosine vs labels).

Every model × pooling × transform is scored on every task and split; each distinct sentence
is encoded once per (model, max_seq_length), and one forward pass serves every pooling. The
markdown table (rows model-pooling, cells none / whitening / …) is printed on stdout; OUT
gets MTEB-style JSON per task, a manifest (versions, data sha256, protocol) and a plot.

DATA-DIR holds DIR/<TASK>/<TASK>.<split>.data (senteval_cn) or local C-MTEB copies
(DIR/ATEC/, DIR/STSB/ … with parquet / jsonl / csv, or a `datasets` save_to_disk folder).

Examples:
  simkit eval sts --model tfidf --data-dir data/chinese-sts -o results/tfidf
  simkit eval sts -m my-model --whitening 0,full,256 --jl 128 --baseline tfidf -d D -o results/m
  simkit eval sts -m my-model -w 0 --bootstrap 1000 -d D -o results/m-ci   # with 95 % intervals
"""


def _split_list(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def sts(
    model: list[str] | None = typer.Option(None, "--model", "-m", help="Model dir / hub id, repeatable or comma-separated; 'tfidf' is the weight-free baseline."),
    data_dir: Path = typer.Option(..., "--data-dir", "-d", help="senteval_cn or C-MTEB directory."),
    output: Path = typer.Option(..., "--output", "-o", help="Report directory (created atomically)."),
    tasks: str = typer.Option("ATEC,BQ,LCQMC,PAWSX,STS-B", "--tasks", help="Comma-separated tasks."),
    split: str = typer.Option("valid", "--split", help="Split(s) to score, comma-separated: train, valid, test."),
    pooling: str = typer.Option("cls,pooler,last-avg,first-last-avg", "--pooling", "-p", help="Poolings, comma-separated ('pooler' is skipped for models without one)."),
    whitening: str = typer.Option("0,full,256", "--whitening", "-w", help="0 (none), full, and/or whitening dimensions k."),
    jl: str | None = typer.Option(None, "--jl", help="JL random projection dimensions, comma-separated (e.g. 128)."),
    fit_on: str = typer.Option("all", "--fit-on", help="Whitening / TF-IDF fit set: all (every pair of the scored splits), a split name, or a corpus FILE."),
    baseline: str | None = typer.Option(None, "--baseline", help="Add a weight-free baseline row: tfidf."),
    max_seq_length: str | None = typer.Option(None, "--max-seq-length", help="Token limit: N for all tasks, or TASK=N,... overrides (default 64, PAWSX 128)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32 or bf16."),
    threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads."),
    seed: int = typer.Option(0, "--seed", help="Seed of the JL projections and of the bootstrap."),
    bootstrap: int = typer.Option(0, "--bootstrap", min=0, help="Resample each task's pairs N times (e.g. 1000) for 95 % intervals of every score and of the average; the same resamples for every row, so rows compare paired."),
    limit: int | None = typer.Option(None, "--limit", min=2, help="Only the first N pairs of each split (quick runs)."),
    data_format: str = typer.Option("auto", "--data-format", help="auto, senteval or cmteb."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Embedding cache (default: $XDG_CACHE_HOME/simkit/eval, else ~/.cache/simkit/eval)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Keep embeddings in memory only."),
    plot: bool | None = typer.Option(None, "--plot/--no-plot", help="PNG of score vs whitening dim (default: if matplotlib is installed)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    from simkit_eval.baseline import NAME as TFIDF
    from simkit_eval.grid import GridConfig, ModelSpec, parse_max_seq_length, parse_transforms

    refuse_existing(output, overwrite)
    names = _split_list(model)
    if baseline is not None:
        if baseline != TFIDF:
            raise InputError(f"unknown baseline {baseline!r}; expected one of: {TFIDF}")
        names.append(TFIDF)
    names = list(dict.fromkeys(names))
    if not names:
        raise InputError("no model given; pass --model M (or --model tfidf for the weight-free baseline)")
    config = GridConfig(
        tasks=_split_list([tasks]), splits=_split_list([split]), poolings=_split_list([pooling]),
        transforms=parse_transforms(whitening, _split_list([jl]) if jl else ()), fit_on=fit_on,
        max_seq_length=parse_max_seq_length(max_seq_length), batch_size=batch_size, seed=seed,
        bootstrap=bootstrap, limit=limit, data_format=data_format, show_progress_bar=progress_enabled(),
    )
    specs = []
    for name in names:
        if name == TFIDF:
            specs.append(ModelSpec(TFIDF))
            continue
        from simkit.encoder import Encoder

        t0 = time.perf_counter()
        specs.append(ModelSpec(name, Encoder(name, dtype=dtype, num_threads=threads)))
        log.info("loaded %s in %.1fs", name, time.perf_counter() - t0)
    from simkit_eval.cache import EmbeddingCache
    from simkit_eval.grid import run_grid
    from simkit_eval.report import markdown_table, write_report

    default_cache = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "simkit" / "eval"
    cache = EmbeddingCache(None if no_cache else (cache_dir or default_cache))
    run = run_grid(specs, data_dir, config, cache)
    for note in run.notes:
        log.warning("note: %s", note)
    write_report(run, output, argv=sys.argv, overwrite=overwrite, plot=plot)
    log.info("wrote %s (%d scores, %.1fs; encoded %d sentences in %d passes, %d cache hits)",
             output, len(run.cells), run.elapsed, run.cache["encoded"], run.cache["passes"], run.cache["hits"])
    sys.stdout.write(markdown_table(run))
    sys.stdout.flush()


def mteb_run(
    model: str | None = typer.Option(None, "--model", "-m", help="Model dir / hub id (default: the bundled model)."),
    output: Path = typer.Option(..., "--output", "-o", help="mteb's result folder: OUT/results/<name>/<revision>/<task>.json."),
    tasks: str | None = typer.Option(None, "--tasks", help="mteb task names, comma-separated (e.g. ATEC,BQ,LCQMC,PAWSX,STSB)."),
    benchmark: str | None = typer.Option(None, "--benchmark", help="An mteb benchmark, e.g. 'MTEB(cmn, v1)' (C-MTEB)."),
    name: str | None = typer.Option(None, "--name", help="Model name in mteb's results, org/model (default: the hub id, or local/<dir name>)."),
    pooling: str | None = typer.Option(None, "--pooling", "-p", help="Pooling (default: the model's)."),
    max_seq_length: int | None = typer.Option(None, "--max-seq-length", min=3, help="Token limit (default: the model's)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    dtype: str = typer.Option("fp32", "--dtype", help="fp32 or bf16."),
    threads: int | None = typer.Option(None, "--threads", help="torch intra-op threads."),
    resume: bool = typer.Option(False, "--resume", help="Keep the results already in OUT; run only the missing tasks."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT's results for these tasks."),
) -> None:
    """Run mteb (e.g. all of C-MTEB) on a simkit model; mteb writes its own result files.

    Task data come from the Hugging Face hub through mteb. A JSON summary
    ({"results": {task: main_score}, "failed": {...}, "dir": ...}) goes to stdout; a task
    that fails does not stop the others, but makes the exit code 1.

    Examples:
      simkit eval mteb -m my-model --benchmark "MTEB(cmn, v1)" -o results/mteb
      simkit eval mteb -m my-model --tasks ATEC,BQ,LCQMC,PAWSX,STSB -o results/sts
    """
    from simkit_eval.cache import model_fingerprint
    from simkit_eval.mteb_model import SimkitMtebModel, mteb_name, resolve_tasks, run_mteb

    from simkit.encoder import Encoder, default_model_path

    from .common import echo_json

    if not resume:
        refuse_existing(output, overwrite)
    task_objs = resolve_tasks(_split_list([tasks]) if tasks else [], benchmark)
    path = model or default_model_path()
    enc = Encoder(path, pooling=pooling, max_seq_length=max_seq_length, dtype=dtype, num_threads=threads)
    wrapped = SimkitMtebModel(enc, name or mteb_name(path), revision=model_fingerprint(enc))
    log.info("mteb: %d task(s) on %s (revision %s)", len(task_objs), wrapped.mteb_model_meta.name,
             wrapped.mteb_model_meta.revision)
    summary = run_mteb(wrapped, task_objs, output, batch_size=batch_size, resume=resume,
                       show_progress_bar=progress_enabled())
    echo_json(summary)
    for task, err in summary["failed"].items():
        log.error("mteb: %s failed: %s", task, err)
    if summary["failed"]:
        raise typer.Exit(1)
