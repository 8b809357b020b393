"""bert4keras / Google BERT TensorFlow checkpoints -> simkit models, without TensorFlow.

Two naming schemes are read:

* Google BERT names (what bert4keras' ``save_weights_as_checkpoint`` writes, and so what the
  released SimBERT / RoFormer-Sim checkpoints hold): ``bert/embeddings/word_embeddings``,
  ``bert/encoder/layer_0/attention/self/query/kernel``, ``bert/pooler/dense/kernel``,
  ``cls/predictions/...``. RoFormer checkpoints simply lack ``position_embeddings``.
* bert4keras' Keras layer names (a checkpoint saved from the Keras graph): ``Embedding-Token/
  embeddings``, ``Embedding-Norm/gamma``, ``Transformer-0-MultiHeadSelfAttention/dense_N/kernel``
  (q, k, v, o in creation order), ``Transformer-0-FeedForward/dense_N/...`` (in, out),
  ``Pooler-Dense``, ``MLM-Dense``, ``MLM-Norm``, ``MLM-Bias``.

TF kernels are (in, out); torch Linear weights are (out, in), so kernels are transposed.
A simplified vocabulary (``keep_tokens``; SimBERT keeps 13,685 of 21,128 tokens) is honoured:
from a ``keep_tokens.json`` list of original ids, or rebuilt with bert4keras' ``load_vocab(
simplified=True, startswith=[PAD, UNK, CLS, SEP])`` rule when the checkpoint has fewer
embedding rows than ``vocab.txt`` has lines.

>>> model, tok, info = convert_bert4keras("chinese_simbert_L-12_H-768_A-12", "simbert")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import re
import unicodedata
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..errors import FormatError, InputError, ParameterError, check_choice
from ..fsutil import read_json
from ..tokenization import Tokenizer, is_cjk
from .checkpoint import ModelInfo, save_model
from .simbert import SimBertModel
from .tf_checkpoint import TFCheckpoint, resolve_prefix

logger = logging.getLogger(__name__)

Naming = Literal["google", "bert4keras"]
SIMPLIFIED_STARTSWITH = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")

# Variables a checkpoint may carry that a simkit model has no place for.
_IGNORED = re.compile(
    r"(^|/)(adam_[mv]|Adam(_\d+)?|global_step|bad_steps|good_steps|loss_scale)$"
    r"|^cls/seq_relationship/|^NSP-Proba/|^_CHECKPOINTABLE_OBJECT_GRAPH$|^optimizer/|^training/"
)

_LAYER_PARTS = [  # (torch suffix, google suffix, bert4keras (scope, dense index or weight))
    ("attention.self.query", "attention/self/query", ("MultiHeadSelfAttention", 0)),
    ("attention.self.key", "attention/self/key", ("MultiHeadSelfAttention", 1)),
    ("attention.self.value", "attention/self/value", ("MultiHeadSelfAttention", 2)),
    ("attention.output.dense", "attention/output/dense", ("MultiHeadSelfAttention", 3)),
    ("intermediate.dense", "intermediate/dense", ("FeedForward", 0)),
    ("output.dense", "output/dense", ("FeedForward", 1)),
]
_LAYER_NORMS = [
    ("attention.output.LayerNorm", "attention/output/LayerNorm", "MultiHeadSelfAttention-Norm"),
    ("output.LayerNorm", "output/LayerNorm", "FeedForward-Norm"),
]


# ------------------------------------------------------------------------ vocabulary



def _is_punct(ch: str) -> bool:
    c = ord(ch)
    return (33 <= c <= 47 or 58 <= c <= 64 or 91 <= c <= 96 or 123 <= c <= 126
            or unicodedata.category(ch).startswith("P"))


def read_vocab(path: Path) -> list[str]:
    """Tokens of a vocab.txt, one per line (first whitespace field, as bert4keras reads it)."""
    tokens = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        tokens.append(parts[0] if parts else line.strip())
    return tokens


def simplified_keep_tokens(tokens: list[str], startswith=SIMPLIFIED_STARTSWITH) -> list[int]:
    """bert4keras ``load_vocab(simplified=True)``: the ``startswith`` tokens first, then every
    token in order except multi-character ones containing a CJK character or punctuation."""
    index = {}
    for i, t in enumerate(tokens):
        index.setdefault(t, i)
    keep, seen = [], set()
    for t in startswith:
        if t not in index:
            raise FormatError(f"vocab.txt has no {t} token; cannot rebuild the simplified vocabulary")
        keep.append(index[t])
        seen.add(t)
    for i, t in enumerate(tokens):
        if t in seen or index[t] != i:
            continue
        stem = t.removeprefix("##")
        if len(t) > 1 and any(is_cjk(c) or _is_punct(c) for c in stem):
            continue
        keep.append(i)
        seen.add(t)
    return keep


# ------------------------------------------------------------------------- mapping
def detect_naming(names: list[str]) -> Naming:
    if any(n.startswith("bert/") for n in names):
        return "google"
    if any(n.startswith(("Embedding-Token/", "Transformer-")) for n in names):
        return "bert4keras"
    raise FormatError(
        "no BERT variables found: expected Google names (bert/embeddings/...) or bert4keras "
        f"names (Embedding-Token/..., Transformer-0-...); found {sorted(names)[:12]}"
    )


def _dense_order(names: set[str], scope: str) -> list[str]:
    """Sub-layer names in a bert4keras layer scope, in creation order (dense < dense_1 < dense_2...)."""
    subs = {m.group(1) for n in names if (m := re.fullmatch(re.escape(scope) + r"/([^/]+)/kernel", n))}

    def key(s: str) -> tuple[int, str]:
        m = re.fullmatch(r".*?_(\d+)", s)
        return (int(m.group(1)) if m else 0, s)

    return sorted(subs, key=key)


def variable_mapping(
    names: list[str], naming: Naming, backbone: str, num_layers: int
) -> dict[str, tuple[str, bool]]:
    """{simkit state-dict key: (checkpoint variable, transpose?)} for the parts present."""
    found = set(names)
    m: dict[str, tuple[str, bool]] = {}

    def lin(dst: str, src: str) -> None:
        m[dst + ".weight"] = (src + "/kernel", True)
        m[dst + ".bias"] = (src + "/bias", False)

    def ln(dst: str, src: str) -> None:
        m[dst + ".weight"] = (src + "/gamma", False)
        m[dst + ".bias"] = (src + "/beta", False)

    g = naming == "google"
    emb = "backbone.embeddings."
    m[emb + "word_embeddings.weight"] = (
        "bert/embeddings/word_embeddings" if g else "Embedding-Token/embeddings", False)
    m[emb + "token_type_embeddings.weight"] = (
        "bert/embeddings/token_type_embeddings" if g else "Embedding-Segment/embeddings", False)
    if backbone == "bert":
        m[emb + "position_embeddings.weight"] = (
            "bert/embeddings/position_embeddings" if g else "Embedding-Position/embeddings", False)
    ln(emb + "LayerNorm", "bert/embeddings/LayerNorm" if g else "Embedding-Norm")
    mapping_src = "bert/encoder/embedding_hidden_mapping_in" if g else "Embedding-Mapping"
    if mapping_src + "/kernel" in found:
        if backbone != "roformer":
            raise FormatError(f"{mapping_src}: an embedding projection is only supported for RoFormer")
        lin("backbone.embeddings_project", mapping_src)
    for i in range(num_layers):
        dst = f"backbone.encoder.layer.{i}."
        if g:
            src = f"bert/encoder/layer_{i}/"
            for t, s, _ in _LAYER_PARTS:
                lin(dst + t, src + s)
            for t, s, _ in _LAYER_NORMS:
                ln(dst + t, src + s)
            continue
        for scope, count in (("MultiHeadSelfAttention", 4), ("FeedForward", 2)):
            full = f"Transformer-{i}-{scope}"
            subs = _dense_order(found, full)
            if len(subs) != count:
                raise FormatError(
                    f"{full}: expected {count} dense sub-layers, found {len(subs)} ({subs})")
            for t, _, (sc, k) in _LAYER_PARTS:
                if sc == scope:
                    lin(dst + t, f"{full}/{subs[k]}")
        for t, _, b in _LAYER_NORMS:
            ln(dst + t, f"Transformer-{i}-{b}")
    pool = "bert/pooler/dense" if g else "Pooler-Dense"
    if pool + "/kernel" in found:
        lin("pooler.dense", pool)
    mlm_bias = "cls/predictions/output_bias" if g else "MLM-Bias/bias"
    mlm_dense = "cls/predictions/transform/dense" if g else "MLM-Dense"
    if mlm_bias in found or mlm_dense + "/kernel" in found:
        lin("lm_head.transform.dense", mlm_dense)
        ln("lm_head.transform.LayerNorm", "cls/predictions/transform/LayerNorm" if g else "MLM-Norm")
        m["lm_head.bias"] = (mlm_bias, False)
    return m


def _check_names(mapping: dict, names: list[str], index_file: Path) -> None:
    expected = {src for src, _ in mapping.values()}
    found = {n for n in names if not _IGNORED.search(n)}
    missing, unknown = sorted(expected - found), sorted(found - expected)
    if missing or unknown:
        raise FormatError(
            f"{index_file}: the checkpoint does not match the model built from its config: "
            f"missing {missing[:12]}{' ...' if len(missing) > 12 else ''}; "
            f"unknown {unknown[:12]}{' ...' if len(unknown) > 12 else ''}; "
            f"expected {len(expected)} variables such as {sorted(expected)[:6]}, "
            f"found {len(found)} such as {sorted(found)[:6]}"
        )


# ------------------------------------------------------------------------- convert
def _hf_config(backbone: str, cfg: dict, vocab_size: int, file: Path):
    from transformers import BertConfig, RoFormerConfig

    try:
        kw = {
            "vocab_size": vocab_size,
            "hidden_size": int(cfg["hidden_size"]),
            "num_hidden_layers": int(cfg["num_hidden_layers"]),
            "num_attention_heads": int(cfg["num_attention_heads"]),
            "intermediate_size": int(cfg["intermediate_size"]),
            "hidden_act": cfg.get("hidden_act", "gelu"),
            "max_position_embeddings": int(cfg.get("max_position_embeddings", 512)),
            "type_vocab_size": int(cfg.get("type_vocab_size", 2)),
            "layer_norm_eps": 1e-12,
        }
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"{file}: missing or bad field {e}") from None
    if backbone == "bert":
        return BertConfig(**kw)
    return RoFormerConfig(embedding_size=int(cfg.get("embedding_size") or kw["hidden_size"]), **kw)


def _resolve_keep_tokens(keep_tokens, tokens: list[str], rows: int, ckpt_dir: Path):
    """Original token ids to keep (None: keep all), from the argument or the checkpoint shape."""
    if keep_tokens is None and (ckpt_dir / "keep_tokens.json").is_file():
        keep_tokens = ckpt_dir / "keep_tokens.json"
    if isinstance(keep_tokens, (str, os.PathLike)) and str(keep_tokens) not in ("auto", "none"):
        file = Path(keep_tokens)
        try:
            keep_tokens = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"{file}: cannot read keep_tokens ({e})") from None
        if not isinstance(keep_tokens, list) or not all(isinstance(i, int) for i in keep_tokens):
            raise InputError(f"{file}: expected a JSON list of token ids")
    if keep_tokens == "none":
        return None
    if keep_tokens is None or keep_tokens == "auto":
        if rows == len(tokens):
            return None
        if rows > len(tokens):
            raise FormatError(f"the checkpoint has {rows} embedding rows but vocab.txt only {len(tokens)} tokens")
        keep = simplified_keep_tokens(tokens)
        if len(keep) != rows:
            raise FormatError(
                f"the checkpoint has {rows} embedding rows and vocab.txt {len(tokens)} lines; "
                f"bert4keras' simplified vocabulary gives {len(keep)}, not {rows}: pass the "
                "keep_tokens list (keep_tokens.json) the model was trained with"
            )
        logger.info("simplified vocabulary rebuilt: %d of %d tokens", rows, len(tokens))
        return keep
    keep = [int(i) for i in keep_tokens]
    if not keep:
        raise InputError(f"keep_tokens is empty; expected the vocab.txt ids of the checkpoint's {rows} "
                         "embedding rows, in row order")
    if len(set(keep)) != len(keep):
        seen: set[int] = set()
        twice = next(i for i in keep if i in seen or seen.add(i))
        raise InputError(f"keep_tokens lists id {twice} more than once; each vocab.txt id may appear once")
    bad = [i for i in keep if not 0 <= i < len(tokens)]
    if bad:
        raise InputError(f"keep_tokens has ids {bad[:5]} outside vocab.txt's 0..{len(tokens) - 1}")
    return keep


def _tokenizer(vocab: list[str]) -> Tokenizer:
    """Tokenizer over exactly ``vocab``. A simplified vocabulary drops [MASK] (it contains
    punctuation); Hugging Face would then append one beyond the embedding rows, unless told
    there is none."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        Path(d, "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        if "[MASK]" not in vocab:
            Path(d, "tokenizer_config.json").write_text('{"mask_token": null, "do_lower_case": true}')
        tok = Tokenizer.load(d, pre_tokenize="none")
    if tok.vocab_size != len(vocab):
        raise FormatError(f"vocab.txt: the tokenizer has {tok.vocab_size} tokens, expected {len(vocab)}")
    return tok


