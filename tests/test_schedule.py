"""The learning-rate schedules: by steps (the default) and by the time budget."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from simkit_cli.app import app
from typer.testing import CliRunner

import simkit.train.schedule as schedule
from simkit.errors import InputError
from simkit.models.checkpoint import load_model
from simkit.train.data import load_training_files
from simkit.train.schedule import Clock, linear_schedule, make_optimizer
from simkit.train.trainer import TrainConfig, Trainer

PAIRS = [("花呗怎么还款", "怎么还花呗"), ("借呗可以提前还款吗", "借呗能提前还吗"), ("明天会下雨吗", "明天下雨吗"),
         ("今天北京的天气怎么样", "北京今天天气如何"), ("孩子发烧了应该怎么办", "小孩发烧怎么办")]


class FakeTime:
    """A perf_counter that moves ``tick`` seconds per call: the run's clock without wall time."""

    def __init__(self, tick: float):
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


@given(warmup=st.floats(0.0, 0.9), p=st.floats(0.0, 1.0), q=st.floats(0.0, 1.0))
def test_linear_schedule_rises_then_falls_to_zero(warmup, p, q):
    f = linear_schedule(warmup)
    assert 0.0 <= f(p) <= 1.0 + 1e-9 and f(1.0) == 0.0
    lo, hi = sorted((p, q))
    if hi <= warmup:
        assert f(lo) <= f(hi) + 1e-12
    if lo >= warmup:
        assert f(lo) + 1e-12 >= f(hi)


def test_time_schedule_reads_the_clock(monkeypatch):
    fake = FakeTime(0.0)
    monkeypatch.setattr(schedule, "time", fake)
    model = torch.nn.Linear(2, 2)
    cfg = TrainConfig(lr=1.0, warmup_ratio=0.2, time_budget=10.0, lr_schedule="time")
    clock = Clock()
    opt, sched = make_optimizer(model, cfg, total_steps=1000, clock=clock)
    rates = {}
    for t in (1.0, 2.0, 6.0, 10.0, 30.0):
        fake.now = t  # the clock started at 0
        opt.step()
        sched.step()
        rates[t] = sched.get_last_lr()[0]
    assert rates == pytest.approx({1.0: 0.5, 2.0: 1.0, 6.0: 0.5, 10.0: 0.0, 30.0: 0.0})
    # A resumed run's clock starts where the checkpoint's stopped.
    clock.before, clock.start = 5.0, 0.0
    fake.now = 1.0
    opt.step()
    sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(0.5)


def test_steps_schedule_warms_up_from_the_first_step_and_ends_at_zero():
    model = torch.nn.Linear(2, 2)
    opt, sched = make_optimizer(model, TrainConfig(lr=1.0, warmup_ratio=0.2), total_steps=10)
    rates = [sched.get_last_lr()[0]]
    for _ in range(10):
        opt.step()
        sched.step()
        rates.append(sched.get_last_lr()[0])
    assert rates == pytest.approx([0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0])
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decay == {id(model.weight)}  # no decay on biases (nor LayerNorm weights)


def _trainer(model_dir, cfg, tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("".join(f"{a}\t{b}\t1\n" for a, b in PAIRS), encoding="utf-8")
    model, tok, info = load_model(model_dir)
    pos, lab = load_training_files([p])
    return Trainer(model, tok, info, cfg, pos, lab, device="cpu")


def _log(run):
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"lr"' in x]


def test_time_schedule_ends_annealed_at_the_budget(tiny_bert_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(schedule, "time", FakeTime(0.05))
    cfg = TrainConfig(batch_size=2, epochs=1000, lr=1e-3, warmup_ratio=0.1, time_budget=2.0,
                      lr_schedule="time", log_every=1, seed=1)
    t = _trainer(tiny_bert_dir, cfg, tmp_path)
    with caplog.at_level("INFO", logger="simkit.train.trainer"):
        t.train(tmp_path / "run")
    rates = [r["lr"] for r in _log(tmp_path / "run")]
    assert 5 < t.step < t.total_steps()          # the budget ended it, not the epochs
    assert max(rates) == pytest.approx(1e-3, rel=0.2)
    assert rates[-1] < 0.1 * max(rates)          # annealed, not cut off at full rate
    assert rates.index(max(rates)) < len(rates) // 2
    assert "time budget of 2.0s spent" in caplog.text
    state = torch.load(sorted((tmp_path / "run" / "checkpoints").glob("step-*"))[-1] / "trainer_state.pt",
                       weights_only=True)
    assert state["elapsed"] > 2.0


def test_time_schedule_counts_the_time_before_a_resume(tiny_bert_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(schedule, "time", FakeTime(0.05))
    cfg = dict(batch_size=2, epochs=1000, lr=1e-3, time_budget=2.0, lr_schedule="time", log_every=1, seed=1)
    first = _trainer(tiny_bert_dir, TrainConfig(**cfg, max_steps=3), tmp_path)
    first.train(tmp_path / "run")
    assert "the steps ran out (3)" in caplog.text  # ended on steps, before the rate reached zero
    spent = first.clock.elapsed()
    resumed = _trainer(tiny_bert_dir, TrainConfig(**cfg, max_steps=1000), tmp_path)
    resumed.train(tmp_path / "run", resume_from=tmp_path / "run")
    assert 0.0 < resumed.clock.before <= spent
    assert 3 < resumed.step < 1000
    assert _log(tmp_path / "run")[-1]["lr"] < 1e-4
    # Resumed once more, the spent run adds no step.
    again = _trainer(tiny_bert_dir, TrainConfig(**cfg, max_steps=1000), tmp_path)
    with caplog.at_level("INFO", logger="simkit.train.trainer"):
        again.train(tmp_path / "run", resume_from=tmp_path / "run")
    assert again.step == resumed.step and "already spent" in caplog.text


def test_time_schedule_needs_a_budget(tiny_bert_dir, tmp_path):
    for bad, match in ((dict(lr_schedule="time"), "give time_budget"),
                       (dict(lr_schedule="time", time_budget=0.0), "give time_budget"),
                       (dict(lr_schedule="cosine"), "unknown lr_schedule 'cosine'")):
        with pytest.raises(InputError, match=match):
            _trainer(tiny_bert_dir, TrainConfig(**bad), tmp_path)
    res = CliRunner().invoke(app, ["-q", "train", "simbert", str(tmp_path / "pairs.tsv"), "-o",
                                   str(tmp_path / "r"), "--lr-schedule", "time"])
    assert res.exit_code == 1 and "--time-budget" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
