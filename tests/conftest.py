"""Shared fixtures: tiny BERT and RoFormer models built from configs, saved, loaded back.

Everything is offline and seeded. The vocabulary is the characters of ``TEXTS`` plus the
special tokens (a few hundred CJK characters), so the models run the real tokenizer path.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)

TEXTS = [
    "花呗怎么还款", "花呗的还款日是每个月几号", "怎样提前还清花呗的欠款", "借呗可以提前还款吗",
    "信用卡丢了应该怎么挂失", "如何修改银行卡绑定的手机号", "转账到别人的银行卡多久能到账",
    "忘记支付密码了怎么办", "今天北京的天气怎么样", "明天会下雨吗", "这个周末适合去爬山吗",
    "附近有什么好吃的餐厅", "孩子发烧了应该怎么办", "学习英语有什么好方法", "电脑开不了机怎么办",
    "一个男人在弹吉他", "一个女人在切洋葱", "两只狗在草地上奔跑", "飞机正在起飞", "他们在海边散步",
    "Python 3.11 和 numpy", "今天天气不错，我们去公园散步吧！", "这部电影讲的是什么故事",
]


def _make(tmp_path_factory, backbone: str, name: str):
    from simkit.models.checkpoint import ModelInfo, save_model
    from simkit.models.factory import build_vocab, new_model

    model, tok = new_model(backbone, build_vocab(TEXTS), seed=0, hidden_size=32, num_layers=2,
                           num_heads=2, intermediate_size=64, max_position=128)
    path = tmp_path_factory.mktemp(name) / "model"
    save_model(model, tok, ModelInfo(backbone, pooling="pooler", max_seq_length=32,
                                     source=f"tiny-{backbone}"), path)
    return path


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A saved simkit model dir: BERT backbone, hidden 32, 2 layers, pooler + LM head."""
    return _make(tmp_path_factory, "bert", "tiny-bert")


@pytest.fixture(scope="session")
def tiny_roformer_dir(tmp_path_factory):
    """A saved simkit model dir: RoFormer backbone, hidden 32, 2 layers, pooler + LM head."""
    return _make(tmp_path_factory, "roformer", "tiny-roformer")


@pytest.fixture(scope="session", params=["bert", "roformer"])
def tiny_model_dir(request, tiny_bert_dir, tiny_roformer_dir):
    return tiny_bert_dir if request.param == "bert" else tiny_roformer_dir


@pytest.fixture
def texts():
    return list(TEXTS)
