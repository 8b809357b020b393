"""Loaders of simkit_eval.data, and the shared fixtures of the eval tests.

The pairs below are invented for these tests (no line of any real dataset).
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from simkit_eval.data import (
    load_cmteb,
    load_senteval,
    load_task,
    read_pairs_table,
    read_pairs_tsv,
    unique_texts,
)

from simkit.errors import InputError

# (sentence1, sentence2, label 0/1): written for these tests.
PAIRS_01 = [
    ("花呗怎么还款", "花呗如何还款", 1), ("花呗的还款日是几号", "借呗可以提前还款吗", 0),
    ("信用卡丢了怎么挂失", "银行卡丢了应该怎么挂失", 1), ("今天北京的天气怎么样", "北京今天天气如何", 1),
    ("明天会下雨吗", "附近有什么好吃的餐厅", 0), ("忘记支付密码了怎么办", "支付密码忘了怎么找回", 1),
    ("电脑开不了机怎么办", "孩子发烧了应该怎么办", 0), ("学习英语有什么好方法", "怎样才能学好英语", 1),
    ("转账多久能到账", "转账到银行卡要多久", 1), ("这个周末适合去爬山吗", "这部电影讲的是什么故事", 0),
    ("如何修改绑定的手机号", "怎么更换绑定手机号码", 1), ("他们在海边散步", "飞机正在起飞", 0),
    ("借呗额度怎么提高", "花呗额度如何提升", 0), ("附近有好吃的吗", "附近有什么好吃的餐厅", 1),
]
# (sentence1, sentence2, label 0-5)
PAIRS_05 = [
    ("一个男人在弹吉他", "一个人在弹吉他", 4), ("一个女人在切洋葱", "一个女人在切菜", 3),
    ("两只狗在草地上奔跑", "两只狗在草地上跑", 5), ("飞机正在起飞", "一架飞机正在起飞", 5),
    ("他们在海边散步", "一个男人在弹吉他", 0), ("一个女人在跳舞", "一个男人在唱歌", 1),
    ("孩子们在公园里玩", "孩子们在操场上玩耍", 3), ("一只猫在睡觉", "一只狗在睡觉", 2),
    ("一个男人在骑马", "一个人在骑自行车", 1), ("一个女人在弹钢琴", "一个女人在弹琴", 4),
    ("天空中有很多云", "今天天空很蓝", 1), ("一个男孩在踢足球", "一个男孩在踢球", 5),
]


def write_task(root: Path, task: str, split: str, pairs, extra_lines: list[str] = ()) -> Path:
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task}.{split}.data"
    lines = [f"{a}\t{b}\t{y}" for a, b, y in pairs] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def make_senteval_dir(root: Path) -> Path:
    """All five tasks, valid split; test splits for STS-B and BQ (rotated pairs)."""
    for i, task in enumerate(("ATEC", "BQ", "LCQMC", "PAWSX")):
        pairs = PAIRS_01[i:] + PAIRS_01[:i]
        write_task(root, task, "valid", pairs)
    write_task(root, "STS-B", "valid", PAIRS_05)
    write_task(root, "STS-B", "test", PAIRS_05[::-1][:10])
    write_task(root, "BQ", "test", PAIRS_01[3:13])
    return root


# ----------------------------------------------------------------------------- tests
def test_senteval_keeps_three_field_lines_like_the_reference(tmp_path):
    extra = ["只有两列\t1", "", "四列\t的\t一行\t1", "  前面有空格\t后面有空格  \t1"]
    path = write_task(tmp_path, "ATEC", "valid", PAIRS_01[:3], extra)
    ds = load_senteval(tmp_path, "ATEC", "valid")
    # the reference: l.strip().split('\t'), keep len == 3
    ref = [ln.strip().split("\t") for ln in path.read_text(encoding="utf-8").splitlines(True)]
    ref = [r for r in ref if len(r) == 3]
    assert list(zip(ds.sentences1, ds.sentences2)) == [(a, b) for a, b, _ in ref]
    assert ds.labels.tolist() == [float(r[2]) for r in ref]
    assert ds.sentences1[-1] == "前面有空格" and ds.sentences2[-1] == "后面有空格  "
    assert (len(ds), ds.skipped, ds.n_lines) == (4, 3, 7)
    assert ds.skipped_lines[0] == f"{path}:4: 2 fields"
    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_split_without_pairs_is_named(tmp_path):
    # was "TF-IDF needs at least one text to fit on" (eval) or "a correlation needs at least 2
    # pairs; got 0" (train --valid), naming no file
    (tmp_path / "ATEC").mkdir()
    (tmp_path / "ATEC" / "ATEC.valid.data").write_text("only one field\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"ATEC\.valid\.data: no 'sentence1<TAB>sentence2<TAB>score' lines "
                                         r"\(1 lines, 1 without 3 fields\)"):
        load_senteval(tmp_path, "ATEC", "valid")


def test_senteval_errors_name_file_line_and_choices(tmp_path):
    write_task(tmp_path, "BQ", "valid", PAIRS_01[:2], ["甲\t乙\t好"])
    with pytest.raises(InputError, match=r"BQ\.valid\.data:3: label '好' is not a number"):
        load_senteval(tmp_path, "BQ", "valid")
    write_task(tmp_path, "LCQMC", "valid", PAIRS_01[:2], ["甲\t乙\t3"])
    with pytest.raises(InputError, match=r"LCQMC\.valid\.data:3: label 3 is outside 0\.\.1"):
        load_senteval(tmp_path, "LCQMC", "valid")
    write_task(tmp_path, "STS-B", "valid", PAIRS_05)
    assert load_senteval(tmp_path, "STS-B", "valid").labels.max() == 5
    with pytest.raises(InputError, match=r"STS-B\.test\.data: no such file; found for STS-B: STS-B\.valid\.data"):
        load_senteval(tmp_path, "STS-B", "test")
    (tmp_path / "STS-B" / "STS-B.train.data").mkdir()
    with pytest.raises(InputError, match=r"STS-B\.train\.data: is a directory; found for STS-B: STS-B\.valid\.data"):
        load_senteval(tmp_path, "STS-B", "train")
    with pytest.raises(InputError, match=r"is not a C-MTEB task \(those are: ATEC, BQ, LCQMC, PAWSX, STS-B\)"):
        load_task(tmp_path, "STSB", "valid")


def test_user_tsv_with_header_and_any_scores(tmp_path):
    f = tmp_path / "mine.tsv"
    f.write_text("s1\ts2\tscore\n苹果\t香蕉\t0.25\n苹果\t苹果\t4.5\n", encoding="utf-8")
    ds = read_pairs_tsv(f, task="mine")
    assert ds.sentences1 == ["苹果", "苹果"] and ds.labels.tolist() == [0.25, 4.5]
    assert ds.skipped == 0


def _write_cmteb(folder: Path, pairs, split_file: str, kind: str) -> Path:
    path = folder / split_file
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"sentence1": a, "sentence2": b, "score": y} for a, b, y in pairs]
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, ["sentence1", "sentence2", "score"])
            w.writeheader()
            w.writerows(rows)
    return path


def test_cmteb_jsonl_and_csv_copies_match_senteval(tmp_path):
    senteval = make_senteval_dir(tmp_path / "senteval")
    cm = tmp_path / "cmteb"
    _write_cmteb(cm / "STSB" / "data", PAIRS_05, "validation-00000-of-00001.jsonl", "jsonl")
    _write_cmteb(cm / "ATEC", PAIRS_01, "validation.csv", "csv")
    for task in ("STS-B", "ATEC"):
        a = load_task(senteval, task, "valid")
        b = load_task(cm, task, "valid")  # auto: no senteval files there
        assert (a.sentences1, a.sentences2, a.labels.tolist()) == (b.sentences1, b.sentences2, b.labels.tolist())
    with pytest.raises(InputError, match=r"ATEC: no test file \(\.jsonl, \.json, \.csv, \.parquet\) for split .test."):
        load_cmteb(cm / "ATEC", "ATEC", "test")
    bad = _write_cmteb(tmp_path / "bad", [("甲", "乙", 1)], "x.jsonl", "jsonl")
    bad.write_text('{"text1": "甲", "text2": "乙", "score": 1}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"row 1: expected the fields sentence1, sentence2, score"):
        read_pairs_table(bad)


def test_cmteb_parquet_and_save_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"sentence1": [a for a, _, _ in PAIRS_05], "sentence2": [b for _, b, _ in PAIRS_05],
            "score": [y for *_, y in PAIRS_05]}
    dd = datasets.DatasetDict({"validation": datasets.Dataset.from_dict(rows),
                               "test": datasets.Dataset.from_dict({k: v[:5] for k, v in rows.items()})})
    dd.save_to_disk(str(tmp_path / "disk" / "STSB"))  # a local copy, as a user would make
    hub = tmp_path / "hub" / "STSB" / "data"
    hub.mkdir(parents=True)
    dd["validation"].to_parquet(str(hub / "validation-00000-of-00001-abc.parquet"))
    for root in (tmp_path / "disk", tmp_path / "hub"):
        ds = load_task(root, "STS-B", "valid", data_format="cmteb")
        assert ds.sentences1 == rows["sentence1"] and ds.labels.tolist() == rows["score"]
    assert len(load_task(tmp_path / "disk", "STS-B", "test")) == 5


def test_unique_texts_rows():
    uniq, (r1, r2) = unique_texts(["甲", "乙", "甲"], ["乙", "丙"])
    assert uniq == ["甲", "乙", "丙"]
    assert np.array(uniq)[r1].tolist() == ["甲", "乙", "甲"] and r2.tolist() == [1, 2]
