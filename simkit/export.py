"""Export a simkit model (+ a fitted transform) as a sentence-transformers directory.

>>> export_sentence_transformers("my-model", "st-model/")                  # doctest: +SKIP
>>> SentenceTransformer("st-model/").encode(["花呗怎么还款"])              # stock ST, no simkit

The directory is in sentence-transformers' classic layout (``modules.json``, the backbone
through transformers at the top, ``1_Pooling/`` …), which sentence-transformers 3 to 6 load,
and which vector databases and RAG frameworks built on it accept. Module by module:

* backbone (BERT or RoFormer): ``Transformer``, the tokenizer files beside it;
* pooling ``cls`` / ``last-avg`` (``mean``): ``Pooling``; ``first-last-avg``:
  ``WeightedLayerPooling`` (layers 1..L, weights 1, 0, …, 0, 1) then mean ``Pooling``;
  ``pooler`` (SimBERT's linear pooler): CLS ``Pooling`` + ``Dense`` (identity, or tanh for
  BERT's pooler);
* the transform tail: ``Whitening`` is affine, ``x @ kernel + bias`` (bias = -mean·kernel),
  so a ``Dense`` with identity activation; ``RandomProjection`` a ``Dense`` without bias;
  ``Normalize`` a ``Normalize``.

What sentence-transformers cannot express is refused with the reason: jieba
pre-segmentation (word-level models), and transforms other than those three.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .errors import InputError, ParameterError, check_choice
from .fsutil import atomic_dir, write_json
from .models.checkpoint import load_model
from .models.st_dir import DENSE, NORMALIZE, POOLING, TRANSFORMER, WEIGHTED_LAYERS

EXPORT_FORMAT = "simkit-sentence-transformers"

ACTIVATIONS = {"linear": "torch.nn.modules.linear.Identity", "tanh": "torch.nn.modules.activation.Tanh"}
EXPORT_POOLINGS = ("cls", "pooler", "last-avg", "mean", "first-last-avg")


def export_sentence_transformers(
    model,
    output: str | os.PathLike,
    *,
    pooling: str | None = None,
    transform=None,
    max_seq_length: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``output``, a directory that ``SentenceTransformer(output)`` loads.

    ``model`` is a model dir / hub id or an in-memory :class:`~simkit.encoder.Encoder`;
    ``pooling`` and ``max_seq_length`` default to the model's. ``transform`` is a fitted
    :mod:`simkit.transforms` step or chain (or None), appended after the pooling.

    >>> chain = Chain([Whitening(256), Normalize()]).fit(enc.encode(corpus))   # doctest: +SKIP
    >>> export_sentence_transformers(enc, "st/", transform=chain)               # doctest: +SKIP
    """
    if hasattr(model, "tokenizer") and hasattr(model, "info"):  # an Encoder
        net, tok, info = model.model, model.tokenizer, model.info
        pooling = pooling or model.pooling
        max_seq_length = model.max_seq_length if max_seq_length is None else max_seq_length
    else:
        net, tok, info = load_model(model)
    pooling = pooling or info.pooling
    check_choice("pooling", pooling, EXPORT_POOLINGS)
    # The path or hub id the user named (info.source may be a free-text description).
    source = str(getattr(model, "model_path", model))
    if tok.pre_tokenize != "none":
        raise InputError(f"{source}: pre_tokenize={tok.pre_tokenize!r} (jieba word segmentation before "
                         "WordPiece) cannot be expressed in sentence-transformers, whose tokenizer is "
                         "the Hugging Face one alone; only character-level models export")
    if pooling == "pooler" and net.pooler is None:
        raise InputError(f"{source}: pooling 'pooler' needs a model with a pooler; this one has none")
    max_len = int(info.max_seq_length if max_seq_length is None else max_seq_length)
    max_pos = net.config.max_position_embeddings
    if not 3 <= max_len <= max_pos:
        raise ParameterError("max_seq_length", max_len, f"3..{max_pos} for this model")
    hidden = int(net.config.hidden_size)
    tail = _tail_modules(transform, hidden)

    modules: list[tuple[str, str, dict]] = []  # (type, folder, spec)
    n_layers = int(net.config.num_hidden_layers)
    if pooling == "first-last-avg":
        weights = torch.zeros(n_layers)
        weights[0] = weights[-1] = 1.0  # hidden_states[1] and [L]: (first + last) / 2
        modules.append((WEIGHTED_LAYERS, "WeightedLayerPooling", {
            "config": {"word_embedding_dimension": hidden, "layer_start": 1,
                       "num_hidden_layers": n_layers},
            "weights": {"layer_weights": weights}}))
    mode = "cls" if pooling in ("cls", "pooler") else "mean"
    modules.append((POOLING, "Pooling", {"config": _pooling_config(hidden, mode)}))
    if pooling == "pooler":
        dense = net.pooler.dense
        modules.append((DENSE, "Dense", _dense(dense.weight, dense.bias, net.pooler.activation)))
    modules += tail

    with atomic_dir(output, overwrite=overwrite, kind=EXPORT_FORMAT, versioned=False) as tmp:  # ST reads files in place
        dtype = net.dtype  # an Encoder may run in bf16; sentence-transformers gets float32 weights
        try:
            net.backbone.to(torch.float32).save_pretrained(str(tmp), safe_serialization=True)
        finally:
            net.backbone.to(dtype)
        tok.save(tmp)
        cfg = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        # WeightedLayerPooling reads every layer's output, which the backbone returns only if told
        cfg["output_hidden_states"] = pooling == "first-last-avg"
        cfg["format"] = EXPORT_FORMAT  # lets --overwrite replace this export, and nothing else
        write_json(tmp / "config.json", cfg)
        write_json(tmp / "sentence_bert_config.json", {"max_seq_length": max_len, "do_lower_case": False})
        write_json(tmp / "config_sentence_transformers.json", {
            "__version__": {"simkit": __version__, "pytorch": torch.__version__},
            "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"})
        entries = [{"idx": 0, "name": "0", "path": "", "type": TRANSFORMER}]
        for i, (kind, label, spec) in enumerate(modules, start=1):
            folder = f"{i}_{label}"
            entries.append({"idx": i, "name": str(i), "path": folder, "type": kind})
            (tmp / folder).mkdir()
            if "config" in spec:
                write_json(tmp / folder / "config.json", spec["config"])
            if "weights" in spec:
                from safetensors.torch import save_file

                save_file({k: v.detach().to("cpu", torch.float32).contiguous()
                           for k, v in spec["weights"].items()}, str(tmp / folder / "model.safetensors"))
        write_json(tmp / "modules.json", entries)
        (tmp / "README.md").write_text(_card(source, info.backbone, pooling, max_len, modules),
                                       encoding="utf-8")
    return Path(output)


