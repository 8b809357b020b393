"""simkit's STS harness against mteb's own STS evaluation, and simkit models run through mteb.

The local task holds pairs whose two sentences are identical (as PAWSX does, 74 of them),
with mixed labels: ranked by float64 rounding noise they would move Spearman; mteb's float32
scores make them ties, and so must simkit's.
"""

from __future__ import annotations

import json

import mteb
import numpy as np
import pytest
from conftest import TEXTS
from datasets import Dataset, DatasetDict
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models import EncoderProtocol
from simkit_eval.mteb_model import SimkitMtebModel
from test_eval_data import write_task

from simkit.encoder import Encoder


def _pairs() -> list[tuple[str, str, float]]:
    rng = np.random.default_rng(0)
    pairs = [(TEXTS[i], TEXTS[j], float(rng.integers(0, 6)))
             for i, j in rng.integers(0, len(TEXTS), size=(40, 2)) if i != j]
    # identical sides, labels 0..5 mixed: only a tie gives them one (average) rank
    pairs += [(t, t, float(k % 6)) for k, t in enumerate(TEXTS[:14])]
    return pairs


PAIRS = _pairs()


class LocalSTS(AbsTaskSTS):
    """An mteb STS task whose data are PAIRS, loaded locally (no hub)."""

    metadata = TaskMetadata(
        name="SimkitLocalSTS", description="Local pairs with identical-sentence pairs.",
        reference="https://example.org/simkit", dataset={"path": "NA", "revision": "NA"},
        type="STS", category="t2t", modalities=["text"], eval_splits=["test"],
        eval_langs=["cmn-Hans"], main_score="cosine_spearman", date=("2026-01-01", "2026-01-02"),
        domains=[], task_subtypes=[], license="cc-by-4.0", annotations_creators="derived",
        dialect=[], sample_creation="found", bibtex_citation="",
    )
    min_score = 0
    max_score = 5

    def load_data(self, num_proc=None, **kwargs) -> None:
        a, b, y = zip(*PAIRS)
        self.dataset = DatasetDict({"test": Dataset.from_dict(
            {"sentence1": list(a), "sentence2": list(b), "score": list(y)})})
        self.data_loaded = True


KEYS = ("cosine_spearman", "cosine_pearson", "euclidean_spearman", "euclidean_pearson",
        "manhattan_spearman", "manhattan_pearson")


def _mteb(enc: Encoder) -> dict:
    """mteb.evaluate's own scores (in memory: its result files round to 6 decimals)."""
    model = SimkitMtebModel(enc, "local/test", revision="test")
    assert isinstance(model, EncoderProtocol)
    res = mteb.evaluate(model, LocalSTS(), cache=None, show_progress_bar=False,
                        encode_kwargs={"batch_size": 8, "show_progress_bar": False})
    return res.task_results[0].scores["test"][0]


def _simkit(enc: Encoder, data_dir) -> dict:
    """`simkit eval sts`'s path: run_grid, each distinct sentence encoded once."""
    from simkit_eval.grid import GridConfig, ModelSpec, parse_transforms, run_grid

    write_task(data_dir, "STS-B", "test", PAIRS)  # labels 0-5
    run = run_grid([ModelSpec("m", enc)], data_dir,
                   GridConfig(tasks=["STS-B"], splits=["test"], poolings=[enc.pooling],
                              transforms=parse_transforms("0")))
    (cell,) = run.cells
    return cell.scores


@pytest.fixture(scope="module")
def mteb_scores(tiny_roformer_dir):
    return _mteb(Encoder(tiny_roformer_dir, pooling="first-last-avg"))


def test_simkit_harness_equals_mteb_with_identical_pairs(mteb_scores, tiny_roformer_dir, tmp_path):
    ours = _simkit(Encoder(tiny_roformer_dir, pooling="first-last-avg"), tmp_path)
    for key in (*KEYS, "main_score"):
        assert ours[key] == pytest.approx(mteb_scores[key], abs=1e-6), key


