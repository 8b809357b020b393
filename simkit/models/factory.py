"""New models from scratch: a character vocabulary from text, and a sized config.

Used by ``simkit train`` (from a config, no pretrained weights), by the demo, and by the
tests, which build tiny models this way and then load them through the normal path.

>>> vocab = build_vocab(["今天天气不错", "明天会下雨"])      # special tokens + chars
>>> model, tok = new_model("roformer", vocab, hidden_size=64, num_layers=2)   # doctest: +SKIP
"""

from __future__ import annotations

import collections
import unicodedata
from collections.abc import Iterable, Sequence

import torch

from ..errors import InputError, check_choice
from ..tokenization import Tokenizer
from .simbert import BACKBONES, SimBertModel

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


def build_vocab(
    texts: Iterable[str], min_freq: int = 1, max_size: int | None = None
) -> list[str]:
    """Character vocabulary in the layout BertTokenizer expects.

    CJK characters and punctuation become single tokens; runs of Latin letters / digits are
    split to characters, with ``##x`` continuation pieces, so WordPiece can spell any word
    made of known characters. Frequency-sorted, ties broken by the character itself, so the
    result is deterministic.
    """
    counts: collections.Counter[str] = collections.Counter()
    cont: collections.Counter[str] = collections.Counter()
    for text in texts:
        text = unicodedata.normalize("NFKC", text).lower()
        prev_word = False
        for ch in text:
            if ch.isspace():
                prev_word = False
                continue
            word_char = ch.isalnum() and not _is_cjk(ch)
            if word_char and prev_word:
                cont["##" + ch] += 1
            else:
                counts[ch] += 1
            prev_word = word_char
    items = [(t, c) for t, c in counts.items() if c >= min_freq]
    items += [(t, c) for t, c in cont.items() if c >= min_freq]
    items.sort(key=lambda tc: (-tc[1], tc[0]))
    tokens = [t for t, _ in items if t not in SPECIAL_TOKENS]
    if max_size is not None:
        tokens = tokens[: max(0, max_size - len(SPECIAL_TOKENS))]
    return [*SPECIAL_TOKENS, *tokens]


def make_config(
    backbone: str,
    vocab_size: int,
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int | None = None,
    intermediate_size: int | None = None,
    max_position: int = 512,
):
    """A BertConfig / RoFormerConfig of the given size (heads of 64 dims by default)."""
    check_choice("backbone", backbone, BACKBONES)
    num_heads = num_heads or max(1, hidden_size // 64)
    if hidden_size % num_heads:
        raise InputError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
    kw = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position,
        type_vocab_size=2,
    )
    if backbone == "bert":
        from transformers import BertConfig

        return BertConfig(**kw)
    from transformers import RoFormerConfig

    return RoFormerConfig(embedding_size=hidden_size, **kw)


def new_model(
    backbone: str,
    vocab: Sequence[str],
    seed: int = 0,
    pre_tokenize: str = "none",
    **config_kw,
) -> tuple[SimBertModel, Tokenizer]:
    """A freshly initialised SimBERT-style model (pooler + LM head) and its tokenizer."""
    tokenizer = Tokenizer.from_vocab(vocab, pre_tokenize=pre_tokenize)
    config = make_config(backbone, len(vocab), **config_kw)
    torch.manual_seed(seed)
    model = SimBertModel(backbone, config, with_pooler=True, with_lm_head=True)
    return model.eval(), tokenizer
