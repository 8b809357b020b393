"""ONNX Runtime backend of :class:`~simkit.encoder.Encoder`: export, int8 quantisation, sessions.

The backbone is exported once with ``torch.onnx.export`` (inputs ``input_ids``,
``attention_mask``; outputs ``first`` = output of transformer layer 1 and ``last`` = the last
layer, both (B, L, H) float32). Pooling stays outside the graph, in the encoder's own
:func:`~simkit.pooling.pool` with the fp32 pooler, so every pooling and
``encode_poolings`` work unchanged and int8 never touches the pooler.

An export directory holds ``model.onnx`` (fp32), ``model_int8.onnx`` (dynamic int8: per-channel
int8 weights, uint8 activations, the VNNI kernels) and ``config.json`` recording the weights
fingerprint, the opset and the onnx / onnxruntime / torch versions. Loading refuses another
onnxruntime or opset than the one recorded, and other weights, naming the file and both
versions. ONNX files are protobuf: loading runs no pickle.

Without an explicit directory the export is cached under ``$SIMKIT_CACHE`` (default
``~/.cache/simkit``) in ``onnx/<fingerprint>-ort<version>-opset<n>/``, so a new runtime or new
weights never meet an old export.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch

from . import __version__
from .errors import FormatError, InputError
from .fsutil import atomic_dir, read_config, write_json

FORMAT = "simkit-onnx"
FORMAT_VERSION = 1
OPSET = 17  # LayerNormalization is a single op from 17 on
FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx"}
INSTALL_HINT = "the ONNX backend needs the onnx extra: pip install 'simkit[onnx]' (onnxruntime, onnx)"


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    return onnxruntime


def runtime_versions() -> dict:
    import onnx

    return {"onnxruntime_version": _ort().__version__, "onnx_version": onnx.__version__,
            "torch_version": torch.__version__, "opset": OPSET}


def cache_dir(fingerprint: str) -> Path:
    """Where the export of weights ``fingerprint`` is cached for this runtime."""
    root = Path(os.environ.get("SIMKIT_CACHE") or Path.home() / ".cache" / "simkit")
    tag = fingerprint.split(":")[-1]
    return root / "onnx" / f"{tag}-ort{_ort().__version__}-opset{OPSET}"


def export(model, path: str | os.PathLike, fingerprint: str, overwrite: bool = False) -> Path:
    """Write ``model``'s backbone as ONNX (fp32 and int8) with its ``config.json``."""
    _ort()
    path = Path(path)
    # Flat, not versioned: ONNX Runtime opens model.onnx by path, and the export is a cache
    # entry written once per (weights, runtime), replaced whole if ever rewritten.
    with atomic_dir(path, overwrite=overwrite, kind=FORMAT, versioned=False) as tmp:
        was_training = model.training
        wrapper = _Backbone(model).eval()
        ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]], dtype=torch.int64)
        mask = (ids != 0).to(torch.int64)
        axes = {0: "batch", 1: "length"}
        try:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer warnings about Python control flow
                torch.onnx.export(
                    wrapper, (ids, mask), str(tmp / FILES["fp32"]), dynamo=False,
                    opset_version=OPSET, input_names=["input_ids", "attention_mask"],
                    output_names=["first", "last"],
                    dynamic_axes={k: axes for k in ("input_ids", "attention_mask", "first", "last")},
                )
        finally:
            # The TorchScript exporter restores the *wrapper's* mode recursively: keep the
            # model in the mode it had (eval), or dropout would silently turn on.
            model.train(was_training)
        quantize_int8(tmp / FILES["fp32"], tmp / FILES["int8"])
        write_json(tmp / "config.json", {
            "format": FORMAT, "format_version": FORMAT_VERSION, "simkit_version": __version__,
            "fingerprint": fingerprint, **runtime_versions(),
            "inputs": ["input_ids", "attention_mask"], "outputs": ["first", "last"],
            "files": {dt: {"file": f, "sha256": _sha256(tmp / f)} for dt, f in FILES.items()},
            "int8": {"method": "onnxruntime.quantization.quantize_dynamic", "per_channel": True,
                     "weight_type": "QInt8", "activation_type": "QUInt8",
                     "op_types": ["MatMul"]},
        })
    return path


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 of every MatMul: per-channel int8 weights, uint8 activations (U8S8, the
    VNNI kernels). Embedding lookups (Gather) stay fp32: they cost no time and int8 there
    only adds error."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), per_channel=True, reduce_range=False,
                     weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])


def check_export(path: Path, fingerprint: str, dtype: str) -> Path:
    """The ONNX file of ``dtype`` in export dir ``path``, after checking its config."""
    cfg = read_config(path, FORMAT, FORMAT_VERSION)
    where = path / "config.json"
    have = runtime_versions()
    for key in ("onnxruntime_version", "opset"):
        if cfg.get(key) != have[key]:
            raise FormatError(
                f"{where}: exported for {key.replace('_', ' ')} {cfg.get(key)!r}, but this "
                f"process has {have[key]!r}; export again with Encoder.export_onnx(dir) "
                "(or drop the directory and let the cache re-export)"
            )
    if cfg.get("fingerprint") != fingerprint:
        raise InputError(f"{where}: exported from other weights ({cfg.get('fingerprint')}) than "
                         f"the model being loaded ({fingerprint}); export this model again")
    entry = (cfg.get("files") or {}).get(dtype)
    if not isinstance(entry, dict) or entry.get("file") != FILES[dtype]:
        raise FormatError(f"{where}: no {dtype} model recorded")
    file = path / FILES[dtype]
    if not file.is_file():
        raise FormatError(f"{file}: not found (recorded in {where})")
    if _sha256(file) != entry.get("sha256"):
        raise FormatError(f"{file}: its sha256 differs from the one recorded in {where}; "
                          "the file was changed or truncated: export again")
    return file


def session(file: Path, num_threads: int | None = None):
    """An ONNX Runtime CPU session with all graph optimisations and the intra-op threads of
    :func:`simkit.threads.default_num_threads` (unless ``num_threads`` is given)."""
    from .threads import default_num_threads

    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(num_threads or default_num_threads())
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(file), so, providers=["CPUExecutionProvider"])


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Backbone(torch.nn.Module):
    """What the graph computes: hidden states of transformer layer 1 and of the last layer."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        hs = self.model(input_ids, attention_mask).hidden_states
        return hs[1], hs[-1]