def convert_bert4keras(
    ckpt_dir: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    backbone: str | None = None,
    keep_tokens: list[int] | str | os.PathLike | None = None,
    pooler_activation: Literal["linear", "tanh"] = "linear",
    pooling: str | None = None,
    max_seq_length: int = 64,
    overwrite: bool = False,
    dtype: str = "fp32",
) -> tuple[SimBertModel, Tokenizer, ModelInfo]:
    """Convert a directory with ``bert_config.json``, ``vocab.txt`` and a TF checkpoint.

    ``backbone`` defaults to 'bert' when the checkpoint has absolute position embeddings,
    else 'roformer'. ``keep_tokens``: a list of original ids, a JSON file, 'auto' (default:
    ``keep_tokens.json`` in the directory, else bert4keras' simplified-vocabulary rule when
    the checkpoint has fewer rows than vocab.txt) or 'none'. ``pooler_activation`` is
    'linear' for SimBERT / RoFormer-Sim and 'tanh' for Google BERT. Writes a simkit model
    directory to ``output`` when given.
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise InputError(f"{ckpt_dir}: not a directory (expected bert_config.json, vocab.txt, *.index)")
    check_choice("pooler_activation", pooler_activation, ("linear", "tanh"))
    if not isinstance(max_seq_length, int) or isinstance(max_seq_length, bool) or max_seq_length < 3:
        raise ParameterError("max_seq_length", max_seq_length, "an int >= 3 ([CLS] text [SEP])")
    cfg_file, vocab_file = ckpt_dir / "bert_config.json", ckpt_dir / "vocab.txt"
    for f in (cfg_file, vocab_file):
        if not f.is_file():
            raise InputError(f"{f}: not found; a bert4keras / Google checkpoint directory has it")
    cfg = read_json(cfg_file)
    ckpt = TFCheckpoint(resolve_prefix(checkpoint or ckpt_dir))
    names = [n.removesuffix(":0") for n in ckpt.names()]
    strip = {n.removesuffix(":0"): n for n in ckpt.names()}
    naming = detect_naming(names)
    has_pos = any(n in names for n in ("bert/embeddings/position_embeddings", "Embedding-Position/embeddings"))
    backbone = backbone or ("bert" if has_pos else "roformer")
    check_choice("backbone", backbone, ("bert", "roformer"))
    num_layers = int(cfg.get("num_hidden_layers", 0))
    mapping = variable_mapping(names, naming, backbone, num_layers)
    _check_names(mapping, names, ckpt.index_file)

    tokens = read_vocab(vocab_file)
    word_src = mapping["backbone.embeddings.word_embeddings.weight"][0]
    rows = ckpt.shapes()[strip[word_src]][0]
    keep = _resolve_keep_tokens(keep_tokens, tokens, rows, ckpt_dir)
    state: dict[str, torch.Tensor] = {}
    for dst, (src, transpose) in mapping.items():
        arr = ckpt.read(strip[src]).astype(np.float32)
        if keep is not None and dst in ("backbone.embeddings.word_embeddings.weight", "lm_head.bias") \
                and arr.shape[0] == len(tokens) != len(keep):
            arr = arr[keep]  # a full-vocabulary checkpoint loaded with a simplified vocabulary
        state[dst] = torch.from_numpy(np.ascontiguousarray(arr.T if transpose else arr))
    vocab = [tokens[i] for i in keep] if keep is not None else tokens
    n_rows = state["backbone.embeddings.word_embeddings.weight"].shape[0]
    if n_rows != len(vocab):
        raise FormatError(f"{ckpt.index_file}: {n_rows} embedding rows but {len(vocab)} tokens in the vocabulary")

    hf_config = _hf_config(backbone, cfg, len(vocab), cfg_file)
    model = SimBertModel(backbone, hf_config, with_pooler="pooler.dense.weight" in state,
                         with_lm_head="lm_head.bias" in state, pooler_activation=pooler_activation)
    expected = model.state_dict()
    for dst, v in state.items():
        if tuple(expected[dst].shape) != tuple(v.shape):
            raise FormatError(
                f"{ckpt.index_file}: {mapping[dst][0]} gives {dst} shape {tuple(v.shape)}, "
                f"but {cfg_file.name} implies {tuple(expected[dst].shape)}"
            )
    missing = [k for k in expected if k not in state and not k.endswith("embed_positions.weight")]
    if missing:
        raise FormatError(f"{ckpt.index_file}: no variables for {missing[:8]}")
    model.load_state_dict(state, strict=False)
    model.eval()
    tokenizer = _tokenizer(vocab)
    info = ModelInfo(
        backbone=backbone,
        pooling=pooling or ("pooler" if model.pooler is not None else "first-last-avg"),
        max_seq_length=min(int(max_seq_length), hf_config.max_position_embeddings),
        pooler_activation=pooler_activation,
        pre_tokenize=tokenizer.pre_tokenize,
        source=str(ckpt_dir),
        extra={"converted_from": "tf-checkpoint", "naming": naming,
               "keep_tokens": len(keep) if keep is not None else None},
    )
    if output is not None:
        save_model(model, tokenizer, info, output, overwrite=overwrite, dtype=dtype)
    return model, tokenizer, info
