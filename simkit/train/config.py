"""What a training run is asked to do: :class:`TrainConfig`, and the check of its values.

>>> check_config(TrainConfig(objective="simbert", batch_size=32, micro_batches=3))   # passes
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Literal, get_args

from ..errors import InputError, ParameterError, check_choice

Objective = Literal["simbert", "cosent", "mlm", "simcse"]
CosentScope = Literal["file", "batch"]
LrSchedule = Literal["steps", "time"]


@dataclasses.dataclass
class TrainConfig:
    objective: Objective = "simbert"
    batch_size: int = 32            # pairs per step (SimBERT puts 2 rows per pair)
    cosent_batch_size: int = 64     # labelled pairs per step for the CoSENT loss
    cosent_weight: float = 0.0      # simbert objective: weight of an extra CoSENT loss
    # "file": rank only pairs of the same input file (labels of different files need not share
    # a scale); "batch": every pair of the batch, as simkit did before (stages 1-5 of the default)
    cosent_scope: CosentScope = "file"
    epochs: int = 1
    max_steps: int | None = None
    time_budget: float | None = None  # seconds; stop (and save) when exceeded
    # "steps": warm up and decay over the steps; "time": over time_budget (counted across
    # resumes), so the rate reaches zero as the budget runs out on any machine
    lr_schedule: LrSchedule = "steps"
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    max_seq_length: int = 64
    mask_prob: float = 0.0          # RoFormer-Sim: mask this fraction of segment-0 tokens
    distill_weight: float = 0.0     # weight of the teacher-similarity distillation loss
    mlm_weight: float = 0.0         # other objectives: add masked LM on the sentences with this weight
    mlm_batch_size: int = 64        # sentences per step for the masked-LM loss
    mlm_prob: float = 0.15          # share of tokens masked (BERT's 80 / 10 / 10)
    simcse_weight: float = 0.0      # other objectives: add supervised SimCSE on NLI triples
    simcse_batch_size: int = 64     # triples per step for the SimCSE loss
    seed: int = 0
    bf16: bool = False
    # Batches of items of similar length (Hugging Face's group_by_length): far less padding,
    # but each batch then comes mostly from one source (lengths differ by source).
    group_by_length: bool = False
    # Forward passes per batch: its items sorted by length and cut into this many passes,
    # each padded to its own longest item. The losses are the whole batch's (same items,
    # same in-batch negatives); only the padding shrinks.
    micro_batches: int = 1
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10


_INTS = {"batch_size": 1, "cosent_batch_size": 1, "mlm_batch_size": 1, "simcse_batch_size": 1,
         "epochs": 1, "checkpoint_every": 1, "keep_checkpoints": 1, "log_every": 1, "micro_batches": 1,
         "seed": 0, "max_seq_length": 5}  # 5: [CLS] a [SEP] b [SEP] with a and b non-empty
# name: (lowest, highest, whether each end itself is allowed)
_FLOATS = {"lr": (0.0, math.inf, False, False), "weight_decay": (0.0, math.inf, True, False),
           "warmup_ratio": (0.0, 1.0, True, True), "max_grad_norm": (0.0, math.inf, False, False),
           "mask_prob": (0.0, 1.0, True, False), "mlm_prob": (0.0, 1.0, False, False),
           **{f"{w}_weight": (0.0, math.inf, True, False) for w in ("cosent", "distill", "mlm", "simcse")}}


def check_config(config: TrainConfig) -> None:
    """Refuse a config value that would crash the run or train nothing, naming it."""
    def is_int(v) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    check_choice("objective", config.objective, get_args(Objective))
    if config.cosent_scope not in get_args(CosentScope):
        raise ParameterError("cosent_scope", config.cosent_scope, f"one of: {', '.join(get_args(CosentScope))}")
    for name, low in _INTS.items():
        v = getattr(config, name)
        if not is_int(v) or v < low:
            raise ParameterError(name, v, f"an int >= {low}")
    if config.max_steps is not None and (not is_int(config.max_steps) or config.max_steps < 1):
        raise ParameterError("max_steps", config.max_steps, "an int >= 1 or None (the epochs decide)")
    for name, (low, high, low_ok, high_ok) in _FLOATS.items():
        v = getattr(config, name)
        real = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
        if not (real and (low < v or (low_ok and v == low)) and (v < high or (high_ok and v == high))):
            raise ParameterError(name, v, f"a number in {'[' if low_ok else '('}{low:g}, "
                             f"{high:g}{']' if high_ok else ')'}")
    budget = config.time_budget
    if budget is not None and not (isinstance(budget, numbers.Real) and math.isfinite(budget) and budget >= 0):
        raise ParameterError("time_budget", budget, "seconds >= 0 or None")
    check_choice("lr_schedule", config.lr_schedule, get_args(LrSchedule))
    if config.lr_schedule == "time" and not (budget is not None and budget > 0):
        raise InputError("lr_schedule='time' decays the rate over the time budget: give time_budget "
                         "(--time-budget) in seconds > 0")
    if config.micro_batches > 1 and config.objective == "mlm":
        raise InputError("micro_batches splits the pair losses (SimBERT, CoSENT, SimCSE); the masked-LM "
                         "loss has no in-batch negatives: use group_by_length (--group-by-length) for it")
    if not isinstance(config.group_by_length, bool):
        raise ParameterError("group_by_length", config.group_by_length, "True or False")
