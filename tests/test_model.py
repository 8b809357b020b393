"""The SimBERT model: UniLM mask, pooler, loading and saving (BERT and RoFormer backbones)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from simkit.errors import FormatError, InputError
from simkit.models.checkpoint import load_model
from simkit.models.simbert import unilm_attention_mask


def test_unilm_mask_matches_hand_built():
    types = torch.tensor([[0, 0, 0, 1, 1, 1, 0]])  # last position is padding
    attn = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    allowed = unilm_attention_mask(types, attn, torch.float32)[0, 0] == 0
    s0, s1 = [0, 1, 2], [3, 4, 5]
    want = torch.zeros(7, 7, dtype=torch.bool)
    for i in range(7):
        for j in s0:  # everyone sees all of segment 0
            want[i, j] = True
        if i in s1 or i == 6:
            for j in s1:
                want[i, j] = j <= i or i == 6  # segment 1: causal within itself
    want[:, 6] = False  # nobody attends to padding
    assert torch.equal(allowed, want)


def _pair(tok, a, b):
    ids, types = tok.encode_pair(tok.tokenize_ids([a])[0], tok.tokenize_ids([b])[0])
    return torch.tensor([ids]), torch.tensor([types])


def test_unilm_mask_effect(tiny_model_dir):
    """Changing a segment-1 token leaves segment 0 and earlier segment-1 positions unchanged."""
    model, tok, _ = load_model(tiny_model_dir)
    ids, types = _pair(tok, "花呗怎么还款", "怎样还花呗")
    first_s1 = int(types[0].tolist().index(1))
    pos = first_s1 + 2
    ids2 = ids.clone()
    ids2[0, pos] = tok.hf.convert_tokens_to_ids("天")
    with torch.no_grad():
        h1 = model(ids, None, types, unilm=True).last_hidden_state[0]
        h2 = model(ids2, None, types, unilm=True).last_hidden_state[0]
    diff = (h1 - h2).abs().amax(-1)
    assert diff[:pos].max() == 0  # segment 0 and the past of segment 1: bit-identical
    assert (diff[pos:] > 1e-4).all()  # the changed token and everything after it move
    # without the UniLM mask the change would leak backwards: the test can fail
    with torch.no_grad():
        b1 = model(ids, None, types, unilm=False).last_hidden_state[0]
        b2 = model(ids2, None, types, unilm=False).last_hidden_state[0]
    assert (b1 - b2).abs().amax(-1)[:pos].max() > 1e-4


def test_pooler_is_linear(tiny_bert_dir):
    model, _, _ = load_model(tiny_bert_dir)
    x = torch.randn(3, model.config.hidden_size)
    W, b = model.pooler.dense.weight, model.pooler.dense.bias
    torch.testing.assert_close(model.pool_cls(x), x @ W.T + b)


def test_lm_head_tied_to_embeddings(tiny_roformer_dir):
    model, _, _ = load_model(tiny_roformer_dir)
    h = torch.randn(2, model.config.hidden_size)
    lm = model.lm_head
    t = lm.transform.LayerNorm(lm.act(lm.transform.dense(h)))
    torch.testing.assert_close(model.lm_logits(h), t @ model.word_embeddings.T + lm.bias)
    assert "lm_head.decoder.weight" not in model.state_dict()


def test_hf_directory_loads_with_tanh_pooler_and_mlm_head(tmp_path, tiny_bert_dir):
    from transformers import BertConfig, BertForMaskedLM, BertModel

    _, tok, _ = load_model(tiny_bert_dir)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(1)
    mlm = BertForMaskedLM(cfg).eval()
    d = tmp_path / "hf-mlm"
    mlm.save_pretrained(d)
    tok.save(d)
    model, _, info = load_model(d)
    assert info.pooling == "first-last-avg" and model.pooler is None and model.lm_head is not None
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    with torch.no_grad():
        ref = mlm(ids).logits
        ours = model.lm_logits(model(ids).last_hidden_state)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)

    torch.manual_seed(2)
    plain = BertModel(cfg).eval()  # with its tanh pooler
    d2 = tmp_path / "hf-plain"
    plain.save_pretrained(d2)
    tok.save(d2)
    model2, _, _ = load_model(d2)
    with torch.no_grad():
        torch.testing.assert_close(model2.pool_cls(model2(ids).last_hidden_state[:, 0]),
                                   plain(ids).pooler_output, atol=1e-5, rtol=1e-5)


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="could not be fetched from the Hugging Face hub"):
        load_model("someone/simbert-that-is-not-cached")


def test_missing_weights_names_the_path(tmp_path, tiny_bert_dir):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_bert_dir, d)
    (d / "model.safetensors").unlink()
    with pytest.raises(FormatError, match=str(d / "model.safetensors")):
        load_model(d)


def test_newer_format_refused(tmp_path, tiny_bert_dir):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_bert_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["format_version"] = 99
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match="format_version 99"):
        load_model(d)


def test_hand_edited_head_count_is_a_format_error(tmp_path, tiny_bert_dir):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_bert_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["backbone_config"]["num_attention_heads"] = 0  # was a ZeroDivisionError traceback
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match=r"config.json: key 'backbone_config' does not describe a valid model"):
        load_model(d)


def test_not_a_model_dir(tmp_path):
    with pytest.raises(FormatError, match="config.json"):
        load_model(tmp_path)
    with pytest.raises(InputError, match="no such model directory"):
        load_model(str(tmp_path / "nope"))


def test_fp16_storage_roundtrip(tmp_path, tiny_bert_dir):
    from simkit.models.checkpoint import save_model

    model, tok, info = load_model(tiny_bert_dir)
    save_model(model, tok, info, tmp_path / "half", dtype="fp16")
    half, _, _ = load_model(tmp_path / "half")
    for k, v in model.state_dict().items():
        np.testing.assert_allclose(half.state_dict()[k].numpy(), v.numpy(), atol=2e-3, rtol=1e-3)


def test_saved_model_files_get_normal_permissions(tiny_bert_dir, tmp_path):
    """safetensors writes 0600 files; a saved model is meant to be shared like any other file."""
    import os
    import stat

    from simkit.models.checkpoint import save_model

    umask = os.umask(0o022)
    try:
        save_model(*load_model(tiny_bert_dir), tmp_path / "m")
    finally:
        os.umask(umask)
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in (tmp_path / "m").iterdir()}
    assert modes["model.safetensors"] == 0o644, modes
    assert set(modes.values()) == {0o644}, modes
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o755
