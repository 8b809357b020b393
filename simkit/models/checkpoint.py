"""Loading and saving models: simkit directories, Hugging Face directories and hub ids.

A **simkit model directory** holds ``config.json`` (format ``simkit-model``, versioned),
``model.safetensors`` and the tokenizer files (``vocab.txt``, ``tokenizer.json``, …).
A **Hugging Face directory** (``config.json`` with ``model_type`` bert or roformer, plus
``model.safetensors`` or ``pytorch_model.bin``) is read as well: BertModel / RoFormerModel /
*ForMaskedLM weights, with BERT's tanh pooler and the MLM head kept where present, and so is a
sentence-transformers directory (``modules.json``; see :mod:`simkit.models.st_dir`). A string
that is neither is treated as a hub id and fetched with ``huggingface_hub`` (set
``HF_HUB_OFFLINE=1`` to forbid the network). bert4keras / Google TF checkpoints are converted
by :mod:`simkit.models.bert4keras`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import FormatError, InputError
from ..fsutil import atomic_dir, cfg_value, read_config, read_json, write_json
from ..pooling import check_pooling
from ..tokenization import Tokenizer
from .simbert import BACKBONES, SimBertModel

logger = logging.getLogger(__name__)

FORMAT = "simkit-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"


@dataclasses.dataclass
class ModelInfo:
    """What a model is, beside its weights: stored in (and read from) ``config.json``."""

    backbone: str
    pooling: str = "pooler"
    max_seq_length: int = 64
    pooler_activation: str = "linear"
    pre_tokenize: str = "none"
    source: str = ""
    extra: dict = dataclasses.field(default_factory=dict)


def _config_class(backbone: str):
    from transformers import BertConfig, RoFormerConfig

    return BertConfig if backbone == "bert" else RoFormerConfig


# ---------------------------------------------------------------------------- saving
def save_model(
    model: SimBertModel,
    tokenizer: Tokenizer,
    info: ModelInfo,
    path: str | os.PathLike,
    overwrite: bool = False,
    dtype: str = "fp32",
) -> Path:
    """Write a simkit model directory atomically; ``dtype='fp16'`` halves the file size."""
    from safetensors.torch import save_file

    if dtype not in ("fp32", "fp16"):
        raise InputError(f"unknown storage dtype {dtype!r}; expected 'fp32' or 'fp16'")
    store = torch.float16 if dtype == "fp16" else torch.float32
    state = {k: v.detach().to("cpu", store).contiguous() for k, v in model.state_dict().items()}
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "simkit_version": __version__,
        "backbone": model.backbone_type,
        "backbone_config": model.config.to_dict(),
        "has_pooler": model.pooler is not None,
        "has_lm_head": model.lm_head is not None,
        "pooler_activation": model.pooler.activation if model.pooler is not None else None,
        "pooling": info.pooling,
        "max_seq_length": info.max_seq_length,
        "pre_tokenize": tokenizer.pre_tokenize,
        "storage_dtype": dtype,
        "source": info.source,
        **({"extra": info.extra} if info.extra else {}),
    }
    # Unversioned (files directly inside, as Hugging Face-style tools expect); replaced by one
    # atomic exchange of the whole directory (see simkit.fsutil).
    with atomic_dir(path, overwrite=overwrite, kind=FORMAT, versioned=False) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        tokenizer.save(tmp)
        write_json(tmp / "config.json", config)
    return Path(path)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the weights (names, shapes and float32 values), whatever the file format:
    two models answer alike exactly when their fingerprints match."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return "sha256:" + h.hexdigest()[:16]


# --------------------------------------------------------------------------- loading
def load_model(
    name_or_path: str | os.PathLike, pre_tokenize: str | None = None
) -> tuple[SimBertModel, Tokenizer, ModelInfo]:
    """Load a model from a simkit dir, a Hugging Face dir or a hub id (see module doc).

    Returns the model in eval mode (fp32, CPU), its tokenizer and its :class:`ModelInfo`.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _load_dir(path, pre_tokenize)
    text = str(name_or_path)
    if path.exists():
        raise InputError(f"{path}: expected a model directory, found a file")
    if text.startswith((".", "/", "~")) or os.sep in text.replace("/", "") or text.count("/") > 1:
        raise InputError(f"{path}: no such model directory")
    return _load_dir(_download(text), pre_tokenize, source=text)


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(
            repo_id,
            allow_patterns=["*.json", "*.txt", "*.safetensors", "pytorch_model.bin",
                            "*/pytorch_model.bin"],  # sentence-transformers' 2_Dense/ and the like
        )
    except Exception as e:  # offline, unknown repo, no network: all end here
        raise InputError(
            f"{repo_id!r} is not a local directory and could not be fetched from the "
            f"Hugging Face hub ({type(e).__name__}: {e})"
        ) from None
    return Path(local)


