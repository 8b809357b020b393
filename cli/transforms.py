"""``simkit whiten`` / ``simkit project``: fit a transform on an embedding dir, apply it to one.

Example::

    simkit whiten fit emb/ -k 256 --streaming -o w256/
    simkit whiten apply w256/ emb/ -o emb256/        # any saved transform applies
    simkit project fit emb/ -k auto --eps 0.2 --seed 0 -o jl/
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from simkit.errors import InputError, check_choice
from simkit.fsutil import atomic_dir, reserve_space
from simkit.store import EmbeddingStore, write_manifest

from .common import echo_json, handle_errors, progress_enabled, refuse_existing

# Keys write_manifest sets itself; an input manifest's values for them must not leak through.
_OWN_KEYS = ("format", "format_version", "simkit_version", "count", "dim")


def register(app: typer.Typer) -> None:
    whiten = typer.Typer(
        help="BERT-whitening: fit on an embedding dir, apply to one.", no_args_is_help=True
    )
    whiten.command("fit", help=WHITEN_FIT_HELP)(handle_errors(whiten_fit))
    whiten.command("apply", help=APPLY_HELP)(handle_errors(apply))
    project = typer.Typer(
        help="Johnson-Lindenstrauss random projection: fit, apply.", no_args_is_help=True
    )
    project.command("fit", help=PROJECT_FIT_HELP)(handle_errors(project_fit))
    project.command("apply", help=APPLY_HELP)(handle_errors(apply))
    app.add_typer(whiten, name="whiten")
    app.add_typer(project, name="project")


WHITEN_FIT_HELP = """Fit BERT-whitening on EMB_DIR (from `simkit encode`) and save it to W_DIR.

The moments are accumulated in float64 block by block from the memory-mapped vectors, so
the matrix is never loaded whole; --streaming goes through partial_fit chunk by chunk
(--chunk-size rows at a time) with a progress bar. JSON summary on stdout.

Example:  simkit whiten fit emb/ -k 256 -o w256/
"""

PROJECT_FIT_HELP = """Draw a random projection for EMB_DIR's dimension and save it to DIR.

-k auto takes the Johnson-Lindenstrauss bound for EMB_DIR's row count and --eps (refused
when that is not below the input dimension). The matrix is saved, never re-drawn.

Example:  simkit project fit emb/ -k 256 --kind sparse --seed 0 -o jl256/
"""

APPLY_HELP = """Apply the saved transform T_DIR to EMB_DIR and write a new embedding dir OUT.

OUT has the same ids; its manifest keeps the source's fields and records the transform
(its steps and T_DIR). Works for any saved transform (whitening, projection, chains).

