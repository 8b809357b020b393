"""AdamW and its learning-rate schedule: linear warm-up, then linear decay to zero.

The decay runs over the run's steps (``lr_schedule="steps"``) or over its time budget
(``"time"``, the budget schedule of Cramming, Geiping & Goldstein 2022): with ``"time"`` the
rate reaches zero just as ``time_budget`` runs out, however fast the machine is, so a run
sized in minutes (a lent GPU, a CI job) still ends annealed instead of cut off at full rate.

>>> factor = linear_schedule(warmup=0.1)
>>> [round(factor(p), 2) for p in (0.05, 0.1, 0.55, 1.0)]
[0.5, 1.0, 0.5, 0.0]
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from .config import TrainConfig


class Clock:
    """Seconds of training so far, counting the runs a checkpoint was resumed from.

    >>> clock = Clock(before=60.0); clock.elapsed() >= 60.0
    True
    """

    def __init__(self, before: float = 0.0):
        self.before = float(before)
        self.start = time.perf_counter()

    def restart(self) -> None:
        """Count from now (what happened since the clock was made is not training)."""
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.start


def linear_schedule(warmup: float) -> Callable[[float], float]:
    """Rate factor at ``progress`` in [0, 1]: up to 1 over ``warmup``, then down to 0 at 1."""
    def factor(progress: float) -> float:
        if progress < warmup:
            return progress / warmup
        return max(0.0, (1.0 - progress) / max(1e-12, 1.0 - warmup))

    return factor


def make_optimizer(model: torch.nn.Module, config: TrainConfig, total_steps: int,
                   clock: Clock | None = None) -> tuple[torch.optim.AdamW, LambdaLR]:
    """``(AdamW, LambdaLR)`` for ``config``.

    No weight decay on biases and LayerNorm weights, as BERT. The ``"steps"`` schedule warms
    up over ``max(1, warmup_ratio x total_steps)`` steps; ``"time"`` reads ``clock`` against
    ``config.time_budget`` each step (its first step, at time zero, runs at a rate near zero
    when there is a warm-up).
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    if config.lr_schedule == "time":
        if clock is None:
            raise ValueError("the time schedule needs the run's clock")
        factor = linear_schedule(config.warmup_ratio)
        budget = float(config.time_budget)

        def by_time(_step: int) -> float:
            return factor(min(1.0, max(0.0, clock.elapsed() / budget)))  # check_config: budget > 0

        return opt, LambdaLR(opt, by_time)
    warmup = max(1, int(total_steps * config.warmup_ratio))

    def by_step(step: int) -> float:
        # (step + 1): the first step already moves the weights
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return opt, LambdaLR(opt, by_step)