def _pooling_config(hidden: int, mode: str) -> dict:
    # The legacy boolean keys: read by every sentence-transformers from 2.x to 6.x.
    return {"word_embedding_dimension": hidden, "pooling_mode_cls_token": mode == "cls",
            "pooling_mode_mean_tokens": mode == "mean", "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False, "include_prompt": True}


def _f32(x) -> torch.Tensor:
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _dense(weight, bias, activation: str = "linear") -> dict:
    """A Dense module spec: ``y = act(x @ weight.T + bias)``; ``weight`` is (out, in)."""
    weights = {"linear.weight": _f32(weight)}
    if bias is not None:
        weights["linear.bias"] = _f32(bias)
    out_f, in_f = weights["linear.weight"].shape
    return {"config": {"in_features": int(in_f), "out_features": int(out_f), "bias": bias is not None,
                       "activation_function": ACTIVATIONS[activation]},
            "weights": weights}


def _tail_modules(transform, dim: int) -> list[tuple[str, str, dict]]:
    """Dense / Normalize modules for a fitted transform (flattened), checking dimensions."""
    if transform is None:
        return []
    from .transforms import Chain, Normalize, RandomProjection, Whitening

    steps = list(transform.steps) if isinstance(transform, Chain) else [transform]
    flat = []
    while steps:
        s = steps.pop(0)
        if isinstance(s, Chain):
            steps[:0] = list(s.steps)
        else:
            flat.append(s)
    out = []
    for i, step in enumerate(flat):
        name = type(step).__name__
        d_in = step.__dict__.get("n_features_in_")
        if isinstance(step, Normalize):
            if d_in not in (None, dim):
                raise InputError(f"transform step {i} (Normalize) expects dimension {d_in}, "
                                 f"but the vectors before it have {dim}")
            out.append((NORMALIZE, "Normalize", {}))
            continue
        if not isinstance(step, (Whitening, RandomProjection)):
            raise InputError(f"transform step {i} ({name}) has no sentence-transformers module; "
                             "exportable: Whitening, RandomProjection, Normalize")
        if d_in is None:
            raise InputError(f"transform step {i} ({name}) is not fitted; fit it before exporting")
        if d_in != dim:
            raise InputError(f"transform step {i} ({name}) was fitted on dimension {d_in}, but the "
                             f"vectors before it have {dim} (another model or pooling?)")
        if isinstance(step, Whitening):  # x @ kernel + bias: Dense's weight is kernel.T
            out.append((DENSE, "Dense", _dense(np.asarray(step.kernel_).T, step.bias_)))
        else:
            out.append((DENSE, "Dense", _dense(step.components_, None)))
        dim = int(step.n_components_)
    return out


def _card(source: str, backbone: str, pooling: str, max_len: int, modules) -> str:
    names = " → ".join(["Transformer", *(label for _, label, _ in modules)])
    card = (f"# {Path(source).name or source}\n\nExported by simkit {__version__} from `{source}` "
            f"for sentence-transformers.\n\n- backbone: {backbone}\n- pooling: {pooling}\n"
            f"- max_seq_length: {max_len}\n- modules: {names}\n- similarity: cosine\n\n"
            "```python\nfrom sentence_transformers import SentenceTransformer\n"
            "model = SentenceTransformer(PATH)\n```\n")
    if backbone == "bert":
        card += ("\nThe backbone is saved without BERT's own pooler, which sentence-transformers does "
                 "not use; transformers reports `pooler.dense.*` as newly initialised when it loads "
                 "the backbone, and that is expected.\n")
    return card
