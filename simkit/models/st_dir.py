"""sentence-transformers model directories (``modules.json``): read as simkit models.

>>> model, tok, info = load_model("all-st-model/")     # doctest: +SKIP
>>> info.pooling                                       # from 1_Pooling/config.json, e.g. 'cls'

simkit reads the module chains it can express: ``Transformer`` (BERT or RoFormer) →
[``WeightedLayerPooling`` over the first and last layer] → ``Pooling`` (cls or mean) →
[``Dense`` on the CLS vector, identity or tanh: a pooler] → [``Normalize``]. Anything else
(max / weighted-mean / last-token pooling, a Dense after mean pooling, LayerNorm, …) is
refused naming the module. :mod:`simkit.export` writes such directories; the module type
names are shared from here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import FormatError
from ..fsutil import read_json
from .checkpoint import BACKBONES, _load_hf, _read_hf_weights
from .simbert import Pooler

logger = logging.getLogger(__name__)

# The classic module names: sentence-transformers 2.x-6.x all resolve them.
TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
DENSE = "sentence_transformers.models.Dense"
NORMALIZE = "sentence_transformers.models.Normalize"
WEIGHTED_LAYERS = "sentence_transformers.models.WeightedLayerPooling"

_LEGACY_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                 "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                 "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
_ACTIVATIONS = {"Identity": "linear", "Tanh": "tanh"}
CHAIN = ("Transformer → [WeightedLayerPooling of the first and last layer] → Pooling (cls or mean) "
         "→ [Dense on CLS, identity or tanh] → [Normalize]")


def _kind(entry: dict) -> str:
    return str(entry.get("type", "")).rsplit(".", 1)[-1]  # old and new module paths alike


def load_st_dir(path: Path, pre_tokenize: str | None, source: str):
    """(model, tokenizer, info) of a sentence-transformers directory (see module doc)."""
    where = path / "modules.json"
    entries = read_json(where)
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise FormatError(f"{where}: expected a non-empty list of modules")
    entries = sorted(entries, key=lambda e: e.get("idx", 0))
    if _kind(entries[0]) != "Transformer":
        raise FormatError(f"{where}: the first module is {entries[0].get('type')!r}; simkit reads "
                          f"sentence-transformers models of the form {CHAIN}")
    backbone_dir = path / entries[0].get("path", "")
    raw = read_json(backbone_dir / "config.json") if (backbone_dir / "config.json").is_file() else None
    if not isinstance(raw, dict) or raw.get("model_type") not in BACKBONES:
        found = raw.get("model_type") if isinstance(raw, dict) else None
        raise FormatError(f"{backbone_dir / 'config.json'}: the Transformer module is {found!r}; "
                          "simkit reads BERT or RoFormer backbones ('bert', 'roformer')")
    model, tok, info = _load_hf(backbone_dir, raw, pre_tokenize, source)
    n_layers, hidden = model.config.num_hidden_layers, model.config.hidden_size

    pooling, normalize = None, False
    rest = entries[1:]
    for i, entry in enumerate(rest, start=1):
        kind, folder = _kind(entry), path / entry.get("path", "")
        cfg_file = folder / "config.json"
        cfg = read_json(cfg_file) if cfg_file.is_file() else {}
        if kind == "WeightedLayerPooling" and pooling is None and i == 1:
            _check_first_last(folder, cfg, n_layers)
            pooling = "first-last"
        elif kind == "Pooling" and pooling in (None, "first-last"):
            modes = _pooling_modes(cfg)
            if modes not in (["cls"], ["mean"]) or (pooling == "first-last" and modes != ["mean"]):
                raise FormatError(f"{cfg_file}: pooling {'+'.join(modes)} has no simkit equivalent; "
                                  "simkit pools by cls, mean (last-avg) or first-last-avg")
            pooling = {"cls": "cls", "mean": "last-avg"}[modes[0]] if pooling is None else "first-last-avg"
        elif kind == "Dense" and pooling == "cls":
            model.pooler, activation = _read_dense_pooler(folder, cfg, hidden)
            info.pooler_activation = activation
            pooling = "pooler"
        elif kind == "Normalize" and pooling and i == len(rest):
            normalize = True
        else:
            raise FormatError(f"{where}: module {i} ({entry.get('type')}) after "
                              f"{'the Transformer' if pooling is None else pooling + ' pooling'} has no "
                              f"simkit equivalent; simkit reads {CHAIN}")
    if pooling in (None, "first-last"):
        raise FormatError(f"{where}: no Pooling module; simkit reads {CHAIN}")
    info.pooling = pooling
    info.max_seq_length = _max_seq_length(backbone_dir, info.max_seq_length,
                                         model.config.max_position_embeddings)
    info.extra = {**info.extra, "sentence_transformers": {"normalize": normalize}}
    if normalize:
        logger.info("%s ends in Normalize: pass normalize_embeddings=True for its unit vectors "
                    "(cosine similarities are the same either way)", source)
    return model.eval(), tok, info


def _pooling_modes(cfg: dict) -> list[str]:
    if "pooling_mode" in cfg:  # sentence-transformers >= 6
        mode = cfg["pooling_mode"]
        return [mode] if isinstance(mode, str) else list(mode)
    return [m for k, m in _LEGACY_MODES.items() if cfg.get(k)] or ["mean"]  # ST's default


def _module_weights(folder: Path) -> dict[str, torch.Tensor]:
    state, _ = _read_hf_weights(folder)  # safetensors, else pytorch_model.bin (weights_only)
    return state


def _check_first_last(folder: Path, cfg: dict, n_layers: int) -> None:
    w = _module_weights(folder).get("layer_weights")
    start = cfg.get("layer_start", 4)
    ok = (start == 1 and w is not None and w.numel() == n_layers and float(w[0]) > 0
          and float(w[-1]) == float(w[0]) and not w[1:-1].any())
    if not ok:
        raise FormatError(f"{folder}: WeightedLayerPooling (layer_start={start}, weights "
                          f"{None if w is None else w.tolist()}) is not the average of the first and "
                          f"last of the {n_layers} layers, the one layer mix simkit has (first-last-avg)")


def _read_dense_pooler(folder: Path, cfg: dict, hidden: int) -> tuple[Pooler, str]:
    act = str(cfg.get("activation_function", "torch.nn.modules.activation.Tanh")).rsplit(".", 1)[-1]
    if act not in _ACTIVATIONS or cfg.get("in_features") != hidden or cfg.get("out_features") != hidden:
        raise FormatError(f"{folder / 'config.json'}: Dense {cfg.get('in_features')}→"
                          f"{cfg.get('out_features')} with {act} after CLS pooling; simkit's pooler is "
                          f"{hidden}→{hidden} with identity or tanh")
    state = _module_weights(folder)
    pooler = Pooler(hidden, _ACTIVATIONS[act])
    with torch.no_grad():
        pooler.dense.weight.copy_(state["linear.weight"].float())
        if cfg.get("bias", True):
            pooler.dense.bias.copy_(state["linear.bias"].float())
        else:
            pooler.dense.bias.zero_()
    return pooler.eval(), _ACTIVATIONS[act]


def _max_seq_length(backbone_dir: Path, default: int, max_pos: int) -> int:
    """sentence_bert_config.json's max_seq_length (ST < 6), else the tokenizer's model_max_length
    (where ST 6 keeps it; an unset one is a huge number), else ``default``."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"),
                      ("tokenizer_config.json", "model_max_length")):
        f = backbone_dir / name
        value = read_json(f).get(key) if f.is_file() else None
        if isinstance(value, int) and 2 < value <= max_pos:
            return value
    return default