Example:  simkit whiten apply w256/ emb/ -o emb256/
"""


def _load(emb_dir: Path) -> EmbeddingStore:
    return EmbeddingStore.load(emb_dir, mmap=True)


def _chunks(n: int, size: int, desc: str):
    from tqdm.auto import tqdm

    with tqdm(total=n, unit="vec", desc=desc, disable=not progress_enabled()) as bar:
        for start in range(0, n, size):
            yield start, min(start + size, n)
            bar.update(min(size, n - start))


@contextlib.contextmanager
def _rows(emb_dir: Path, emb: np.ndarray, a: int, b: int):
    """Yield ``emb[a:b]``; errors name the file and, for NaN/inf, the row in the file."""
    chunk = emb[a:b]
    try:
        yield chunk
    except InputError as e:
        bad = np.flatnonzero(~np.isfinite(chunk).all(axis=1))
        where = emb_dir / "embeddings.npy"
        if len(bad):
            raise InputError(
                f"{where}: row {a + int(bad[0])} contains NaN or inf "
                f"({len(bad)} bad rows in rows {a}..{b - 1})"
            ) from None
        raise InputError(f"{where}: {e}") from None


def _save(chain, output: Path, overwrite: bool) -> None:
    from simkit.transforms import save_transform

    save_transform(chain, output, overwrite=overwrite)


def whiten_fit(
    emb_dir: Annotated[Path, typer.Argument(help="Embedding directory (embeddings.npy, ids.txt).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Transform directory to write.")],
    n_components: Annotated[
        int | None,
        typer.Option("--n-components", "-k", min=1, help="Dimensions kept (default: all)."),
    ] = None,
    eps: Annotated[
        float, typer.Option("--eps", help="Eigenvalue floor, relative to the largest.")
    ] = 1e-6,
    normalize: Annotated[
        bool, typer.Option("--normalize", help="L2-normalise after whitening.")
    ] = False,
    streaming: Annotated[
        bool, typer.Option("--streaming", help="partial_fit over chunks.")
    ] = False,
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=2, help="Rows per chunk.")] = 65536,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")
    ] = False,
) -> None:
    import warnings

    from simkit.transforms import Chain, Normalize, Whitening

    refuse_existing(output, overwrite)
    t0 = time.perf_counter()
    store = _load(emb_dir)
    emb = store.embeddings
    w = Whitening(n_components, eps=eps)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if streaming:
            for a, b in _chunks(len(emb), chunk_size, "whiten fit"):
                with _rows(emb_dir, emb, a, b) as chunk:
                    w.partial_fit(chunk)
            with _rows(emb_dir, emb, 0, 0):
                w._solve()  # now, inside the warning capture (else lazily at save)
        else:
            with _rows(emb_dir, emb, 0, len(emb)) as chunk:
                w.fit(chunk)
    for warning in caught:  # rank-deficiency: one line on stderr, and the count in the JSON
        typer.echo(f"simkit: warning: {warning.message}", err=True)
    chain = Chain([w, Normalize().fit(w.transform(emb[:1]))] if normalize else [w])
    _save(chain, output, overwrite)
    echo_json(
        {
            "output": str(output),
            "input": str(emb_dir),
            "count": len(emb),
            "dim_in": w.n_features_in_,
            "dim_out": w.n_components_,
            "n_degenerate": w.n_degenerate_,
            "explained_variance_ratio": round(float(w.explained_variance_ratio_.sum()), 6),
            "streaming": streaming,
            "chunk_size": chunk_size if streaming else None,
            "seconds": round(time.perf_counter() - t0, 3),
            "transform": _describe(chain),
        }
    )


def project_fit(
    emb_dir: Annotated[Path, typer.Argument(help="Embedding directory (embeddings.npy, ids.txt).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Transform directory to write.")],
    n_components: Annotated[
        str, typer.Option("--n-components", "-k", help="An int, or auto.")
    ] = "auto",
    eps: Annotated[float, typer.Option("--eps", help="JL distortion for -k auto.")] = 0.1,
    kind: Annotated[
        str, typer.Option("--kind", help="gaussian, sparse or orthogonal.")
    ] = "gaussian",
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed (reproducible draw).")
    ] = None,
    normalize: Annotated[
        bool, typer.Option("--normalize", help="L2-normalise after projecting.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")
    ] = False,
) -> None:
    from simkit.transforms import KINDS, Chain, Normalize, RandomProjection

    check_choice("kind", kind, KINDS)
    if n_components != "auto":
        try:
            k: int | str = int(n_components)
        except ValueError:
            raise InputError(f"-k {n_components!r}: expected an int or 'auto'") from None
    else:
        k = "auto"
    refuse_existing(output, overwrite)
    t0 = time.perf_counter()
    emb = _load(emb_dir).embeddings
    with _rows(emb_dir, emb, 0, len(emb)) as chunk:
        rp = RandomProjection(k, eps=eps, kind=kind, random_state=seed).fit(chunk)
    chain = Chain([rp, Normalize().fit(rp.transform(emb[:1]))] if normalize else [rp])
    _save(chain, output, overwrite)
    echo_json(
        {
            "output": str(output),
            "input": str(emb_dir),
            "count": len(emb),
            "dim_in": rp.n_features_in_,
            "dim_out": rp.n_components_,
            "kind": kind,
            "seed": seed,
            "seconds": round(time.perf_counter() - t0, 3),
            "transform": _describe(chain),
        }
    )


def apply(
    transform_dir: Annotated[Path, typer.Argument(help="A saved transform (whiten/project fit).")],
    emb_dir: Annotated[Path, typer.Argument(help="Embedding directory to transform.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="New embedding directory.")],
    chunk_size: Annotated[int, typer.Option("--chunk-size", min=1, help="Rows per chunk.")] = 65536,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")
    ] = False,
) -> None:
    from simkit.transforms import Normalize, load_transform

    refuse_existing(output, overwrite)
    if output.resolve() == emb_dir.resolve():
        raise InputError(f"{output}: the output must not be the input directory")
    t0 = time.perf_counter()
    chain = load_transform(transform_dir)
    store = _load(emb_dir)
    n, d = store.embeddings.shape
    if d != chain.n_features_in_:
        raise InputError(
            f"{emb_dir / 'embeddings.npy'} holds {d}-dim vectors, but the transform "
            f"in {transform_dir} expects {chain.n_features_in_}-dim input"
        )
    k = chain.n_components_
    with atomic_dir(output, overwrite=overwrite, kind="simkit-embeddings") as tmp:
        out = np.lib.format.open_memmap(
            tmp / "embeddings.npy", mode="w+", dtype=np.float32, shape=(n, k)
        )
        reserve_space(tmp / "embeddings.npy")  # a memmap write to a full disk would be a SIGBUS
        for a, b in _chunks(n, chunk_size, "apply"):
            with _rows(emb_dir, store.embeddings, a, b) as chunk:
                out[a:b] = chain.transform(chunk)
        out.flush()
        del out
        shutil.copyfile(store.path / "ids.txt", tmp / "ids.txt")  # the version just read
        manifest = {key: v for key, v in store.manifest.items() if key not in _OWN_KEYS}
        steps = _describe(chain)
        manifest.update(
            {
                "source_embeddings": str(emb_dir),
                "transform": {"path": str(transform_dir.resolve()), "steps": steps},
                # Whole history when transforms are applied on top of each other.
                "transforms": [
                    *store.manifest.get("transforms", []),
                    {"path": str(transform_dir.resolve()), "steps": steps},
                ],
                "normalize_embeddings": isinstance(chain.steps[-1], Normalize),
            }
        )
        write_manifest(tmp, manifest, (n, k))
    echo_json(
        {
            "output": str(output),
            "input": str(emb_dir),
            "transform": str(transform_dir),
            "count": n,
            "dim_in": d,
            "dim_out": k,
            "seconds": round(time.perf_counter() - t0, 3),
        }
    )


def _describe(chain) -> list[dict]:
    from simkit.transforms import describe

    return describe(chain)
