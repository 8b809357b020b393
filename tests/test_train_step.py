"""One training step's shape: how many encoder passes it makes, and what makes the host wait.

On a GPU a small model's step is bound by the work per operation and by every point where
the host waits for the device (a boolean index, ``.item()``, ``if tensor``). These tests run
on the CPU and check the contract by counting: passes through the encoder, and the
dispatched operations that would wait.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

import simkit.train.trainer as trainer_module
from simkit.models.checkpoint import load_model
from simkit.train.data import LabelledPair
from simkit.train.objectives import cosent_loss, mask_tokens
from simkit.train.trainer import TrainConfig, Trainer, TrainingError

POSITIVES = [("花呗怎么还款", "怎么还花呗"), ("借呗可以提前还款吗", "借呗能提前还吗"),
             ("明天会下雨吗", "明天下雨吗"), ("孩子发烧了应该怎么办", "小孩发烧怎么办")]
LABELLED = [LabelledPair(a, b, float(y), source=s) for (a, b), y, s in zip(
    POSITIVES + [("花呗怎么还款", "明天会下雨吗"), ("电脑开不了机怎么办", "电脑无法开机")],
    [1, 1, 1, 0, 0, 1], [0, 0, 1, 1, 0, 1], strict=True)]
TRIPLES = [("一个男人在弹吉他", "有人在演奏乐器", "这个男人在睡觉"),
           ("两只狗在草地上奔跑", "动物在户外", "狗在家里睡觉"),
           ("孩子们在踢足球", "孩子们在运动", "孩子们在看书")]


class _Waits(TorchDispatchMode):
    """Counts the dispatched operations that make the host wait for a GPU."""

    def __init__(self):
        super().__init__()
        self.seen: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        indices = args[1] if name.startswith("index") and len(args) > 1 else ()
        if name in ("_local_scalar_dense", "nonzero", "is_nonzero", "masked_select") or any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ()):
            self.seen[name] += 1
        return func(*args, **(kwargs or {}))


def _trainer(model_dir, **cfg) -> Trainer:
    model, tok, info = load_model(model_dir)
    config = TrainConfig(**{"batch_size": 4, "cosent_batch_size": 6, "simcse_batch_size": 3, "cosent_weight": 1.0,
                            "simcse_weight": 1.0, "max_steps": 4, "epochs": 100, "log_every": 1000, "checkpoint_every": 1000,
                            **cfg})
    return Trainer(model, tok, info, config, POSITIVES, LABELLED, triples=TRIPLES, device="cpu")


def test_cosent_and_simcse_share_one_encoder_pass(tiny_roformer_dir):
    t = _trainer(tiny_roformer_dir)
    calls = []
    t.model.register_forward_hook(lambda m, args, kwargs, out: calls.append(kwargs.get("unilm", False)),
                                  with_kwargs=True)
    losses, _ = t._losses()
    assert set(losses) == {"seq2seq", "contrastive", "cosent", "simcse"}
    assert sorted(calls) == [False, True]  # one UniLM pass for SimBERT, one for all single sentences


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_one_pass_gives_the_losses_of_separate_passes(tiny_roformer_dir, micro_batches):
    from simkit.train.objectives import simcse_loss

    t = _trainer(tiny_roformer_dir, micro_batches=micro_batches)
    t.model.eval()  # no dropout: the padding of a larger pass must not change a sentence's vector
    with torch.no_grad():
        got = t._single_losses(torch.arange(6).numpy(), torch.arange(3).numpy())
        va, vb = t._vectors([p.a for p in LABELLED]), t._vectors([p.b for p in LABELLED])
        cos = torch.nn.functional.cosine_similarity(va, vb, dim=-1)
        want_cosent = cosent_loss(cos, torch.tensor([p.label for p in LABELLED]),
                                  groups=torch.tensor([p.source for p in LABELLED]))
        want_simcse = simcse_loss(*(t._vectors([x[k] for x in TRIPLES]) for k in range(3)))
    torch.testing.assert_close(got["cosent"], want_cosent, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["simcse"], want_simcse, rtol=1e-5, atol=1e-5)


def test_cosent_and_masking_never_wait_for_the_device():
    g = torch.Generator().manual_seed(0)
    cos, labels = torch.rand(12, generator=g), torch.randint(0, 3, (12,), generator=g).float()
    ids = torch.randint(5, 50, (4, 9), generator=g)
    with _Waits() as w:
        cosent_loss(cos, labels, groups=torch.tensor([0, 1] * 6))
        mask_tokens(ids, torch.ones_like(ids), torch.tensor([0, 1, 2]), 3, 50, prob=0.0)
    assert not w.seen, w.seen


def test_masking_still_chooses_one_target_when_chance_chose_none():
    ids = torch.tensor([[2, 7, 8, 9, 1, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    corrupted, chosen = mask_tokens(ids, mask, torch.tensor([0, 1, 2]), 3, 50, prob=0.0)
    assert chosen.tolist() == [[False, True, False, False, False, False]]  # the first real token
    none = mask_tokens(torch.tensor([[2, 1, 0]]), torch.tensor([[1, 1, 0]]), torch.tensor([0, 1, 2]), 3, 50, 0.0)
    assert not none[1].any()  # only special tokens: nothing to choose


def test_steps_between_checks_never_ask_the_device_about_the_loss(tiny_roformer_dir, tmp_path, monkeypatch):
    """The loss is checked for NaN at logs and checkpoints only: a step between them adds no
    wait of the trainer's own (the encoder's, e.g. its padding check, are counted apart)."""
    counts = []
    adamw_step = torch.optim.AdamW.step

    def step_unwatched(self, *a, **k):  # AdamW on a CPU reads its step counts on the host;
        with _disable_current_modes():  # on a GPU they stay on the host: no wait there
            return adamw_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", step_unwatched)
    check, checked_at = trainer_module._check_finite, []

    def check_unwatched(unchecked, out):  # the checks themselves wait, by design
        checked_at.append(unchecked[-1][0])
        with _disable_current_modes():
            return check(unchecked, out)

    monkeypatch.setattr(trainer_module, "_check_finite", check_unwatched)
    for steps in (2, 6):
        t = _trainer(tiny_roformer_dir, batch_size=1, max_steps=steps)  # an epoch is 4 steps
        with _Waits() as w:
            t.train(tmp_path / f"run{steps}")
        counts.append(w.seen)
    assert checked_at == [2, 4, 6]  # the end of the 2-step run; an epoch's end and the end of the other
    per_step = {k: (counts[1][k] - counts[0][k]) / 4 for k in counts[1]}
    # left: the encoder's padding check (transformers' `mask.all()`, once per pass of single
    # sentences) and the seq2seq target positions (one `nonzero` in the UniLM pass);
    # before: a boolean index more in that pass and in its backward, one in CoSENT, one
    # `mask.all()` more per pass (five passes of single sentences), and the NaN check
    assert per_step == {"_local_scalar_dense": 1.0, "nonzero": 1.0}, per_step


def test_a_nan_loss_is_caught_at_the_next_check_and_named_by_its_step(tiny_roformer_dir, tmp_path):
    # an epoch of the positives is 4 steps: the checks fall at steps 4, 5 (log, checkpoint), 8
    t = _trainer(tiny_roformer_dir, batch_size=1, max_steps=10, log_every=5, checkpoint_every=5)
    orig, calls = t._losses, []

    def poisoned():
        losses, end = orig()
        calls.append(1)
        if len(calls) == 7:
            losses["cosent"] = losses["cosent"] * float("inf")
        return losses, end

    t._losses = poisoned
    with pytest.raises(TrainingError, match=r"loss became (inf|nan) at step 7; .*last good checkpoint"):
        t.train(tmp_path / "run")
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if not p.name.endswith(".lock"))
    assert kept == ["step-0000005"]  # nothing from after the bad step was written
    assert len(calls) == 8  # found at the check after step 8, the epoch's end


def test_an_mlm_step_waits_once(tiny_roformer_dir):
    """Masking on the device and the targets' positions found once: one wait a step (the
    `nonzero` of those positions), besides the encoder's own padding check."""
    model, tok, info = load_model(tiny_roformer_dir)
    t = Trainer(model, tok, info, TrainConfig(objective="mlm", mlm_batch_size=4, max_steps=2), [],
                sentences=[a for a, _ in POSITIVES] + [b for _, b in POSITIVES], device="cpu")
    with _Waits() as w:
        losses, _ = t._losses()
        losses["mlm"].backward()
    assert dict(w.seen) == {"nonzero": 1, "_local_scalar_dense": 1}, w.seen