def _load_dir(path: Path, pre_tokenize: str | None, source: str | None = None):
    if (path / "modules.json").is_file():  # a sentence-transformers directory
        from .st_dir import load_st_dir

        return load_st_dir(path, pre_tokenize, source or str(path))
    cfg_file = path / "config.json"
    if (path / "bert_config.json").is_file() and not cfg_file.is_file():
        raise InputError(
            f"{path} is a bert4keras / TF checkpoint; convert it first: "
            f"simkit convert bert4keras {path} -o OUT"
        )
    if not cfg_file.is_file():
        raise FormatError(f"{cfg_file}: not found; {path} is not a model directory")
    raw = read_json(cfg_file)
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        return _load_simkit(path, pre_tokenize)
    if isinstance(raw, dict) and raw.get("model_type") in BACKBONES:
        return _load_hf(path, raw, pre_tokenize, source or str(path))
    found = raw.get("model_type") or raw.get("format") if isinstance(raw, dict) else None
    raise FormatError(
        f"{cfg_file}: not a simkit or BERT/RoFormer model config "
        f"(model_type / format {found!r}; expected 'bert', 'roformer' or {FORMAT!r})"
    )


def _load_simkit(path: Path, pre_tokenize: str | None):
    from safetensors.torch import load_file

    cfg = read_config(path, FORMAT, FORMAT_VERSION)
    backbone = cfg.get("backbone")
    if backbone not in BACKBONES:
        raise FormatError(f"{path / 'config.json'}: unknown backbone {backbone!r}; expected {BACKBONES}")
    where = path / "config.json"
    cfg_value(cfg, "backbone_config", where, dict)
    for key in ("has_pooler", "has_lm_head"):
        cfg_value(cfg, key, where, bool, optional=True)
    for key, types in (("pooling", str), ("pre_tokenize", str), ("pooler_activation", str), ("source", str),
                       ("max_seq_length", int), ("extra", dict)):
        cfg_value(cfg, key, where, types, optional=True)
    try:
        hf_config = _config_class(backbone).from_dict(cfg["backbone_config"])
        model = SimBertModel(
            backbone,
            hf_config,
            with_pooler=cfg.get("has_pooler", True),
            with_lm_head=cfg.get("has_lm_head", True),
            pooler_activation=cfg.get("pooler_activation") or "linear",
        )
    except _BAD_CONFIG as e:
        raise FormatError(f"{where}: key 'backbone_config' does not describe a valid model ({type(e).__name__}: {e})") from None
    weights = path / WEIGHTS
    if not weights.is_file():
        raise FormatError(f"{weights}: not found; the model directory {path} has no weights")
    try:
        state = load_file(str(weights))
    except Exception as e:
        raise FormatError(f"{weights}: cannot read safetensors weights ({e})") from None
    _load_state(model, {k: v.float() for k, v in state.items()}, weights, strict=True)
    tokenizer = Tokenizer.load(path, pre_tokenize or cfg.get("pre_tokenize", "none"))
    _check_vocab(model, tokenizer, path)
    info = ModelInfo(
        backbone=backbone,
        pooling=cfg.get("pooling", "pooler"),
        max_seq_length=int(cfg.get("max_seq_length", 64)),
        pooler_activation=cfg.get("pooler_activation") or "linear",
        pre_tokenize=tokenizer.pre_tokenize,
        source=cfg.get("source") or str(path),
        extra=cfg.get("extra", {}),
    )
    check_pooling(info.pooling)
    return model.eval(), tokenizer, info


