"""Character vocabularies: built with the tokenizer's own normalisation, and grown in place."""

from __future__ import annotations

import numpy as np
import pytest

from simkit.encoder import Encoder
from simkit.errors import InputError
from simkit.models.checkpoint import ModelInfo, load_model, save_model
from simkit.models.factory import build_vocab, extend_vocab, new_model
from simkit.tokenization import Tokenizer

# Full-width punctuation, a full-width letter, accents, Latin words, digits.
TEXTS = ["花呗怎么还款？", "借呗（可以）提前还吗，谢谢！", "Café 的 ＡＴＭ 机：123 元", "Hello world"]


def test_build_vocab_covers_its_own_text():
    tok = Tokenizer.from_vocab(build_vocab(TEXTS))
    for text, ids in zip(TEXTS, tok.tokenize_ids(TEXTS), strict=True):
        assert tok.unk_token_id not in ids, text
    assert "？" in tok.hf.get_vocab() and "，" in tok.hf.get_vocab()


def test_extend_vocab_keeps_old_ids_and_vectors(tmp_path):
    model, tok = new_model("roformer", build_vocab(["花呗怎么还款", "借呗可以提前还吗"]), seed=0,
                           hidden_size=32, num_layers=1, num_heads=2)
    save_model(model, tok, ModelInfo("roformer"), tmp_path / "old")
    before = Encoder(tmp_path / "old").encode(TEXTS[:2])
    old_vocab = tok.hf.get_vocab()
    model, new_tok, added = extend_vocab(model, tok, TEXTS)
    assert "？" in added and "花" not in added
    assert all(new_tok.hf.get_vocab()[t] == i for t, i in old_vocab.items())
    assert model.word_embeddings.shape[0] == new_tok.vocab_size == model.lm_head.bias.shape[0]
    save_model(model, new_tok, ModelInfo("roformer"), tmp_path / "new")
    # New rows start as [UNK]: text whose unknown pieces are single characters (CJK,
    # punctuation) encodes exactly as before. (A Latin word the old vocabulary could not spell
    # was one [UNK]; now it is spelled out, so TEXTS[2:] do change.)
    np.testing.assert_array_equal(Encoder(tmp_path / "new").encode(TEXTS[:2]), before)
    # ... but the new characters now have their own ids, which training can move apart.
    assert all(new_tok.unk_token_id not in ids for ids in new_tok.tokenize_ids(TEXTS))
    m2, t2, _ = load_model(tmp_path / "new")
    assert t2.vocab_size == new_tok.vocab_size
    _, same_tok, none = extend_vocab(m2, t2, TEXTS)
    assert none == [] and same_tok is t2


def test_extend_vocab_refuses_word_level(tiny_bert_dir):
    model, tok, _ = load_model(tiny_bert_dir)
    tok.pre_tokenize = "jieba"
    with pytest.raises(InputError, match="character-level"):
        extend_vocab(model, tok, TEXTS)
