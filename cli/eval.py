"""``simkit eval sts``: the five Chinese STS tasks, a grid of pooling × whitening, a report."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import typer

from .common import (
    THREADS_HELP,
    choice,
    echo_json,
    handle_errors,
    log,
    progress_enabled,
    refuse_existing,
    sub_app,
)


def register(app: typer.Typer) -> None:
    eval_app = sub_app("Evaluate encoders on benchmarks.")
    eval_app.command("sts", help=STS_HELP)(handle_errors(sts))
    eval_app.command("retrieval", help=RETRIEVAL_HELP)(handle_errors(retrieval))
    eval_app.command("mteb")(handle_errors(mteb_run))
    eval_app.command("carve", help=CARVE_HELP)(handle_errors(carve))
    app.add_typer(eval_app, name="eval")


STS_HELP = """Score models on ATEC, BQ, LCQMC, PAWSX and STS-B (Spearman of cosine vs labels).

Every model × pooling × transform is scored on every task and split; each distinct sentence
is encoded once per (model, max_seq_length), and one forward pass serves every pooling. The
markdown table (rows model-pooling, cells none / whitening / …) is printed on stdout; OUT
gets MTEB-style JSON per task, a manifest (versions, data sha256, protocol) and a plot.

DATA-DIR holds DIR/<TASK>/<TASK>.<split>.data (senteval_cn) or local C-MTEB copies
(DIR/ATEC/, DIR/STSB/ … with parquet / jsonl / csv, or a `datasets` save_to_disk folder).

\b
Examples:
  simkit eval sts --model tfidf --data-dir data/chinese-sts -o results/tfidf
  simkit eval sts -m my-model --whitening 0,full,256 --jl 128 --baseline tfidf -d D -o results/m
  simkit eval sts -m my-model -w 0 --bootstrap 1000 -d D -o results/m-ci   # with 95 % intervals
"""


MIN_BOOTSTRAP = 20


def _split_list(values: list[str] | None, option: str | None = None) -> list[str]:
    """The comma-separated names of ``values``; with ``option``, none at all is a usage error."""
    names = [v.strip() for item in values or [] for v in item.split(",") if v.strip()]
    if option and not names:
        raise click.UsageError(f"{option} {','.join(values or [])!r} names nothing; expected a "
                               "comma-separated list")
    return names


def _check_bootstrap(n: int) -> None:
    if 0 < n < MIN_BOOTSTRAP:  # a handful of resamples gives an 'interval' that means nothing
        raise click.UsageError(f"--bootstrap {n}: expected 0 (off) or at least {MIN_BOOTSTRAP} resamples "
                               "(1000 is usual)")


def sts(
    model: list[str] | None = typer.Option(None, "--model", "-m", help="Model dir / hub id, repeatable or comma-separated; 'tfidf' is the weight-free baseline. "
                                         "[default: $SIMKIT_MODEL, else the bundled model]"),
    data_dir: Path = typer.Option(..., "--data-dir", "-d", help="senteval_cn or C-MTEB directory."),
    output: Path = typer.Option(..., "--output", "-o", help="Report directory (created atomically)."),
    tasks: str = typer.Option("ATEC,BQ,LCQMC,PAWSX,STS-B", "--tasks", help="Comma-separated tasks."),
    split: str = typer.Option("valid", "--split", help="Split(s) to score, comma-separated: train, valid, test."),
    pooling: str = typer.Option("cls,pooler,last-avg,first-last-avg", "--pooling", "-p", help="Poolings, comma-separated ('pooler' is skipped for models without one)."),
    whitening: str = typer.Option("0,full", "--whitening", "-w", help="0 (none), full, and/or whitening dimensions "
                                  "k (BERT-whitening's tables add 256 for 768-d models; a k wider than every "
                                  "model is refused)."),
    jl: str | None = typer.Option(None, "--jl", help="JL random projection dimensions, comma-separated (e.g. 128)."),
    fit_on: str = typer.Option("all", "--fit-on", help="Whitening / TF-IDF fit set: all (every pair of the scored splits), a split name, or a corpus FILE."),
    baseline: str | None = typer.Option(None, "--baseline", help="Add a weight-free baseline row: tfidf."),
    max_seq_length: str | None = typer.Option(None, "--max-seq-length", help="Token limit: N for all tasks, or TASK=N,... overrides (default 64, PAWSX 128)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    dtype: str = typer.Option("fp32", "--dtype", help="Compute dtype.", parser=choice("fp32", "bf16")),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the JL projections and of the bootstrap."),
    bootstrap: int = typer.Option(0, "--bootstrap", min=0, help="Resample each task's pairs N times (e.g. 1000) for 95 % intervals of every score and of the average; the same resamples for every row, so rows compare paired."),
    limit: int | None = typer.Option(None, "--limit", min=2, help="Only the first N pairs of each split (quick runs)."),
    data_format: str = typer.Option("auto", "--data-format", help="auto, senteval or cmteb."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Embedding cache (default: $XDG_CACHE_HOME/simkit/eval, else ~/.cache/simkit/eval)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Keep embeddings in memory only."),
    plot: bool | None = typer.Option(None, "--plot/--no-plot", help="PNG of score vs whitening dim (default: if matplotlib is installed)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    from simkit_eval.grid import GridConfig, parse_max_seq_length, parse_transforms
    from simkit_eval.report import markdown_table
    from simkit_eval.sts import model_specs, run_sts

    from simkit.threads import configure_threads

    refuse_existing(output, overwrite)
    _check_bootstrap(bootstrap)
    config = GridConfig(
        tasks=_split_list([tasks], "--tasks"), splits=_split_list([split], "--split"),
        poolings=_split_list([pooling], "--pooling"),
        transforms=parse_transforms(whitening, _split_list([jl]) if jl else ()), fit_on=fit_on,
        max_seq_length=parse_max_seq_length(max_seq_length), batch_size=batch_size, seed=seed,
        bootstrap=bootstrap, limit=limit, data_format=data_format, show_progress_bar=progress_enabled(),
    )
    specs = model_specs(_split_list(model), baseline, dtype, configure_threads(threads))
    run = run_sts(specs, data_dir, output, config, cache_dir, no_cache, plot, overwrite, argv=sys.argv)
    sys.stdout.write(markdown_table(run))
    sys.stdout.flush()


RETRIEVAL_HELP = """Pair retrieval on STS pair files: R@1, R@10 and MRR@100 (x 100).