# What building a model from a hand-edited config raises (a head count of 0 divides by zero).
_BAD_CONFIG = (TypeError, ValueError, AttributeError, KeyError, RuntimeError, AssertionError, ArithmeticError)


def _read_hf_weights(path: Path) -> tuple[dict[str, torch.Tensor], Path]:
    st, pt = path / "model.safetensors", path / "pytorch_model.bin"
    if st.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(st)), st
        except Exception as e:
            raise FormatError(f"{st}: cannot read safetensors weights ({e})") from None
    if pt.is_file():
        try:  # weights_only: never unpickle arbitrary objects from a downloaded file
            return torch.load(str(pt), map_location="cpu", weights_only=True), pt
        except Exception as e:
            raise FormatError(f"{pt}: cannot read PyTorch weights ({e})") from None
    raise FormatError(f"{path}: no model.safetensors or pytorch_model.bin; the directory has no weights")


def _load_hf(path: Path, raw: dict[str, Any], pre_tokenize: str | None, source: str):
    backbone = raw["model_type"]
    state, wfile = _read_hf_weights(path)
    prefix = f"{backbone}."
    mapped: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.startswith(prefix):
            k = k[len(prefix):]
        if k.startswith("pooler.dense."):  # BertModel's pooler: dense + tanh
            mapped["pooler." + k[len("pooler."):]] = v
        elif k.startswith("cls.predictions.transform."):
            mapped["lm_head." + k[len("cls.predictions."):]] = v
        elif k == "cls.predictions.bias":
            mapped["lm_head.bias"] = v
        elif k.startswith(("embeddings.", "encoder.")):
            mapped["backbone." + k] = v
    try:
        hf_config = _config_class(backbone).from_dict(raw)
        model = SimBertModel(
            backbone,
            hf_config,
            with_pooler="pooler.dense.weight" in mapped,
            with_lm_head="lm_head.bias" in mapped,
            pooler_activation="tanh",
        )
    except _BAD_CONFIG as e:
        raise FormatError(f"{path / 'config.json'}: does not describe a valid model ({type(e).__name__}: {e})") from None
    _load_state(model, {k: v.float() for k, v in mapped.items()}, wfile, strict=False)
    tokenizer = Tokenizer.load(path, pre_tokenize)
    _check_vocab(model, tokenizer, path)
    # Plain BERT: first-last-avg is the best raw pooling in the BERT-whitening tables.
    info = ModelInfo(
        backbone=backbone,
        pooling="first-last-avg",
        max_seq_length=min(512, int(raw.get("max_position_embeddings", 512))),
        pooler_activation="tanh",
        pre_tokenize=tokenizer.pre_tokenize,
        source=source,
    )
    return model.eval(), tokenizer, info


def _load_state(model: SimBertModel, state: dict, file: Path, strict: bool) -> None:
    expected = set(model.state_dict())
    found = set(state)
    missing = sorted(expected - found)
    unexpected = sorted(found - expected)
    if strict and unexpected:
        raise FormatError(f"{file}: unexpected weights {unexpected[:10]} (and {max(0, len(unexpected) - 10)} more)")
    # RoFormer's sinusoidal table is a function of the config; everything else must be there.
    missing = [k for k in missing if not k.endswith("embed_positions.weight")]
    if missing:
        raise FormatError(
            f"{file}: missing weights {missing[:10]}"
            + (f" (and {len(missing) - 10} more)" if len(missing) > 10 else "")
        )
    for k, v in state.items():
        if k in expected and model.state_dict()[k].shape != v.shape:
            raise FormatError(
                f"{file}: weight {k} has shape {tuple(v.shape)}, "
                f"expected {tuple(model.state_dict()[k].shape)} from the config"
            )
    model.load_state_dict(state, strict=False)


def _check_vocab(model: SimBertModel, tokenizer: Tokenizer, path: Path) -> None:
    n_model = model.word_embeddings.shape[0]
    if tokenizer.vocab_size > n_model:
        raise FormatError(
            f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the model's "
            f"embedding matrix only {n_model}; tokenizer and weights do not belong together"
        )
