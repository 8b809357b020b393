"""New models from scratch: a character vocabulary from text, and a sized config.

Used by ``simkit train`` (from a config, no pretrained weights), by the demo, and by the
tests, which build tiny models this way and then load them through the normal path.

>>> vocab = build_vocab(["今天天气不错", "明天会下雨"])      # special tokens + chars
>>> model, tok = new_model("roformer", vocab, hidden_size=64, num_layers=2)   # doctest: +SKIP
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

import torch

from ..errors import InputError, ParameterError
from ..tokenization import Tokenizer, is_cjk
from .simbert import BACKBONES, SimBertModel

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")





def build_vocab(
    texts: Iterable[str], min_freq: int = 1, max_size: int | None = None
) -> list[str]:
    """Character vocabulary in the layout BertTokenizer expects.

    CJK characters and punctuation become single tokens; runs of Latin letters / digits are
    split to characters, with ``##x`` continuation pieces, so WordPiece can spell any word
    made of known characters. Frequency-sorted, ties broken by the character itself, so the
    result is deterministic.
    """
    # Count characters after the very normaliser the tokenizer applies at encode time
    # (lower-casing, accent stripping; no NFKC): a vocabulary built from NFKC text had "," but
    # the tokenizer sees "，", so full-width punctuation became [UNK].
    from tokenizers.normalizers import BertNormalizer

    normalize = BertNormalizer(lowercase=True).normalize_str
    counts: collections.Counter[str] = collections.Counter()
    cont: collections.Counter[str] = collections.Counter()
    for text in texts:
        text = normalize(text)
        prev_word = False
        for ch in text:
            if ch.isspace():
                prev_word = False
                continue
            word_char = ch.isalnum() and not is_cjk(ch)
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


def check_sizes(backbone: str, hidden_size: int, num_layers: int, num_heads: int | None = None,
                intermediate_size: int | None = None) -> None:
    """Refuse a model shape :func:`make_config` cannot build, naming the value.

    >>> check_sizes("roformer", hidden_size=192, num_layers=8, num_heads=3)   # passes
    """
    if backbone not in BACKBONES:
        raise ParameterError("backbone", backbone, f"one of: {', '.join(BACKBONES)}")
    for name, v in (("hidden_size", hidden_size), ("num_layers", num_layers), ("num_heads", num_heads),
                    ("intermediate_size", intermediate_size)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ParameterError(name, v, "an int >= 1")
    heads = num_heads or max(1, hidden_size // 64)
    if hidden_size % heads:
        raise ParameterError("num_heads", heads, f"a divisor of hidden_size={hidden_size}")


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
    check_sizes(backbone, hidden_size, num_layers, num_heads, intermediate_size)
    num_heads = num_heads or max(1, hidden_size // 64)
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


def extend_vocab(
    model: SimBertModel, tokenizer: Tokenizer, texts: Iterable[str], min_freq: int = 1
) -> tuple[SimBertModel, Tokenizer, list[str]]:
    """Add the characters of ``texts`` that ``tokenizer`` maps to [UNK] (seen ``min_freq`` times).

    Old ids keep their meaning; each new token starts as a copy of [UNK]'s embedding and LM-head
    bias, so a text whose unknown pieces are single characters (CJK, punctuation) encodes exactly
    as before until training moves the new rows apart. (A Latin word the old vocabulary could not
    spell was one [UNK]; WordPiece now spells it out.) Returns the model (resized in place), the
    new tokenizer and the added tokens.

    >>> model, tok, added = extend_vocab(model, tok, ["问：花呗？"])   # doctest: +SKIP
    >>> added                                                          # ['：', '？']
    """
    if tokenizer.pre_tokenize != "none":
        raise InputError("extend_vocab supports character-level models only; this tokenizer uses "
                         f"pre_tokenize={tokenizer.pre_tokenize!r}")
    unk = tokenizer.unk_token_id
    if unk is None:
        raise InputError("extend_vocab needs a tokenizer with an [UNK] token")
    old = sorted(tokenizer.hf.get_vocab().items(), key=lambda kv: kv[1])
    if [i for _, i in old] != list(range(len(old))):
        raise InputError("extend_vocab needs a vocabulary with contiguous ids 0..n-1")
    known = {t for t, _ in old}
    added = [t for t in build_vocab(texts, min_freq=min_freq)[len(SPECIAL_TOKENS):] if t not in known]
    if not added:
        return model, tokenizer, []
    new_tok = Tokenizer.from_vocab([t for t, _ in old] + added)
    n_old, n_new = len(old), len(old) + len(added)
    emb = model.backbone.embeddings.word_embeddings
    grown = torch.nn.Embedding(n_new, emb.embedding_dim, padding_idx=emb.padding_idx,
                               dtype=emb.weight.dtype, device=emb.weight.device)
    with torch.no_grad():
        grown.weight[:n_old] = emb.weight
        grown.weight[n_old:] = emb.weight[unk]
    model.backbone.embeddings.word_embeddings = grown
    if model.lm_head is not None:
        bias = model.lm_head.bias.detach()
        model.lm_head.bias = torch.nn.Parameter(torch.cat([bias, bias[unk].expand(len(added))]))
    model.config.vocab_size = n_new  # the backbone shares this config object
    return model, new_tok, added


def stack_layers(model: SimBertModel, num_layers: int) -> SimBertModel:
    """A deeper copy of ``model``: layer i of the new stack starts as layer ``i % L`` of the old.

    Progressive stacking (Gong et al., 2019, "Efficient Training of BERT by Progressively
    Stacking"): a trained shallow model is a far better start for a deeper one than random
    weights, since its layers already compute useful (if repeated) attention. Embeddings,
    pooler and LM head are copied unchanged. The input model is not modified.

    >>> deep = stack_layers(model, 8)              # doctest: +SKIP
    >>> len(deep.backbone.encoder.layer)           # 8 (from 4: layers 0 1 2 3 0 1 2 3)
    """
    import copy

    n_old = model.config.num_hidden_layers
    if num_layers < n_old:
        raise InputError(f"stack_layers: num_layers={num_layers} is below the model's {n_old} "
                         "layers; stacking only grows a model")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = num_layers
    # Built afresh rather than deep-copied, so each layer knows its own index (the KV cache
    # of generation is addressed by it).
    deep = SimBertModel(model.backbone_type, config, with_pooler=model.pooler is not None,
                        with_lm_head=model.lm_head is not None,
                        pooler_activation=model.pooler.activation if model.pooler else "linear")
    # Every old weight keeps its name; only the new layers n_old.. are missing.
    deep.load_state_dict(model.state_dict(), strict=False)
    layers = deep.backbone.encoder.layer
    for i in range(n_old, num_layers):
        layers[i].load_state_dict(layers[i % n_old].state_dict())
    return deep.to(model.dtype).eval()