The corpus is every distinct sentence of a task split; each query is sentence 1 of a
positive pair, and its relevant documents are the sentences it is positively paired with
(the query itself is left out). Every model answers the same sampled queries; --baseline
tfidf adds the weight-free character TF-IDF row. JSON on stdout.

\b
Example:  simkit eval retrieval -d data/chinese-sts --baseline tfidf
"""


def retrieval(
    model: list[str] | None = typer.Option(None, "--model", "-m", help="Model dir / hub id, repeatable or "
                                         "comma-separated. [default: $SIMKIT_MODEL, else the bundled model]"),
    data_dir: Path = typer.Option(..., "--data-dir", "-d", help="senteval_cn or C-MTEB directory."),
    tasks: str = typer.Option("ATEC,BQ,LCQMC", "--tasks", help="Comma-separated tasks."),
    split: str = typer.Option("valid", "--split", help="Split(s), comma-separated."),
    n_queries: int = typer.Option(2000, "--queries", min=1, help="Queries sampled per task split."),
    baseline: str | None = typer.Option(None, "--baseline", help="Add a weight-free baseline row: tfidf."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1, help="Texts per forward pass."),
    dtype: str = typer.Option("fp32", "--dtype", help="Compute dtype.", parser=choice("fp32", "bf16")),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the query sample."),
    data_format: str = typer.Option("auto", "--data-format", help="auto, senteval or cmteb.",
                                    parser=choice("auto", "senteval", "cmteb")),
    bootstrap: int = typer.Option(0, "--bootstrap", min=0, help="Resamples of the queries for a 95 % "
                                  "interval of MRR (MRR_ci); 0: none."),
) -> None:
    from simkit_eval.retrieval import run_retrieval
    from simkit_eval.sts import model_specs

    from simkit.threads import configure_threads

    specs = model_specs(_split_list(model), baseline, dtype, configure_threads(threads))
    _check_bootstrap(bootstrap)
    rows = run_retrieval(specs, data_dir, _split_list([tasks], "--tasks"), _split_list([split], "--split"), n_queries, seed,
                         data_format, batch_size, bootstrap)
    echo_json({"results": rows})


CARVE_HELP = """Carve select / report parts of STS valid splits by sentence, not by line.

