"""Progressive stacking: a deeper model that starts from a trained shallow one."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from cli.app import app
from simkit.errors import InputError
from simkit.generate import Paraphraser
from simkit.models.checkpoint import load_model, save_model
from simkit.models.factory import stack_layers

SOURCES = ["花呗怎么还款", "借呗可以提前还吗"]


def _forward(model, tok, texts):
    ids, _ = tok.encode_batch(texts, 32)
    batch = torch.nn.utils.rnn.pad_sequence([torch.tensor(x) for x in ids], batch_first=True)
    att = (batch != tok.pad_token_id).long()
    with torch.no_grad():
        return model(batch, att).hidden_states


@pytest.mark.parametrize("num_layers", [4, 5])
def test_stack_layers_copies_layers_in_order(tiny_model_dir, num_layers):
    model, tok, info = load_model(tiny_model_dir)  # 2 layers
    before = {k: v.clone() for k, v in model.state_dict().items()}
    deep = stack_layers(model, num_layers)
    assert deep.config.num_hidden_layers == len(deep.backbone.encoder.layer) == num_layers
    assert model.config.num_hidden_layers == 2  # the input model is untouched
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    state = deep.state_dict()
    for i in range(num_layers):
        for name, w in model.backbone.encoder.layer[i % 2].state_dict().items():
            assert torch.equal(state[f"backbone.encoder.layer.{i}.{name}"], w), (i, name)
    for key in ("backbone.embeddings.word_embeddings.weight", "pooler.dense.weight", "lm_head.bias"):
        assert torch.equal(state[key], before[key])
    # Same first layers, same input: the deep model's hidden state after layer 2 is the
    # shallow model's output, and layer 3 applies layer 0 again to it.
    shallow, stacked = _forward(model, tok, SOURCES), _forward(deep, tok, SOURCES)
    torch.testing.assert_close(stacked[2], shallow[2])
    assert not torch.allclose(stacked[3], shallow[2])
    # each new layer has its own index (the KV cache of generation is addressed by it)
    assert [layer.attention.self.layer_idx for layer in deep.backbone.encoder.layer] == list(range(num_layers))


def test_stacked_model_generates_the_same_before_and_after_saving(tiny_roformer_dir, tmp_path):
    model, tok, info = load_model(tiny_roformer_dir)
    deep = stack_layers(model, 4)
    live = Paraphraser.from_model(deep, tok, info).generate_ids(SOURCES, n=2, temperature=0, max_new_tokens=12)
    save_model(deep, tok, info, tmp_path / "deep")
    again = Paraphraser(tmp_path / "deep").generate_ids(SOURCES, n=2, temperature=0, max_new_tokens=12)
    assert live == again


def test_stack_layers_refuses_to_shrink(tiny_bert_dir):
    model, _, _ = load_model(tiny_bert_dir)
    with pytest.raises(InputError, match="num_layers=1 is below the model's 2 layers"):
        stack_layers(model, 1)


def test_cli_stack_layers(tiny_roformer_dir, tmp_path):
    p = tmp_path / "pairs.tsv"
    p.write_text("花呗怎么还款\t怎么还花呗\t1\n借呗可以提前还款吗\t借呗能提前还吗\t1\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["-q", "train", "simbert", str(p), "--init", str(tiny_roformer_dir),
                                   "-o", str(tmp_path / "run"), "--max-steps", "1", "--stack-layers", "3"])
    assert res.exit_code == 0, res.output
    model, _, _ = load_model(json.loads(res.stdout)["model"])
    assert model.config.num_hidden_layers == 3
    res = CliRunner().invoke(app, ["-q", "train", "simbert", str(p), "-o", str(tmp_path / "scratch"),
                                   "--stack-layers", "3"])
    assert res.exit_code == 1 and "--init" in res.output
    # 0 is a value, not "unset": it is refused, not silently ignored
    res = CliRunner().invoke(app, ["-q", "train", "simbert", str(p), "--init", str(tiny_roformer_dir),
                                   "-o", str(tmp_path / "zero"), "--stack-layers", "0"])
    assert res.exit_code == 1 and "num_layers=0 is below" in res.output
