"""Tokenization for Chinese BERT / RoFormer models.

Character-level models (SimBERT, RoFormer-Sim char) use the BERT WordPiece tokenizer, which
splits every CJK character on its own. Word-level models (WoBERT, RoFormer-Sim word) first
segment with jieba: a word in the vocabulary stays one token, any other word falls back to
WordPiece (the WoBERT recipe). jieba is an optional extra.

>>> tok = Tokenizer.load("path/to/model")                       # doctest: +SKIP
>>> ids, n_truncated = tok.encode_batch(["今天天气不错"], max_length=64)  # doctest: +SKIP
>>> ids[0][:3]                                                  # [CLS] 今 天 ...
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from .errors import FormatError, InputError, check_choice

PreTokenize = Literal["none", "jieba"]
PRE_TOKENIZE_MODES = ("none", "jieba")

def is_cjk(ch: str) -> bool:
    """A CJK ideograph, by the ranges BERT's tokenizer splits into single characters."""
    c = ord(ch)
    return (0x4E00 <= c <= 0x9FFF or 0x3400 <= c <= 0x4DBF or 0x20000 <= c <= 0x2A6DF
            or 0x2A700 <= c <= 0x2B73F or 0x2B740 <= c <= 0x2B81F or 0x2B820 <= c <= 0x2CEAF
            or 0xF900 <= c <= 0xFAFF or 0x2F800 <= c <= 0x2FA1F)


def _require_jieba():
    try:
        import jieba
    except ImportError:
        raise ImportError(
            "word-level models need jieba: pip install 'simkit[jieba]' (or pip install jieba)"
        ) from None
    jieba.setLogLevel(60)  # its start-up chatter goes to stderr otherwise
    return jieba


class Tokenizer:
    """A ``BertTokenizerFast`` plus optional jieba pre-segmentation.

    Special tokens are added by simkit (not by the HF tokenizer) so that truncation is
    explicit and counted: a text keeps its first ``max_length - 2`` tokens.
    """

    def __init__(self, hf_tokenizer, pre_tokenize: PreTokenize = "none"):
        check_choice("pre_tokenize", pre_tokenize, PRE_TOKENIZE_MODES)
        self.hf = hf_tokenizer
        self.pre_tokenize = pre_tokenize
        self._jieba = _require_jieba() if pre_tokenize == "jieba" else None
        self._vocab = hf_tokenizer.get_vocab()
        for name in ("cls_token_id", "sep_token_id", "pad_token_id"):
            if getattr(hf_tokenizer, name) is None:
                raise FormatError(f"tokenizer has no {name[:-9]} token; expected a BERT vocabulary")

    # -- construction ---------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, pre_tokenize: PreTokenize | None = None) -> Tokenizer:
        """Load from a directory holding ``vocab.txt`` (and optionally ``tokenizer.json``)."""
        from transformers import BertTokenizerFast

        path = Path(path)
        if not (path / "vocab.txt").is_file() and not (path / "tokenizer.json").is_file():
            raise FormatError(f"{path}: no vocab.txt or tokenizer.json; cannot build a tokenizer")
        try:
            hf = BertTokenizerFast.from_pretrained(str(path))
        except Exception as e:  # transformers raises many types here
            raise FormatError(f"{path}: cannot load the tokenizer ({e})") from None
        if pre_tokenize is None:
            pre_tokenize = "jieba" if _looks_word_level(hf.get_vocab()) else "none"
        return cls(hf, pre_tokenize)

    @classmethod
    def from_vocab(cls, tokens: Sequence[str], pre_tokenize: PreTokenize = "none") -> Tokenizer:
        """Build from a token list (special tokens first is conventional but not required)."""
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            Path(d, "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
            return cls.load(d, pre_tokenize=pre_tokenize)

    def save(self, path: str | os.PathLike) -> None:
        self.hf.save_pretrained(str(path))

    # -- properties -----------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def cls_token_id(self) -> int:
        return self.hf.cls_token_id

    @property
    def sep_token_id(self) -> int:
        return self.hf.sep_token_id

    @property
    def pad_token_id(self) -> int:
        return self.hf.pad_token_id

    @property
    def mask_token_id(self) -> int | None:
        return self.hf.mask_token_id

    @property
    def unk_token_id(self) -> int | None:
        return self.hf.unk_token_id

    # -- encoding -------------------------------------------------------------------
    def tokenize_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens and without truncation."""
        if self._jieba is None:
            return self.hf(list(texts), add_special_tokens=False)["input_ids"]
        out = []
        for text in texts:
            ids: list[int] = []
            for word in self._jieba.cut(text, HMM=False):
                if word in self._vocab:
                    ids.append(self._vocab[word])
                elif word.strip():
                    ids.extend(self.hf(word, add_special_tokens=False)["input_ids"])
            out.append(ids)
        return out

    def encode_batch(self, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], int]:
        """``[CLS] text [SEP]`` ids for each text, truncated to ``max_length``.

        Returns the ids and how many texts were truncated.
        """
        if max_length < 3:
            raise InputError(f"max_length={max_length} is too small; expected at least 3")
        keep = max_length - 2
        cls_, sep = self.cls_token_id, self.sep_token_id
        out, n_trunc = [], 0
        for ids in self.tokenize_ids(texts):
            if len(ids) > keep:
                n_trunc += 1
                ids = ids[:keep]
            out.append([cls_, *ids, sep])
        return out, n_trunc

    def encode_pair(self, a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
        """UniLM input ``[CLS] a [SEP] b [SEP]`` from token ids: (input_ids, token_type_ids)."""
        ids = [self.cls_token_id, *a, self.sep_token_id, *b, self.sep_token_id]
        types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        return ids, types

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``: special tokens dropped, no spaces between CJK characters."""
        special = {self.cls_token_id, self.sep_token_id, self.pad_token_id}
        toks = self.hf.convert_ids_to_tokens([i for i in ids if i not in special])
        text = ""
        for t in toks:
            if t.startswith("##"):
                text += t[2:]
            elif text and (not is_cjk(t[0]) and not is_cjk(text[-1])):
                text += " " + t  # keep spaces between Latin words
            else:
                text += t
        return text


def _looks_word_level(vocab: dict[str, int]) -> bool:
    """True when the vocabulary holds many multi-character Chinese words (WoBERT style)."""
    n = sum(1 for t in vocab if len(t) > 1 and all(is_cjk(c) for c in t))
    return n > 1000
