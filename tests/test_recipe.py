"""recipes/v3.sh end to end at smoke scale, on made-up data laid out as the shared data is.

It runs through recipes/simkit-from-checkout, as on a lent machine where simkit is not
installed, with faiss hidden (that machine has none): every step must do without it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
CHARS = "花呗借还款怎么额度为什么天气明下雨北京孩子发烧电脑开机银行卡密码支付转账退回账户分期收益计算账单查询利息逾期关闭提升申请"


def _sentence(rng: random.Random, used: set[str]) -> str:
    while True:
        s = "".join(rng.choice(CHARS) for _ in range(rng.randint(5, 12)))
        if s not in used:
            used.add(s)
            return s


def _data(root: Path) -> Path:
    """chinese-sts/<TASK>/<TASK>.valid.data, STS-B train, and chinese-pairs/{pairs,nli,sentences}."""
    rng, used = random.Random(0), set()

    def lines(n: int, graded: bool = False) -> str:
        out = []
        for i in range(n):
            a = _sentence(rng, used)
            positive = i % 3 == 0  # every third: mixed labels among the held-out lines (NR % 4 == 0) too
            b = a[:-2] + _sentence(rng, used)[:2] if positive else _sentence(rng, used)
            label = (5 if positive else i % 3) if graded else int(positive)
            out.append(f"{a}\t{b}\t{label}\n")
        return "".join(out)

    for task in ("ATEC", "BQ", "LCQMC", "PAWSX", "STS-B"):
        d = root / "chinese-sts" / task
        d.mkdir(parents=True)
        (d / f"{task}.valid.data").write_text(lines(80, task == "STS-B"), encoding="utf-8")
    (root / "chinese-sts" / "STS-B" / "STS-B.train.data").write_text(lines(40, True), encoding="utf-8")
    pairs, nli, sents = (root / "chinese-pairs" / x for x in ("pairs", "nli", "sentences"))
    for d in (pairs, nli, sents):
        d.mkdir(parents=True)
    (pairs / "made-up-pairs.tsv").write_text(lines(60), encoding="utf-8")
    premises = [_sentence(rng, used) for _ in range(10)]
    (nli / "made-up-nli.tsv").write_text("".join(
        f"{p}\t{_sentence(rng, used)}\t{lab}\n"
        for p in premises for lab in ("entailment", "contradiction", "neutral")), encoding="utf-8")
    (sents / "made-up.txt").write_text("".join(_sentence(rng, used) + "\n" for _ in range(100)), encoding="utf-8")
    return root


@pytest.mark.slow
def test_v3_recipe_runs_every_step_without_an_install(tmp_path):
    data, runs = _data(tmp_path / "data"), tmp_path / "runs"
    hide = tmp_path / "hide" / "faiss"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('no faiss on the lent machine')\n")
    env = {**os.environ, "SIMKIT": f"{sys.executable} {ROOT / 'recipes' / 'simkit-from-checkout'}",
           "PY": sys.executable, "PYTHONPATH": str(hide.parent), "PRETRAIN_SECONDS": "3",
           "TUNE_SECONDS": "3", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(["bash", str(ROOT / "recipes" / "v3.sh"), str(data), str(runs), "all", "smoke"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    carve = json.loads((runs / "carve" / "bund" / "config.json").read_text())
    assert all(t["select"] > 0 and t["report"] > 0 for t in carve["tasks"].values())
    table = (runs / "scores" / "sts.md").read_text()
    assert "report split" in table and "v3-fp16-pooler" in table and "tfidf" in table
    retrieval = json.loads((runs / "scores" / "retrieval.json").read_text())["results"]
    assert {r["model"] for r in retrieval} >= {str(runs / "v3-fp16"), "tfidf"}
    paraphrases = (runs / "scores" / "paraphrases.jsonl").read_text().splitlines()
    assert len(paraphrases) == 20 and all(json.loads(x)["source"] for x in paraphrases)
    assert int((runs / "scores" / "fp16-bytes.txt").read_text()) > 0
    for step in ("mlm", "tune"):  # both on the time schedule, with the budget asked for
        cfg = json.loads((runs / step / "train_config.json").read_text())["train_config"]
        assert (cfg["lr_schedule"], cfg["time_budget"]) == ("time", 3.0)
    records = (runs / "mlm" / "log.jsonl").read_text().count('"lr"')
    # A finished run is never cleared unasked; RESUME=1 adds nothing to a spent time schedule,
    # FRESH=1 starts afresh with one log; the carve is replaced.
    def pretrain(**extra):
        return subprocess.run(["bash", str(ROOT / "recipes" / "v3.sh"), str(data), str(runs), "pretrain", "smoke"],
                              env={**env, **extra}, capture_output=True, text=True, timeout=300)

    res = pretrain()
    assert res.returncode == 1 and "holds a run; RESUME=1 goes on from it, FRESH=1" in res.stderr
    last = max(int(p.name.removeprefix("step-")) for p in (runs / "mlm" / "checkpoints").glob("step-*"))
    res = pretrain(RESUME="1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["steps"] == last
    assert (runs / "mlm" / "log.jsonl").read_text().count('"lr"') == records
    (runs / "mlm" / "mark").touch()
    res = pretrain(FRESH="1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert not (runs / "mlm" / "mark").exists()  # the old run's folder was cleared first


@pytest.mark.parametrize("args, code, says", [
    ([], 2, "usage: recipes/v3.sh"),
    (["{data}", "{runs}", "bake"], 2, "STEP must be carve, pretrain, tune, score or all"),
    (["{data}", "{runs}", "all", "huge"], 2, "SCALE must be gpu, cpu or smoke"),
    (["{missing}", "{runs}", "carve"], 1, "no such folder; DATA must hold chinese-sts/ and chinese-pairs/"),
])
def test_v3_recipe_refuses_bad_arguments(tmp_path, args, code, says):
    data = tmp_path / "data"
    for d in ("chinese-sts", "chinese-pairs/pairs", "chinese-pairs/nli", "chinese-pairs/sentences"):
        (data / d).mkdir(parents=True)
    subs = {"data": data, "runs": tmp_path / "runs", "missing": tmp_path / "missing"}
    res = subprocess.run(["bash", str(ROOT / "recipes" / "v3.sh"), *(a.format(**subs) for a in args)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == code and says in res.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_v3_lease_sends_the_model_back_before_scoring(tmp_path):
    """recipes/v3-lease.sh: the tuned and the pre-trained model come back in parts that
    rebuild them, whether or not time is left to score; STEPS="tune" tunes a model carried
    to RUNS/mlm/model again."""
    from simkit.models.checkpoint import load_model

    data, runs = _data(tmp_path / "data"), tmp_path / "runs"
    env = {**os.environ, "SIMKIT": f"{sys.executable} {ROOT / 'recipes' / 'simkit-from-checkout'}",
           "PY": sys.executable, "PRETRAIN_SECONDS": "2", "TUNE_SECONDS": "2", "OMP_NUM_THREADS": "1",
           "LIMIT": "1"}  # no time left to score: the model must come back anyway

    def lease(out: Path, **extra):
        res = subprocess.run(["bash", str(ROOT / "recipes" / "v3-lease.sh"), str(data), str(runs), str(out), "smoke"],
                             env={**env, **extra}, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-3000:]
        assert "not enough to score" in res.stdout
        files = sorted(p.name for p in out.iterdir())
        assert files[0] == "log.txt" and all(f.startswith(("mlm.tar.part-", "model.tar.part-")) for f in files[1:])
        assert len(files) <= 8 and all(p.stat().st_size <= 15 << 20 for p in out.iterdir())
        back = out / "back"
        back.mkdir()
        for name in ("mlm", "model"):
            tar = b"".join(p.read_bytes() for p in sorted(out.glob(f"{name}.tar.part-*")))
            if tar:
                subprocess.run(["tar", "-xf", "-", "-C", str(back)], input=tar, check=True)
        return back

    back = lease(tmp_path / "out1")
    assert (back / "mlm" / "log.jsonl").is_file() and (back / "tune" / "log.jsonl").is_file()
    for name in ("v3-fp16", "mlm-fp16"):
        model, _, _ = load_model(back / name)
        assert model.config.hidden_size == 32
        assert json.loads((back / name / "config.json").read_text())["storage_dtype"] == "fp16"
    shutil.rmtree(runs / "mlm")
    shutil.copytree(back / "mlm-fp16", runs / "mlm" / "model")  # as carried to a second lease
    back = lease(tmp_path / "out2", STEPS="tune", TUNE_SEED="22", FRESH="1")
    assert not (back / "mlm").exists() and not (back / "mlm-fp16").exists()  # no pre-training this time
    cfg = json.loads((runs / "tune" / "train_config.json").read_text())["train_config"]
    assert cfg["seed"] == 22
    assert (runs / "carve" / "bund").is_dir()


def test_cuda_check_trains_every_objective_and_refuses_without_a_gpu():
    """recipes/cuda-check.py, the lease's first command: the same steps on the CPU pass; with
    no GPU visible, the default (cuda) says so in one line and exits 1."""
    script = ROOT / "recipes" / "cuda-check.py"
    res = subprocess.run([sys.executable, str(script), "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [line.split(":")[1].strip() for line in res.stdout.splitlines()] == ["simbert", "mlm"]
    if not torch.cuda.is_available():
        res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
        assert res.returncode == 1 and res.stderr.strip() == "cuda-check: no GPU is visible to torch"
