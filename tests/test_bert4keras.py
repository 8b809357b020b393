"""TF checkpoints written by real TensorFlow (tests/fixtures/make_tf_checkpoint.py) -> simkit."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from simkit.errors import FormatError, InputError
from simkit.models.bert4keras import convert_bert4keras, read_vocab, simplified_keep_tokens
from simkit.models.checkpoint import load_model
from simkit.models.tf_checkpoint import TFCheckpoint, crc32c

FIX = Path(__file__).parent / "fixtures"
CASES = {"tf_bert_google": "tanh", "tf_roformer_b4k": "linear"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_converted_model_matches_reference(name, tmp_path):
    out = tmp_path / "model"
    convert_bert4keras(FIX / name, out, pooler_activation=CASES[name])
    model, tok, info = load_model(out)  # through the normal loading path
    ref = np.load(FIX / name / "reference.npz", allow_pickle=False)
    ids = torch.from_numpy(ref["input_ids"])[None]
    types = torch.from_numpy(ref["token_type_ids"])[None]
    with torch.inference_mode():
        h = model(ids, torch.ones_like(ids), types).last_hidden_state
        pooled = model.pool_cls(h[:, 0])
        logits = model.lm_logits(h)
    np.testing.assert_allclose(h[0].numpy(), ref["last_hidden_state"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(pooled[0].numpy(), ref["pooled"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(logits[0].numpy(), ref["mlm_logits"], atol=1e-4, rtol=1e-4)
    assert info.backbone == ("bert" if "bert" in name else "roformer")
    assert tok.vocab_size == model.word_embeddings.shape[0]


def test_simplified_vocab_rebuilt():
    d = FIX / "tf_roformer_b4k"
    tokens = read_vocab(d / "vocab.txt")
    keep = simplified_keep_tokens(tokens)
    kept = [tokens[i] for i in keep]
    assert kept[:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    assert not {"中国", "##中", "##，", "北京"} & set(kept) and "##a" in kept
    model, tok, info = convert_bert4keras(d)
    assert info.extra["keep_tokens"] == len(kept) == model.word_embeddings.shape[0]
    ids, _ = tok.encode_batch(["花呗"], 8)
    assert ids[0] == [2, kept.index("花"), kept.index("呗"), 3]


def test_keep_tokens_json_on_full_checkpoint(tmp_path):
    # A full-vocabulary checkpoint with an explicit keep list: rows are selected (bert4keras).
    d = tmp_path / "ck"
    shutil.copytree(FIX / "tf_bert_google", d)
    keep = [0, 1, 2, 4, 10, 11, 12]
    (d / "keep_tokens.json").write_text(str(keep))
    model, tok, _ = convert_bert4keras(d, pooler_activation="tanh")
    full = TFCheckpoint(d).read("bert/embeddings/word_embeddings")
    np.testing.assert_array_equal(model.word_embeddings.detach().numpy(), full[keep])
    assert tok.vocab_size == len(keep)  # no [MASK] in this list, and none is appended


@pytest.mark.parametrize("keep, match", [([], "keep_tokens is empty"),
                                         ([0, 1, 1, 2], "lists id 1 more than once")])
def test_bad_keep_tokens_are_named(tmp_path, keep, match):
    # An empty list was an IndexError traceback; a repeated id a misleading token-count error.
    d = tmp_path / "ck"
    shutil.copytree(FIX / "tf_bert_google", d)
    (d / "keep_tokens.json").write_text(str(keep))
    with pytest.raises(InputError, match=match):
        convert_bert4keras(d, pooler_activation="tanh")


def test_bad_max_seq_length_is_refused_before_writing(tmp_path):
    # -1 was written into the converted model, which then failed to load.
    with pytest.raises(InputError, match=r"max_seq_length=-1; expected an int >= 3"):
        convert_bert4keras(FIX / "tf_bert_google", tmp_path / "out", max_seq_length=-1)
    assert not (tmp_path / "out").exists()


def test_tf_reader_names_and_crc():
    ck = TFCheckpoint(FIX / "tf_bert_google")
    assert "global_step" in ck.names() and ck.read("global_step") == 1000
    assert ck.shapes()["bert/encoder/layer_1/intermediate/dense/kernel"] == (16, 32)
    assert crc32c(b"123456789") == 0xE3069283
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, 300_001, dtype=np.uint8).tobytes()
    import zlib  # noqa: F401  (crc32 is a different polynomial; check against the bytewise loop)

    from simkit.models.tf_checkpoint import _crc_raw_py

    assert crc32c(data) == _crc_raw_py(data, 0xFFFFFFFF) ^ 0xFFFFFFFF


def test_corrupted_data_file_named(tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(FIX / "tf_bert_google", d)
    data = d / "bert_model.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=r"data-00000-of-00001: checksum mismatch"):
        convert_bert4keras(d)


def test_corrupted_or_truncated_index_named(tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(FIX / "tf_bert_google", d)
    idx = d / "bert_model.ckpt.index"
    raw = bytearray(idx.read_bytes())
    raw[20] ^= 0x55
    idx.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=r"bert_model.ckpt.index"):
        TFCheckpoint(d)
    idx.write_bytes(bytes(raw[:30]))
    with pytest.raises(FormatError, match=r"bert_model.ckpt.index: not a TensorFlow"):
        TFCheckpoint(d)
    (d / "bert_model.ckpt.data-00000-of-00001").write_bytes(b"short")
    shutil.copy(FIX / "tf_bert_google" / "bert_model.ckpt.index", idx)
    with pytest.raises(FormatError, match="truncated"):
        convert_bert4keras(d)


def test_config_mismatch_lists_expected_and_found(tmp_path):
    d = tmp_path / "ck"
    shutil.copytree(FIX / "tf_bert_google", d)
    cfg = (d / "bert_config.json").read_text().replace('"num_hidden_layers": 2', '"num_hidden_layers": 3')
    (d / "bert_config.json").write_text(cfg)
    with pytest.raises(FormatError, match=r"missing \['bert/encoder/layer_2/.*found"):
        convert_bert4keras(d)


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        convert_bert4keras(tmp_path / "nope")
    (tmp_path / "bert_config.json").write_text("{}")
    with pytest.raises(InputError, match="vocab.txt: not found"):
        convert_bert4keras(tmp_path)
    with pytest.raises(InputError, match="a bert4keras / TF checkpoint"):
        load_model(FIX / "tf_bert_google")


def test_converted_simplified_model_generates(tmp_path):
    from simkit.generate import Paraphraser

    out = tmp_path / "m"
    convert_bert4keras(FIX / "tf_roformer_b4k", out)
    p = Paraphraser(str(out))
    res = p.generate(["花呗怎么还款"], n=3, seed=0, max_new_tokens=5)
    assert len(res[0]) == 3
    with pytest.raises(InputError, match="no"):
        p.generate(["花呗"], mask_idxs=[0])
