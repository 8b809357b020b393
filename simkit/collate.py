"""Right-padding of token-id rows into model inputs: the one collator every path uses.

>>> b = pad_batch([[101, 8, 102], [101, 102]], pad_id=0)
>>> b["input_ids"].tolist(), b["attention_mask"].tolist()
([[101, 8, 102], [101, 102, 0]], [[1, 1, 1], [1, 1, 0]])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int, types: Sequence[Sequence[int]] | None = None,
              device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """``{input_ids, attention_mask, token_type_ids}`` (B, L) int64, padded on the right.

    Filled in numpy and converted once: a ``torch.tensor`` per row costs more than the
    forward pass of a small model on short texts.
    """
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    tt = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = 1
        if types is not None:
            tt[i, : len(types[i])] = types[i]
    out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
           "token_type_ids": torch.from_numpy(tt)}
    return out if device is None else {k: to_device(v, device) for k, v in out.items()}


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` (on the host) moved to ``device``; to a GPU through pinned memory, asynchronously.

    A plain copy from pageable memory waits for all the work queued on the GPU, so each batch
    built on the host would stall the pipeline; a pinned, non-blocking copy does not.

    >>> to_device(torch.arange(3), "cpu").tolist()
    [0, 1, 2]
    """
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
