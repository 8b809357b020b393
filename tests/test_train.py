"""The trainer: losses, exact resume, and the bad-input cases of the training issue."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from simkit_cli.app import app
from typer.testing import CliRunner

from simkit.errors import InputError
from simkit.models.checkpoint import load_model
from simkit.train.data import load_training_files
from simkit.train.objectives import contrastive_loss, cosent_loss, simbert_losses
from simkit.train.trainer import GROUP_WINDOW, Stream, TrainConfig, Trainer, TrainingError

PAIRS = [
    ("花呗怎么还款", "怎么还花呗", 1), ("借呗可以提前还款吗", "借呗能提前还吗", 1),
    ("明天会下雨吗", "明天下雨吗", 1), ("今天北京的天气怎么样", "北京今天天气如何", 1),
    ("孩子发烧了应该怎么办", "小孩发烧怎么办", 1), ("电脑开不了机怎么办", "电脑无法开机", 1),
    ("花呗怎么还款", "明天会下雨吗", 0), ("借呗可以提前还款吗", "电脑无法开机", 0),
]


@pytest.fixture
def pair_file(tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("".join(f"{a}\t{b}\t{lab}\n" for a, b, lab in PAIRS) + "a line without tabs\n", encoding="utf-8")
    return p


def _trainer(model_dir, cfg: TrainConfig, pair_file):
    model, tok, info = load_model(model_dir)
    pos, lab = load_training_files([pair_file])
    return Trainer(model, tok, info, cfg, pos, lab, device="cpu")


def test_data_reading(pair_file, caplog):
    pos, lab = load_training_files([pair_file])
    assert len(pos) == 6 and len(lab) == 8  # the 2-field line is skipped, and said
    assert "skipped 1 lines" in caplog.text


@pytest.mark.parametrize("label", ["nan", "inf", "-inf"])
def test_non_finite_labels_are_refused_with_their_line(tmp_path, label):
    p = tmp_path / "p.tsv"
    p.write_text(f"花呗怎么还款\t怎么还花呗\t1\n借呗\t借呗能用吗\t{label}\n", encoding="utf-8")
    with pytest.raises(InputError, match=rf"p.tsv:2: label '{label}' is not a finite number"):
        load_training_files([p])


def test_contrastive_positive_is_the_paired_row():
    v = torch.randn(4, 8)
    good = torch.stack([v[0], v[0], v[2], v[2]])  # rows 2i and 2i+1 identical
    bad = torch.stack([v[0], v[2], v[0], v[2]])   # the positive sits in the wrong row
    assert contrastive_loss(good) < contrastive_loss(bad)


def test_cosent_loss_formula():
    cos = torch.tensor([0.9, 0.1, 0.5])
    labels = torch.tensor([2.0, 0.0, 1.0])
    want = torch.log(1 + sum(torch.exp(20 * (cos[j] - cos[i]))
                             for i in range(3) for j in range(3) if labels[i] > labels[j]))
    torch.testing.assert_close(cosent_loss(cos, labels), want)


def test_training_reduces_loss(tiny_roformer_dir, pair_file, tmp_path):
    cfg = TrainConfig(batch_size=3, epochs=6, lr=3e-3, cosent_weight=1.0, cosent_batch_size=8, log_every=1)
    t = _trainer(tiny_roformer_dir, cfg, pair_file)
    t.train(tmp_path / "run")
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["seq2seq"] < log[0]["seq2seq"]
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("group_by_length, micro_batches", [(False, 1), (True, 1), (False, 2)])
def test_resume_is_exact(tiny_bert_dir, pair_file, tmp_path, group_by_length, micro_batches):
    cfg = dict(batch_size=2, epochs=2, lr=1e-3, cosent_weight=0.5, cosent_batch_size=4, checkpoint_every=3, seed=3,
               group_by_length=group_by_length, micro_batches=micro_batches)
    straight = _trainer(tiny_bert_dir, TrainConfig(**cfg), pair_file)
    straight.train(tmp_path / "a")
    # A real interruption: the time budget stops the run (and checkpoints) after one step;
    # a new Trainer resumes it. Weights must match the uninterrupted run bit for bit.
    part = _trainer(tiny_bert_dir, TrainConfig(**cfg, time_budget=0.0), pair_file)
    part.train(tmp_path / "b")
    resumed = _trainer(tiny_bert_dir, TrainConfig(**cfg), pair_file)
    resumed.train(tmp_path / "b", resume_from=tmp_path / "b")
    assert resumed.step == straight.step
    a = straight.model.state_dict()
    for k, v in resumed.model.state_dict().items():
        torch.testing.assert_close(v, a[k], atol=0, rtol=0, msg=k)


def test_resume_with_other_grouping_is_refused(tiny_bert_dir, pair_file, tmp_path):
    _trainer(tiny_bert_dir, TrainConfig(batch_size=2, max_steps=1), pair_file).train(tmp_path / "run")
    grouped = _trainer(tiny_bert_dir, TrainConfig(batch_size=2, max_steps=2, group_by_length=True), pair_file)
    with pytest.raises(TrainingError, match="made without group_by_length, this run is with it"):
        grouped.train(tmp_path / "run", resume_from=tmp_path / "run")
    # A grouped checkpoint resumed with other item lengths (another max_seq_length) is refused.
    cfg = dict(batch_size=2, max_steps=1, group_by_length=True)
    _trainer(tiny_bert_dir, TrainConfig(**cfg), pair_file).train(tmp_path / "g")
    shorter = _trainer(tiny_bert_dir, TrainConfig(**{**cfg, "max_steps": 2}, max_seq_length=8), pair_file)
    with pytest.raises(TrainingError, match="built from other item lengths"):
        shorter.train(tmp_path / "g", resume_from=tmp_path / "g")
    for bad, match in ((dict(group_by_length="false"), "group_by_length='false'"),
                       (dict(objective="mlm", micro_batches=2), "masked-LM loss has no in-batch")):
        with pytest.raises(InputError, match=match):
            _trainer(tiny_bert_dir, TrainConfig(**bad), pair_file)


@pytest.mark.parametrize("bad, match", [
    (dict(batch_size=0), r"batch_size=0; expected an int >= 1"),
    (dict(checkpoint_every=0), r"checkpoint_every=0"), (dict(epochs=0), r"epochs=0"),
    (dict(max_steps=-1), r"max_steps=-1"), (dict(cosent_weight=1.0, cosent_batch_size=0), r"cosent_batch_size=0"),
    (dict(seed=-1), r"seed=-1"), (dict(max_seq_length=2), r"max_seq_length=2; expected an int >= 5"),
    (dict(lr=float("nan")), r"lr=nan; expected a number in \(0, inf\)"), (dict(lr=0.0), r"lr=0.0"),
    (dict(warmup_ratio=float("nan")), r"warmup_ratio=nan"), (dict(warmup_ratio=5.0), r"warmup_ratio=5.0; .*\[0, 1\]"),
    (dict(mask_prob=2.0), r"mask_prob=2.0"), (dict(mask_prob=1.0), r"mask_prob=1.0; .*\[0, 1\)"),
    (dict(cosent_weight=float("inf")), r"cosent_weight=inf"), (dict(time_budget=float("nan")), r"time_budget=nan"),
])
def test_bad_config_values_are_refused_by_name(tiny_bert_dir, pair_file, bad, match):
    # Each of these crashed the run with a traceback (division by zero, NaN to int) or trained nothing.
    with pytest.raises(InputError, match=match):
        _trainer(tiny_bert_dir, TrainConfig(**bad), pair_file)


def test_cli_bad_numbers_are_one_line_errors(pair_file, tmp_path):
    base = ["-q", "train", "simbert", str(pair_file), "-o", str(tmp_path / "run"), "--hidden-size", "32",
            "--num-layers", "1", "--num-heads", "1", "--max-steps", "1"]
    # A value the library refuses is a usage error (exit 2) that names the option, as click's own checks do.
    for extra, message in ((["--batch-size", "0"], "--batch-size 0: expected an int >= 1"),
                           (["--lr", "nan"], "--lr nan: expected a number in (0, inf)"),
                           (["--hidden-size", "0"], "--hidden-size 0: expected an int >= 1"),
                           (["--num-layers", "0"], "--num-layers 0: expected an int >= 1"),
                           (["--hidden-size", "100", "--num-heads", "3"], "--num-heads 3: expected a divisor of "
                                                                          "hidden_size=100"),
                           (["--backbone", "xyz"], "--backbone 'xyz': expected one of: bert, roformer"),
                           (["--cosent-scope", "task"], "--cosent-scope 'task': expected one of: file, batch"),
                           (["--max-steps", "0"], "--max-steps 0: expected an int >= 1")):
        res = CliRunner().invoke(app, [*base, *extra])
        assert res.exit_code == 2, (extra, res.output)
        assert res.output == f"simkit: usage error: {message}\n", res.output


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 400), batch_size=st.integers(1, 9), seed=st.integers(0, 3),
       data=st.data())
def test_grouped_stream_is_a_permutation_of_windowed_batches(n, batch_size, seed, data):
    lengths = np.array(data.draw(st.lists(st.integers(1, 64), min_size=n, max_size=n)))
    stream = Stream(n, batch_size, seed, lengths)
    window = GROUP_WINDOW * batch_size
    for epoch in range(2):
        batches, end = [], False
        while not end:
            idx, end = stream.next()
            batches.append(idx)
        assert stream.epoch == epoch + 1 and len(batches) == stream.steps_per_epoch()
        order = np.concatenate(batches)
        assert sorted(order.tolist()) == list(range(n))  # every item once an epoch
        assert all(len(b) == batch_size for b in batches[:-1])
        # Each batch comes from one window of the epoch's shuffle, and is a slice of that
        # window sorted by length: the lengths of one batch are >= those of the next slice.
        shuffle = np.random.default_rng([seed, epoch]).permutation(n)
        where = np.empty(n, dtype=int)
        where[shuffle] = np.arange(n) // window
        for b in batches:
            assert len(set(where[b].tolist())) == 1
            assert np.all(np.diff(lengths[b]) <= 0)


def test_grouping_cuts_padding_and_keeps_the_data(tiny_bert_dir, tmp_path):
    rng = np.random.default_rng(0)
    chars = list("花呗怎么还款借可以提前吗明天会下雨今北京的气样孩子发烧了应该办电脑开不机")

    def text():
        return "".join(rng.choice(chars, size=int(rng.integers(2, 25))))

    f = tmp_path / "many.tsv"
    f.write_text("".join(f"{text()}\t{text()}\t1\n" for _ in range(600)), encoding="utf-8")
    fill = {}
    for grouped in (False, True):
        t = _trainer(tiny_bert_dir, TrainConfig(batch_size=16, group_by_length=grouped), f)
        seen, masks, end = [], [], False
        while not end:
            idx, end = t.main.next()
            seen.extend(idx.tolist())
            masks.append(t._simbert_batch(idx)["attention_mask"])
        assert sorted(seen) == list(range(len(t.positives)))
        fill[grouped] = sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)
    assert fill[False] < 0.75 and fill[True] > 0.95, fill


@pytest.mark.parametrize("model_dir", ["tiny_bert_dir", "tiny_roformer_dir"])
def test_micro_batches_give_the_batch_losses_with_less_padding(model_dir, pair_file, request):
    # Without dropout, cutting a batch into passes of similar length changes only the padding:
    # the SimBERT losses and the CoSENT vectors equal those of the one padded batch.
    one = _trainer(request.getfixturevalue(model_dir), TrainConfig(batch_size=6), pair_file)
    three = _trainer(request.getfixturevalue(model_dir), TrainConfig(batch_size=6, micro_batches=3), pair_file)
    three.model = one.model.eval()
    idx = np.arange(len(one.positives))
    parts = three._simbert_batches(idx)
    whole = one._simbert_batches(idx)
    assert len(whole) == 1 and len(parts) == 3
    assert sum(b["input_ids"].numel() for b in parts) < whole[0]["input_ids"].numel()
    pad = one.tokenizer.pad_token_id

    def rows(batches):
        return sorted(tuple(t for t in r if t != pad) for b in batches for r in b["input_ids"].tolist())

    assert rows(parts) == rows(whole)
    with torch.no_grad():
        want = simbert_losses(one.model, whole)
        got = simbert_losses(one.model, parts)
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
        texts = [p.a for p in one.labelled]
        torch.testing.assert_close(three._vectors(texts), one._vectors(texts), rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="micro_batches=0"):
        _trainer(request.getfixturevalue(model_dir), TrainConfig(micro_batches=0), pair_file)


def test_resume_from_another_model_is_refused(tiny_bert_dir, tiny_roformer_dir, pair_file, tmp_path):
    t = _trainer(tiny_bert_dir, TrainConfig(batch_size=2, max_steps=1), pair_file)
    t.train(tmp_path / "run")
    other = _trainer(tiny_roformer_dir, TrainConfig(batch_size=2, max_steps=2), pair_file)
    with pytest.raises(TrainingError, match="checkpoint of another model"):
        other.train(tmp_path / "run", resume_from=tmp_path / "run")


def test_nan_loss_stops_and_says_when(tiny_bert_dir, pair_file, tmp_path):
    t = _trainer(tiny_bert_dir, TrainConfig(batch_size=2, max_steps=5, checkpoint_every=1), pair_file)
    orig, calls = t._losses, []

    def poisoned():
        losses, end = orig()
        calls.append(1)
        if len(calls) == 3:
            losses["seq2seq"] = losses["seq2seq"] * float("nan")
        return losses, end

    t._losses = poisoned
    with pytest.raises(TrainingError, match="at step 3"):
        t.train(tmp_path / "run")
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if not p.name.endswith(".lock"))
    assert kept == ["step-0000001", "step-0000002"]  # the last good ones survive


def test_no_positives_is_an_error(tiny_bert_dir, tmp_path):
    p = tmp_path / "neg.tsv"
    p.write_text("甲\t乙\t0\n丙\t丁\t0\n", encoding="utf-8")
    with pytest.raises(InputError, match="no positive pairs|has none"):
        _trainer(tiny_bert_dir, TrainConfig(), p)


def test_cli_from_scratch_with_valid(pair_file, tmp_path):
    res = CliRunner().invoke(app, ["-q", "train", "simbert", str(pair_file), "-o", str(tmp_path / "run"),
                                   "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2",
                                   "--epochs", "2", "--batch-size", "4", "--valid", str(pair_file),
                                   "--cosent-weight", "1", "--group-by-length", "--micro-batches", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["best_main_score"] is not None and out["steps"] == 4
    config = json.loads((tmp_path / "run" / "train_config.json").read_text())["train_config"]
    assert config["group_by_length"] is True and config["micro_batches"] == 2
    model, tok, _ = load_model(out["model"])
    assert tok.vocab_size > 20 and model.lm_head is not None


def test_cli_cosent(pair_file, tiny_roformer_dir, tmp_path):
    res = CliRunner().invoke(app, ["-q", "train", "cosent", str(pair_file), "--init", str(tiny_roformer_dir),
                                   "-o", str(tmp_path / "run"), "--max-steps", "2"])
    assert res.exit_code == 0, res.output


def test_cosent_groups_rank_only_within_a_group():
    # A 0-5 graded pair and a 0/1 pair: across files the labels do not share a scale.
    cos = torch.tensor([0.9, 0.1])
    labels = torch.tensor([1.0, 3.0])
    assert cosent_loss(cos, labels) > 1.0                                 # ranked against each other
    assert cosent_loss(cos, labels, groups=torch.tensor([0, 1])) == 0.0  # log(1 + empty sum)
    same = cosent_loss(cos, labels, groups=torch.tensor([4, 4]))
    torch.testing.assert_close(same, cosent_loss(cos, labels))


def test_training_files_remember_their_source(pair_file, tmp_path):
    graded = tmp_path / "sts.tsv"
    graded.write_text("甲\t乙\t5\n丙\t丁\t0\n", encoding="utf-8")
    _, lab = load_training_files([pair_file, graded])
    assert [p.source for p in lab] == [0] * 8 + [1, 1]


def test_cosent_scope_file_needs_two_labels_within_one_file(tiny_bert_dir, tmp_path):
    ones, zeros = tmp_path / "ones.tsv", tmp_path / "zeros.tsv"
    ones.write_text("花呗怎么还款\t怎么还花呗\t1\n", encoding="utf-8")
    zeros.write_text("花呗怎么还款\t明天会下雨吗\t0\n", encoding="utf-8")
    model, tok, info = load_model(tiny_bert_dir)
    _, lab = load_training_files([ones, zeros])
    with pytest.raises(InputError, match="within any one file"):
        Trainer(model, tok, info, TrainConfig(objective="cosent"), (), lab, device="cpu")
    Trainer(model, tok, info, TrainConfig(objective="cosent", cosent_scope="batch"), (), lab, device="cpu")
    with pytest.raises(InputError, match="cosent_scope='task'; expected one of: file, batch"):
        Trainer(model, tok, info, TrainConfig(objective="cosent", cosent_scope="task"), (), lab, device="cpu")


def test_cli_extend_vocab(tiny_roformer_dir, tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("花呗怎么还款？\t怎么还花呗？\t1\n借呗（可以）提前还款吗\t借呗能提前还吗\t1\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["-q", "train", "simbert", str(p), "--init", str(tiny_roformer_dir),
                                   "-o", str(tmp_path / "run"), "--max-steps", "1", "--extend-vocab"])
    assert res.exit_code == 0, res.output
    _, tok, _ = load_model(json.loads(res.stdout)["model"])
    ids = tok.tokenize_ids(["还款？（可以）"])[0]
    assert tok.unk_token_id not in ids
    res = CliRunner().invoke(app, ["-q", "train", "simbert", str(p), "-o", str(tmp_path / "scratch"),
                                   "--extend-vocab"])
    assert res.exit_code == 1 and "--init" in res.output


# -- masked LM and supervised SimCSE (the pre-training and NLI stages of a model recipe) ----
NLI = [("一个男人在弹吉他", "有人在演奏乐器", "entailment"), ("一个男人在弹吉他", "这个男人在睡觉", "contradiction"),
       ("一个男人在弹吉他", "他在弹一首老歌", "neutral"), ("两只狗在草地上奔跑", "动物在户外", "entailment"),
       ("两只狗在草地上奔跑", "狗在家里睡觉", "contradiction"), ("孩子们在踢足球", "孩子们在运动", "entailment"),
       ("孩子们在踢足球", "孩子们在看书", "contradiction"), ("孩子们在踢足球", "没有人", "contradiction")]


@pytest.fixture
def nli_file(tmp_path):
    p = tmp_path / "nli.tsv"
    p.write_text("".join(f"{a}\t{b}\t{y}\n" for a, b, y in NLI), encoding="utf-8")
    return p


def test_nli_triples_and_sentences(nli_file, pair_file, tmp_path):
    from simkit.train.data import read_nli_triples, sentences_of

    triples = read_nli_triples(nli_file)
    assert ("一个男人在弹吉他", "有人在演奏乐器", "这个男人在睡觉") in triples
    assert len(triples) == 4  # the third premise has two contradictions: its entailment is reused
    assert all(t[1] != t[2] for t in triples) and not any("一首老歌" in x for t in triples for x in t)
    bad = tmp_path / "bad.tsv"
    bad.write_text("甲\t乙\tmaybe\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.tsv:1: label 'maybe'"):
        read_nli_triples(bad)
    txt = tmp_path / "s.txt"
    txt.write_text("花呗怎么还款\n\n新的句子\n", encoding="utf-8")
    sents = sentences_of([txt, pair_file])
    assert sents[:2] == ["花呗怎么还款", "新的句子"] and "怎么还花呗" in sents and len(sents) == len(set(sents))


def test_masking_follows_bert():
    from simkit.train.objectives import mask_tokens

    torch.manual_seed(0)
    ids = torch.randint(5, 100, (64, 40))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS], [SEP]
    mask = torch.ones_like(ids)
    mask[:, 30:] = 0
    corrupted, chosen = mask_tokens(ids, mask, torch.tensor([2, 3, 0]), mask_token_id=4, vocab_size=100)
    assert not chosen[:, 0].any() and not chosen[:, 30:].any()  # never special or padding
    share = chosen.float().sum() / (mask[:, 1:30].sum())
    assert 0.12 < share < 0.18
    masked = (corrupted == 4) & chosen
    kept = (corrupted == ids) & chosen
    assert 0.75 < masked.sum() / chosen.sum() < 0.85 and 0.05 < kept.sum() / chosen.sum() < 0.16
    assert torch.equal(corrupted[~chosen], ids[~chosen])
    one = torch.tensor([[2, 7, 3]])
    assert mask_tokens(one, torch.ones_like(one), torch.tensor([2, 3, 0]), 4, 100, prob=0.01)[1].sum() == 1


def test_simcse_loss_prefers_the_entailed_row():
    from simkit.train.objectives import simcse_loss

    a = torch.randn(4, 8)
    noise = torch.randn(4, 8)
    assert simcse_loss(a, a + 0.01 * noise, noise) < simcse_loss(a, noise, a + 0.01 * noise)


def test_mlm_and_simcse_objectives_train_and_resume(tiny_roformer_dir, nli_file, pair_file, tmp_path):
    from simkit.train.data import read_nli_triples, sentences_of

    sents, triples = sentences_of([pair_file, nli_file]), read_nli_triples(nli_file)

    def make(cfg):
        model, tok, info = load_model(tiny_roformer_dir)
        pos, lab = load_training_files([pair_file])
        return Trainer(model, tok, info, cfg, pos, lab, sents, triples, device="cpu")

    t = make(TrainConfig(objective="mlm", mlm_batch_size=8, epochs=8, lr=3e-3, log_every=1, simcse_weight=1.0,
                         simcse_batch_size=4))
    t.train(tmp_path / "mlm")
    log = [json.loads(x) for x in (tmp_path / "mlm" / "log.jsonl").read_text().splitlines()]
    assert {"mlm", "simcse"} <= set(log[0]) and log[-1]["mlm"] < log[0]["mlm"]
    # SimBERT with both extra losses resumes bit for bit (every stream's position is saved).
    cfg = dict(batch_size=2, epochs=2, lr=1e-3, mlm_weight=0.5, mlm_batch_size=4, simcse_weight=0.5,
               simcse_batch_size=2, checkpoint_every=3, seed=3)
    straight = make(TrainConfig(**cfg))
    straight.train(tmp_path / "a")
    make(TrainConfig(**cfg, time_budget=0.0)).train(tmp_path / "b")
    resumed = make(TrainConfig(**cfg))
    resumed.train(tmp_path / "b", resume_from=tmp_path / "b")
    a = straight.model.state_dict()
    for k, v in resumed.model.state_dict().items():
        torch.testing.assert_close(v, a[k], atol=0, rtol=0, msg=k)
    with pytest.raises(InputError, match="SimCSE loss needs NLI triples"):
        Trainer(*load_model(tiny_roformer_dir), TrainConfig(objective="simcse"), device="cpu")
    with pytest.raises(InputError, match="masked-LM loss needs sentences"):
        Trainer(*load_model(tiny_roformer_dir), TrainConfig(mlm_weight=1.0), [("a", "b")], device="cpu")


def test_cli_mlm_then_simcse(nli_file, pair_file, tiny_roformer_dir, tmp_path):
    txt = tmp_path / "s.txt"
    txt.write_text("花呗怎么还款\n今天天气很好\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["-q", "train", "mlm", str(txt), str(pair_file), str(nli_file), "--init",
                                   str(tiny_roformer_dir), "-o", str(tmp_path / "mlm"), "--max-steps", "2",
                                   "--mlm-batch-size", "8"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["sentences"] > 10 and out["positives"] == 0 and out["steps"] == 2
    res = CliRunner().invoke(app, ["-q", "train", "simcse", str(nli_file), "--init", out["model"],
                                   "-o", str(tmp_path / "simcse"), "--max-steps", "2", "--mlm-weight", "0.5",
                                   "--sentences", str(txt)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["triples"] == 4
    res = CliRunner().invoke(app, ["-q", "train", "simcse", str(pair_file), "--init", out["model"],
                                   "-o", str(tmp_path / "bad")])
    assert res.exit_code == 1 and "label" in res.output and len(res.output.strip().splitlines()) == 1
