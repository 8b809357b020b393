"""``simkit whiten`` / ``simkit project``: fit a transform on an embedding dir, apply it to one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from simkit.errors import InputError

from .common import choice, echo_json, handle_errors, progress_enabled, refuse_existing, sub_app


def register(app: typer.Typer) -> None:
    whiten = sub_app("BERT-whitening: fit on an embedding dir, apply to one.")
    whiten.command("fit", help=WHITEN_FIT_HELP)(handle_errors(whiten_fit))
    whiten.command("apply", help=APPLY_HELP)(handle_errors(apply))
    project = sub_app("Johnson-Lindenstrauss random projection: fit, apply.")
    project.command("fit", help=PROJECT_FIT_HELP)(handle_errors(project_fit))
    project.command("apply", help=APPLY_HELP)(handle_errors(apply))
    app.add_typer(whiten, name="whiten")
    app.add_typer(project, name="project")


WHITEN_FIT_HELP = """Fit BERT-whitening on EMB_DIR (from simkit encode) and save it to OUT.

The moments are accumulated in float64 block by block from the memory-mapped
vectors, so the matrix is never loaded whole; --streaming goes through partial_fit
--chunk-size rows at a time. JSON summary on stdout.

\b
Example:  simkit whiten fit emb/ --n-components 256 -o w256/
"""

PROJECT_FIT_HELP = """Draw a random projection for EMB_DIR's dimension and save it to OUT.

--n-components auto takes the Johnson-Lindenstrauss bound for EMB_DIR's row count
and --eps (refused when that is not below the input dimension). The matrix is saved,
never re-drawn.

\b
Example:  simkit project fit emb/ --n-components 256 --kind sparse --seed 0 -o jl/
"""

APPLY_HELP = """Apply the saved transform T_DIR to EMB_DIR and write a new embedding dir OUT.

OUT keeps the ids; its pipeline is EMB_DIR's followed by the transform, so an index
built from OUT encodes and transforms text queries exactly like its vectors.

\b
Example:  simkit whiten apply w256/ emb/ -o emb256/
"""

Output = Annotated[Path, typer.Option("--output", "-o", help="Directory to write.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace OUT if it is the same kind of dir.")]
Normalize = Annotated[bool, typer.Option("--normalize", help="L2-normalise after the transform.")]
EmbDir = Annotated[Path, typer.Argument(help="Embedding directory (simkit encode).")]


def whiten_fit(
    emb_dir: EmbDir,
    output: Output,
    n_components: Annotated[int | None, typer.Option("--n-components", min=1,
                                                     help="Dimensions kept. [default: all]")] = None,
    eps: Annotated[float, typer.Option("--eps", help="Eigenvalue floor, relative to the largest.")] = 1e-6,
    normalize: Normalize = False,
    streaming: Annotated[bool, typer.Option("--streaming", help="partial_fit over chunks.")] = False,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=2, help="Rows per chunk.")] = 65536,
    overwrite: Overwrite = False,
) -> None:
    import time
    import warnings

    from simkit.embed import fit_store
    from simkit.transforms import Whitening

    refuse_existing(output, overwrite)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w = fit_store(emb_dir, Whitening(n_components, eps=eps), streaming=streaming, chunk_size=chunk_size,
                      show_progress_bar=progress_enabled())
    for warning in caught:  # rank deficiency: one line on stderr, and the count in the JSON
        typer.echo(f"simkit: warning: {warning.message}", err=True)
    chain = _save(w, normalize, output, overwrite)
    echo_json({"output": str(output), "input": str(emb_dir), "count": int(w.n_samples_seen_),
               "dim_in": w.n_features_in_, "dim_out": w.n_components_, "n_degenerate": w.n_degenerate_,
               "explained_variance_ratio": round(float(w.explained_variance_ratio_.sum()), 6),
               "streaming": streaming, "chunk_size": chunk_size if streaming else None,
               "seconds": round(time.perf_counter() - t0, 3), "transform": _describe(chain)})


def project_fit(
    emb_dir: EmbDir,
    output: Output,
    n_components: Annotated[str, typer.Option("--n-components", help="An int, or auto.")] = "auto",
    eps: Annotated[float, typer.Option("--eps", help="JL distortion for --n-components auto.")] = 0.1,
    kind: Annotated[str, typer.Option("--kind", help="The random matrix.",
                                      parser=choice("gaussian", "sparse", "orthogonal"))] = "gaussian",
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (a reproducible draw).")] = None,
    normalize: Normalize = False,
    overwrite: Overwrite = False,
) -> None:
    import time

    from simkit.embed import fit_store
    from simkit.errors import check_choice
    from simkit.transforms import KINDS, RandomProjection

    check_choice("kind", kind, KINDS)
    try:
        k: int | str = n_components if n_components == "auto" else int(n_components)
    except ValueError:
        raise typer.BadParameter(f"{n_components!r}: expected an int or 'auto'",
                                 param_hint="--n-components") from None
    refuse_existing(output, overwrite)
    t0 = time.perf_counter()
    rp = fit_store(emb_dir, RandomProjection(k, eps=eps, kind=kind, random_state=seed))
    chain = _save(rp, normalize, output, overwrite)
    echo_json({"output": str(output), "input": str(emb_dir), "dim_in": rp.n_features_in_,
               "dim_out": rp.n_components_, "kind": kind, "seed": seed,
               "seconds": round(time.perf_counter() - t0, 3), "transform": _describe(chain)})


def apply(
    transform_dir: Annotated[Path, typer.Argument(help="A saved transform (whiten / project fit).")],
    emb_dir: EmbDir,
    output: Output,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Rows per chunk.")] = 65536,
    overwrite: Overwrite = False,
) -> None:
    from simkit.embed import apply_transform
    from simkit.transforms import load_transform

    refuse_existing(output, overwrite)
    if output.resolve() == emb_dir.resolve():
        raise InputError(f"{output}: the output must not be the input directory")
    summary = apply_transform(emb_dir, load_transform(transform_dir), output, chunk_size=chunk_size,
                              overwrite=overwrite, source=transform_dir, show_progress_bar=progress_enabled())
    echo_json({**summary, "transform": str(transform_dir)})


def _save(step, normalize: bool, output: Path, overwrite: bool):
    import numpy as np

    from simkit.transforms import Chain, Normalize, save_transform

    chain = Chain([step, Normalize().fit(np.zeros((1, step.n_components_), np.float32))] if normalize else [step])
    save_transform(chain, output, overwrite=overwrite)
    return chain


def _describe(chain) -> list[dict]:
    from simkit.transforms import describe

    return describe(chain)