Pairs sharing a sentence go to the same part (no sentence is in both), and a pair whose
sentence occurs in any SEEN file (every file the model was trained on, its starting
model's data included) is dropped. Writes OUT/<TASK>/<TASK>.select.data and .report.data
(select models on one, report the other) and OUT/config.json with the sizes; the summary
is printed as JSON.

\b
Example:
  simkit eval carve -d data/chinese-sts -o parts pairs/*.tsv nli/*.tsv
  simkit eval sts -d parts --split report -w 0 --bootstrap 1000 -o res/report
"""


def carve(
    data_dir: Path = typer.Option(..., "--data-dir", "-d", help="senteval_cn directory: DIR/<TASK>/<TASK>.<split>.data."),
    seen: list[Path] = typer.Argument(..., help="Training files (pairs, NLI or one sentence a line).",
                                      show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory."),
    tasks: str = typer.Option("ATEC,BQ,LCQMC,PAWSX,STS-B", "--tasks", help="Comma-separated tasks."),
    split: str = typer.Option("valid", "--split", help="The split to carve."),
    report_fraction: float = typer.Option(0.5, "--report-fraction", min=0.01, max=0.99,
                                          help="Share of sentence components that go to report."),
    seed: int = typer.Option(0, "--seed", help="Seed of the component assignment."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier carve in OUT."),
) -> None:
    from simkit_eval.carve import carve as run_carve

    echo_json(run_carve(data_dir, _split_list([tasks], "--tasks"), [str(p) for p in seen], output, split,
                        report_fraction, seed, overwrite))


def mteb_run(
    model: str | None = typer.Option(None, "--model", "-m", help="Model dir / hub id (default: the bundled model)."),
    output: Path = typer.Option(..., "--output", "-o", help="mteb's result folder: OUT/results/<name>/<revision>/<task>.json."),
    tasks: str | None = typer.Option(None, "--tasks", help="mteb task names, comma-separated (e.g. ATEC,BQ,LCQMC,PAWSX,STSB)."),
    benchmark: str | None = typer.Option(None, "--benchmark", help="An mteb benchmark, e.g. 'MTEB(cmn, v1)' (C-MTEB)."),
    name: str | None = typer.Option(None, "--name", help="Model name in mteb's results, org/model (default: the hub id, or local/<dir name>)."),
    pooling: str | None = typer.Option(None, "--pooling", "-p", help="Pooling (default: the model's)."),
    max_seq_length: int | None = typer.Option(None, "--max-seq-length", min=3, help="Token limit (default: the model's)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
    dtype: str = typer.Option("fp32", "--dtype", help="Compute dtype.", parser=choice("fp32", "bf16")),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    resume: bool = typer.Option(False, "--resume", help="Keep the results already in OUT; run only the missing tasks."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT's results for these tasks."),
) -> None:
    """Run mteb (e.g. all of C-MTEB) on a simkit model; mteb writes its own result files.

    Task data come from the Hugging Face hub through mteb. A JSON summary
    ({"results": {task: main_score}, "failed": {...}, "dir": ...}) goes to stdout; a task
    that fails does not stop the others, but makes the exit code 1.

    \b
    Examples:
      simkit eval mteb -m my-model --benchmark "MTEB(cmn, v1)" -o results/mteb
      simkit eval mteb -m my-model --tasks ATEC,BQ,LCQMC,PAWSX,STSB -o results/sts
    """
    from simkit_eval.cache import model_fingerprint
    from simkit_eval.mteb_model import SimkitMtebModel, mteb_name, resolve_tasks, run_mteb

    from simkit.encoder import Encoder, default_model_path
    from simkit.threads import configure_threads

    if not resume:
        refuse_existing(output, overwrite)
    task_objs = resolve_tasks(_split_list([tasks]) if tasks else [], benchmark)
    path = model or default_model_path()
    enc = Encoder(path, pooling=pooling, max_seq_length=max_seq_length, dtype=dtype,
                  num_threads=configure_threads(threads))
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