def test_bundled_trained_model_equals_mteb(tmp_path):
    """A trained model (the bundled one, SimBERT pooler): measured within 4e-8 of mteb."""
    from simkit import assets

    if not (assets.DEFAULT_MODEL / "config.json").is_file():
        pytest.skip("no bundled default model in this checkout")
    enc = Encoder(assets.default_model_dir())
    theirs, ours = _mteb(enc), _simkit(enc, tmp_path)
    for key in (*KEYS, "main_score"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key


def test_float64_noise_would_have_broken_the_ties(mteb_scores, tiny_roformer_dir):
    """Identical pairs: float64 cosines spread by noise, ranked raw they move Spearman (the old bug)."""
    from scipy import stats
    from simkit_eval.scoring import cosine_pairs, spearman, tie_round

    enc = Encoder(tiny_roformer_dir, pooling="first-last-avg")
    a, b, y = zip(*PAIRS)
    vecs = dict(zip(TEXTS, enc.encode(TEXTS)))  # one vector per distinct text, as run_grid
    cos = cosine_pairs(np.stack([vecs[t] for t in a]), np.stack([vecs[t] for t in b]))
    same = np.array([s == t for s, t in zip(a, b)])
    assert len(set(cos[same].tolist())) > 1 and (tie_round(cos[same]) == 1.0).all()
    raw = stats.spearmanr(cos, y).statistic
    assert raw != pytest.approx(mteb_scores["cosine_spearman"], abs=1e-6)
    assert spearman(cos, y) == pytest.approx(mteb_scores["cosine_spearman"], abs=1e-6)


def test_wrapper_takes_any_encoder_and_encodes_a_text_once(tiny_bert_dir):
    """Anything with encode(texts, batch_size=, show_progress_bar=) -> array will do."""
    enc = Encoder(tiny_bert_dir)
    calls = []

    class Pipeline:
        def encode(self, texts, batch_size=32, show_progress_bar=None):
            calls.append(list(texts))
            return enc.encode(texts, batch_size=batch_size)

    model = SimkitMtebModel(Pipeline(), "org/pipe")
    assert model.mteb_model_meta.similarity_fn_name.value == "cosine"
    meta = LocalSTS.metadata
    batches = [{"text": ["甲", "乙"]}, {"text": ["甲"]}]
    v1 = model.encode(batches, task_metadata=meta, hf_split="test", hf_subset="default")
    v2 = model.encode([{"text": ["乙", "丙"]}], task_metadata=meta, hf_split="test", hf_subset="default")
    assert calls == [["甲", "乙"], ["丙"]] and v1.shape == (3, enc.get_sentence_embedding_dimension())
    assert (v1[0] == v1[2]).all() and (v1[1] == v2[0]).all()
    with pytest.raises(ValueError, match="org/model"):
        SimkitMtebModel(Pipeline(), "no-slash")


def test_cli_eval_mteb_writes_mteb_result_files(tiny_bert_dir, tmp_path, monkeypatch):
    """The command's real path resolves tasks on the hub; here they are the local task."""
    import simkit_eval.mteb_model as mm
    from simkit_cli.app import app
    from typer.testing import CliRunner

    monkeypatch.setattr(mm, "resolve_tasks", lambda tasks, benchmark: [LocalSTS()])
    out = tmp_path / "res"
    r = CliRunner().invoke(app, ["eval", "mteb", "-m", str(tiny_bert_dir), "--tasks", "SimkitLocalSTS",
                                 "-o", str(out), "--name", "local/tiny"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    folder = out / "results" / "local__tiny"
    (rev,) = [p.name for p in folder.iterdir()]
    assert summary["dir"] == str(folder / rev) and summary["failed"] == {}
    assert sorted(p.name for p in (folder / rev).glob("*.json")) == ["SimkitLocalSTS.json", "model_meta.json"]
    task = json.loads((folder / rev / "SimkitLocalSTS.json").read_text(encoding="utf-8"))
    assert task["scores"]["test"][0]["main_score"] == round(summary["results"]["SimkitLocalSTS"], 6)
    again = CliRunner().invoke(app, ["eval", "mteb", "-m", str(tiny_bert_dir), "--tasks", "X", "-o", str(out)])
    assert again.exit_code == 1 and "pass --overwrite" in again.stderr


def test_cli_eval_mteb_needs_a_task(tmp_path):
    from simkit_cli.app import app
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, ["eval", "mteb", "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and r.stderr.startswith("simkit: error: no mteb task given")


def test_resolve_tasks_by_name_and_benchmark():
    """mteb's task registry is in the package: names resolve offline (the data come later)."""
    from simkit_eval.mteb_model import resolve_tasks

    assert [t.metadata.name for t in resolve_tasks(["ATEC", "STSB", "ATEC"])] == ["ATEC", "STSB"]
    assert len(resolve_tasks([], "MTEB(cmn, v1)")) == 31
    with pytest.raises(ValueError, match="unknown mteb task in \\['NOPE'\\]"):
        resolve_tasks(["NOPE"])
    with pytest.raises(ValueError, match="unknown mteb benchmark 'MTEB\\(nope\\)'"):
        resolve_tasks([], "MTEB(nope)")
