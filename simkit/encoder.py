"""Sentence vectors in the manner of sentence-transformers.

>>> enc = Encoder("path/to/model")                      # doctest: +SKIP
>>> enc.encode("今天天气不错").shape                     # (768,)
>>> enc.encode(["今天天气不错", "明天下雨"]).shape        # (2, 768) float32

Batches are formed over length-sorted texts with dynamic padding (padding to a fixed length
is ~6x slower on CPU) and the original order is restored, so a vector does not depend on the
batch it was computed in. With ``max_tokens_per_batch`` (e.g. ``batch_size`` x 32) batches
are sized by tokens instead: short texts go in larger batches, long ones in smaller.

``dtype='bf16'`` runs the model in bfloat16 (2.5-3.5x faster on CPUs with AMX);
``dtype='int8'`` runs the backbone's linear layers in dynamic int8 (torch's
``quantize_dynamic``: int8 weights, activations quantised per batch; the pooler stays fp32);
``backend='onnx'`` runs the backbone in ONNX Runtime (``dtype`` fp32 or int8: dynamic int8
with per-channel weights), exported once and cached (see :mod:`simkit.onnx_backend`).
Pooling is always done in float32, in torch.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .collate import pad_batch
from .errors import InputError, ParameterError, check_choice
from .models.checkpoint import ModelInfo, load_model, save_model, weights_fingerprint
from .models.simbert import SimBertModel
from .pooling import check_pooling, pool
from .threads import check_num_threads, configure_threads, default_num_threads, map_streams
from .tokenization import Tokenizer

logger = logging.getLogger(__name__)

DType = Literal["fp32", "bf16", "int8"]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # torch compute dtypes
Backend = Literal["torch", "onnx"]
# The dtypes each backend runs; int8 is dynamic quantisation on both (torch: fbgemm / oneDNN
# on the CPU; ONNX Runtime: U8S8, the VNNI kernels). ONNX Runtime's CPU kernels have no
# bfloat16 matmul.
BACKENDS = {"torch": ("fp32", "bf16", "int8"), "onnx": ("fp32", "int8")}


def default_model_path() -> str:
    """The model used when none is named: ``$SIMKIT_MODEL`` or the bundled default."""
    from . import assets

    return os.environ.get("SIMKIT_MODEL") or assets.default_model_dir()


class Encoder:
    """Encode texts into sentence vectors with a SimBERT / RoFormer-Sim / BERT model.

    Parameters mirror sentence-transformers where they overlap. ``pooling`` and
    ``max_seq_length`` default to what the model's config says. ``num_threads`` sets
    torch's (process-wide) intra-op thread count and ONNX Runtime's (default:
    :func:`simkit.threads.default_num_threads`). ``backend='onnx'`` loads the export in
    ``onnx_dir`` (written by :meth:`export_onnx`), or exports to a cache on first use.
    ``max_tokens_per_batch`` sizes batches by padded tokens instead of ``batch_size`` (None
    or 0, the default: batches of exactly ``batch_size``). ``num_streams`` > 1 (CPU only)
    runs that many batches at once, each on ``num_threads // num_streams`` threads (ONNX
    Runtime: the streams share one session): the same batches, more sentences a second for
    small models on few cores. The vectors equal those of one stream on that many threads;
    against ``num_threads`` threads they differ by float rounding (kernels split sums by
    thread count).

    >>> Encoder(dtype="int8", num_threads=2, num_streams=2).encode(["花呗怎么还款"]).shape
    (1, 384)
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike | None = None,
        *,
        pooling: str | None = None,
        max_seq_length: int | None = None,
        dtype: DType = "fp32",
        device: str | None = None,
        num_threads: int | None = None,
        pre_tokenize: str | None = None,
        backend: Backend = "torch",
        onnx_dir: str | os.PathLike | None = None,
        max_tokens_per_batch: int | None = None,
        num_streams: int = 1,
    ):
        path = model_name_or_path if model_name_or_path is not None else default_model_path()
        model, tokenizer, info = load_model(path, pre_tokenize=pre_tokenize)
        self.model_path = str(path)
        self._init(model, tokenizer, info, pooling, max_seq_length, dtype, device, num_threads,
                   backend, onnx_dir, max_tokens_per_batch, num_streams)

    @classmethod
    def from_model(
        cls,
        model: SimBertModel,
        tokenizer: Tokenizer,
        info: ModelInfo,
        *,
        pooling: str | None = None,
        max_seq_length: int | None = None,
        dtype: DType = "fp32",
        device: str | None = None,
    ) -> Encoder:
        """Wrap an in-memory model (e.g. during training) without a round trip to disk."""
        self = cls.__new__(cls)
        self.model_path = info.source
        self._init(model, tokenizer, info, pooling, max_seq_length, dtype, device, None)
        return self

    def _init(self, model, tokenizer, info, pooling, max_seq_length, dtype, device, num_threads,
              backend="torch", onnx_dir=None, max_tokens_per_batch=None, num_streams=1):
        check_choice("backend", backend, tuple(BACKENDS))
        check_choice("dtype", dtype, ("fp32", "bf16", "int8"))
        if dtype not in BACKENDS[backend]:
            why = "ONNX Runtime's CPU kernels have no bfloat16; bf16 runs on backend='torch'"
            raise InputError(f"dtype={dtype!r} is not available with backend={backend!r}: {why}")
        self.max_tokens_per_batch = _check_budget(max_tokens_per_batch)
        self.pooling = pooling or info.pooling
        check_pooling(self.pooling)
        if self.pooling == "pooler" and model.pooler is None:
            raise InputError(
                f"model {info.source!r} has no pooler; choose pooling 'cls', 'last-avg' or 'first-last-avg'"
            )
        self.max_seq_length = int(max_seq_length or info.max_seq_length)
        max_pos = model.config.max_position_embeddings
        if not 3 <= self.max_seq_length <= max_pos:
            raise InputError(
                f"max_seq_length={self.max_seq_length} is out of range; expected 3..{max_pos} for this model"
            )
        if num_threads is not None:
            configure_threads(num_threads)
        if backend == "onnx" or dtype == "int8":
            if device not in (None, "cpu"):
                raise InputError(f"dtype='int8' and backend='onnx' run on the CPU; got device={device!r}")
            device = "cpu"  # int8 kernels are CPU ones; with ONNX the torch model only pools
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if isinstance(num_streams, bool) or not isinstance(num_streams, int) or num_streams < 1:
            raise ParameterError("num_streams", num_streams, "a positive integer")
        if num_streams > 1 and self.device.type != "cpu":
            raise InputError(f"num_streams={num_streams} runs batches side by side on the CPU; "
                             f"got device={self.device.type!r}")
        # The threads the streams share: ONNX Runtime's are fixed in the session; torch's are
        # process-wide and read at encode time.
        self._onnx_threads = int(num_threads or default_num_threads()) if backend == "onnx" else 0
        if self._onnx_threads:
            check_num_threads(self._onnx_threads)
        threads = self._onnx_threads or torch.get_num_threads()
        if num_streams > threads:
            raise InputError(f"num_streams={num_streams} needs at least as many threads; "
                             f"num_threads is {threads}")
        self.num_streams = num_streams
        self.dtype = dtype
        self.backend = backend
        # Taken from the fp32 weights, before any cast, so bf16 and fp32 runs share it.
        self.fingerprint = weights_fingerprint(model)
        self.model = model.to(self.device, DTYPES.get(dtype, torch.float32)).eval()
        self.tokenizer = tokenizer
        self.info = info
        self.last_encode_info_: dict = {}
        self.session_ = None
        self.int8_backbone_ = None
        if backend == "onnx":
            self.session_ = self._onnx_session(onnx_dir, self._stream_threads())
        elif dtype == "int8":
            self.int8_backbone_ = _quantize_dynamic(self.model.backbone)

    # -- properties -----------------------------------------------------------------
    def get_sentence_embedding_dimension(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def model_card(self) -> dict:
        """What this encoder is, for manifests and index configs."""
        return {
            "model": self.model_path,
            "source": self.info.source,
            "backbone": self.info.backbone,
            "pooling": self.pooling,
            "max_seq_length": self.max_seq_length,
            "dtype": self.dtype,
            "backend": self.backend,
            "dim": self.get_sentence_embedding_dimension(),
            "fingerprint": self.fingerprint,
        }

    # -- encoding -------------------------------------------------------------------
    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        normalize_embeddings: bool = False,
        convert_to_numpy: bool = True,
        max_seq_length: int | None = None,
        progress_bar=None,
        max_tokens_per_batch: int | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Vectors of ``sentences``: (d,) for a str, (n, d) float32 for a list.

        Texts longer than ``max_seq_length`` tokens are truncated and a warning says how many;
        the count is also kept in ``self.last_encode_info_``.
        """
        single = isinstance(sentences, str)
        out = self.encode_poolings(
            [sentences] if single else sentences,
            [self.pooling],
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            normalize_embeddings=normalize_embeddings,
            max_seq_length=max_seq_length,
            progress_bar=progress_bar,
            max_tokens_per_batch=max_tokens_per_batch,
        )[self.pooling]
        if single:
            out = out[0]
        return out if convert_to_numpy else torch.from_numpy(out)

    def encode_poolings(
        self,
        sentences: Sequence[str],
        poolings: Sequence[str],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        normalize_embeddings: bool = False,
        max_seq_length: int | None = None,
        progress_bar=None,
        max_tokens_per_batch: int | None = None,
    ) -> dict[str, np.ndarray]:
        """One forward pass, several poolings: ``{pooling: (n, d) float32}``.

        ``progress_bar`` (anything with ``update(n)``, e.g. a tqdm bar spanning several calls)
        is advanced per batch instead of a bar of this call's own.
        """
        check_pooling(poolings)
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            bad = sentences if isinstance(sentences, str) else next(s for s in sentences if not isinstance(s, str))
            raise InputError(f"encode_poolings expects a list of str; got an element {bad!r}")
        if batch_size < 1:
            raise InputError(f"batch_size={batch_size}; expected a positive integer")
        budget = _check_budget(max_tokens_per_batch)
        budget = self.max_tokens_per_batch if budget is None else budget
        if "pooler" in poolings and self.model.pooler is None:
            raise InputError("pooling 'pooler' needs a model with a pooler; this one has none")
        max_len = int(max_seq_length or self.max_seq_length)
        n = len(sentences)
        dim = self.get_sentence_embedding_dimension()
        out = {p: np.empty((n, dim), dtype=np.float32) for p in poolings}
        ids, n_trunc = self.tokenizer.encode_batch(sentences, max_len) if n else ([], 0)
        self.last_encode_info_ = {"n": n, "truncated": n_trunc, "max_seq_length": max_len}
        if n_trunc:
            warnings.warn(
                f"{n_trunc} of {n} texts were longer than max_seq_length={max_len} tokens "
                "and were truncated",
                stacklevel=2,
            )
        # Longest first: the slowest batch runs first and memory peaks early, not late.
        order = np.argsort([-len(x) for x in ids], kind="stable")
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO and n > batch_size
        bar = progress_bar if progress_bar is not None else _progress(n, show_progress_bar)
        pad = self.tokenizer.pad_token_id

        def run(idx: np.ndarray) -> int:  # on a stream's thread when num_streams > 1
            with torch.inference_mode():
                b = pad_batch([ids[i] for i in idx], pad, device=self.device)
                mask = b["attention_mask"]
                hs = self._hidden_states(b["input_ids"], mask, first="first-last-avg" in poolings)
                for p in poolings:
                    v = pool(p, hs, mask, self.model.pool_cls if p == "pooler" else None)
                    if normalize_embeddings:
                        v = torch.nn.functional.normalize(v, dim=-1)
                    out[p][idx] = v.float().cpu().numpy()
            return len(idx)

        batches = list(_batches([len(ids[i]) for i in order], order, batch_size, budget))
        for done in map_streams(run, batches, self.num_streams, self._stream_threads()):
            bar.update(done)
        if progress_bar is None:
            bar.close()
        return out

    def _stream_threads(self) -> int:
        """Intra-op threads of each stream: the threads configured, shared among the streams."""
        return max(1, (self._onnx_threads or torch.get_num_threads()) // self.num_streams)

    def _hidden_states(self, input_ids: torch.Tensor, mask: torch.Tensor, first: bool = True):
        """The backbone's hidden states, indexed as transformers does (embeddings first).

        ONNX: pool() reads [1] (transformer layer 1) and [-1], the two outputs of the graph;
        layer 1 is fetched only when ``first`` (first-last-avg) asks for it."""
        if self.int8_backbone_ is not None:
            return self.int8_backbone_(input_ids=input_ids, attention_mask=mask,
                                       token_type_ids=torch.zeros_like(input_ids),
                                       output_hidden_states=True).hidden_states
        if self.session_ is None:
            return self.model(input_ids, mask).hidden_states
        out = self.session_.run(["first", "last"] if first else ["last"],
                                {"input_ids": input_ids.numpy(), "attention_mask": mask.numpy()})
        last = torch.from_numpy(out[-1])
        return (None, torch.from_numpy(out[0]) if first else None, last)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity matrix (n, m) between two sets of vectors."""
        a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
        return a @ b.T

    # -- ONNX -------------------------------------------------------------------------
    def export_onnx(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write this model's backbone as ONNX (``model.onnx`` fp32, ``model_int8.onnx``) with
        a ``config.json`` recording the fingerprint, opset and runtime versions; load it with
        ``Encoder(model, backend='onnx', onnx_dir=path)``."""
        from . import onnx_backend

        model = self.model.to(torch.float32)
        try:
            return onnx_backend.export(model, path, self.fingerprint, overwrite=overwrite)
        finally:
            self.model.to(DTYPES.get(self.dtype, torch.float32))

    def _onnx_session(self, onnx_dir, num_threads):
        from . import onnx_backend

        if onnx_dir is None:
            onnx_dir = onnx_backend.cache_dir(self.fingerprint)
            if not (onnx_dir / "config.json").is_file():
                logger.info("exporting %s to ONNX in %s", self.model_path, onnx_dir)
                try:
                    self.export_onnx(onnx_dir)
                except InputError:  # another process exported it meanwhile
                    if not (onnx_dir / "config.json").is_file():
                        raise
        file = onnx_backend.check_export(Path(onnx_dir), self.fingerprint, self.dtype)
        return onnx_backend.session(file, num_threads)

    # -- persistence ----------------------------------------------------------------
    def save(self, path: str | os.PathLike, overwrite: bool = False, dtype: str = "fp32") -> None:
        """Save as a simkit model directory (pooling and max_seq_length included)."""
        info = ModelInfo(**{**self.info.__dict__, "pooling": self.pooling,
                            "max_seq_length": self.max_seq_length})
        model = self.model.to(torch.float32)
        try:
            save_model(model, self.tokenizer, info, path, overwrite=overwrite, dtype=dtype)
        finally:
            self.model.to(DTYPES.get(self.dtype, torch.float32))


def _quantize_dynamic(backbone: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``backbone`` whose ``nn.Linear`` layers run in dynamic int8 (qint8 weights,
    per-batch activation scales); ``self.model`` keeps the fp32 weights, so save, export and
    the fingerprint see the original. Attention gets one fused q/k/v layer first
    (one int8 product and one activation quantisation where there were three)."""
    import copy

    from .models.attention import fuse_qkv

    with warnings.catch_warnings():
        # torch 2.13 marks the eager quantisation API deprecated in favour of torchao; simkit
        # pins torch, and the accuracy gate in the tests checks what this returns.
        warnings.filterwarnings("ignore", message=r"(?is).*(deprecat|torchao)")
        return torch.ao.quantization.quantize_dynamic(
            fuse_qkv(copy.deepcopy(backbone)), {torch.nn.Linear}, dtype=torch.qint8)


def _check_budget(max_tokens: int | None) -> int | None:
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 0):
        raise ParameterError("max_tokens_per_batch", max_tokens, "a positive integer "
                         "(0 = batches of exactly batch_size)")
    return max_tokens


def _batches(lengths: Sequence[int], order: np.ndarray, batch_size: int, max_tokens: int | None):
    """Index arrays of consecutive length-sorted (longest first) texts, each batch holding at
    most ``max_tokens`` padded tokens (its first text sets the width), at least one text;
    ``max_tokens`` None or 0: ``batch_size`` texts each."""
    start, n = 0, len(order)
    while start < n:
        size = max(1, max_tokens // max(1, lengths[start])) if max_tokens else batch_size
        yield order[start : start + size]
        start += size


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="sent", desc="encode", leave=False)
