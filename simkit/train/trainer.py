"""The training loop: AdamW, warm-up + linear decay, clipping, checkpoints that resume exactly.

>>> t = Trainer(model, tok, info, TrainConfig(objective="simbert", batch_size=32),
...             positives=[("花呗怎么还款", "怎么还花呗")])        # doctest: +SKIP
>>> t.train("runs/sim")   # runs/sim/model (best or last), checkpoints/, log.jsonl

A checkpoint holds the model, the optimizer, the scheduler, torch's RNG state and the
position in each data stream, so stopping after step k and resuming gives the same weights
as an uninterrupted run. Evaluation (any ``evaluator(encoder) -> {"main_score": ...}``)
runs at the end of every epoch and the best model is kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..collate import pad_batch, to_device
from ..encoder import Encoder
from ..errors import InputError, SimkitError
from ..fsutil import lock_path, write_json
from ..models.checkpoint import ModelInfo, load_model, save_model
from ..models.simbert import SimBertModel
from ..tokenization import Tokenizer
from .config import TrainConfig, check_config
from .data import LabelledPair
from .objectives import (
    cosent_loss,
    distill_loss,
    mask_tokens,
    mlm_loss,
    sentence_vectors,
    simbert_losses,
    simcse_loss,
)
from .schedule import Clock, make_optimizer

log = logging.getLogger(__name__)


class TrainingError(SimkitError):
    """Training had to stop (NaN loss, a checkpoint of another model, …)."""


# With group_by_length, batches are formed within windows of this many batches' items.
GROUP_WINDOW = 50


class Stream:
    """Shuffled batches over a list, epoch by epoch; its position is part of a checkpoint.

    With ``lengths`` (one per item), each batch holds items of similar length, as Hugging
    Face's ``group_by_length``: the epoch's shuffle is cut into windows of ``GROUP_WINDOW``
    batches, each window is sorted by length and cut into batches, and the full batches are
    shuffled (a short last batch stays last). A batch is still a random draw from its window,
    and padding nearly vanishes.

    >>> Stream(5, 2, seed=0, lengths=[3, 9, 1, 8, 2]).next()   # (indices, ends the epoch)
    (array([1, 3]), False)
    """

    def __init__(self, n: int, batch_size: int, seed: int, lengths: Sequence[int] | None = None):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.lengths = None if lengths is None else np.asarray(lengths)
        if self.lengths is not None and len(self.lengths) != n:
            raise ValueError(f"{len(self.lengths)} lengths for {n} items")
        self.epoch, self.index = 0, 0
        self._cached: tuple[int, np.ndarray] | None = None

    def _order(self) -> np.ndarray:
        if self._cached is not None and self._cached[0] == self.epoch:
            return self._cached[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n)
        if self.lengths is not None:
            window = GROUP_WINDOW * self.batch_size  # a multiple of batch_size: no batch straddles two
            parts = np.split(order, range(window, self.n, window))
            order = np.concatenate([w[np.argsort(-self.lengths[w], kind="stable")] for w in parts])
            full = self.n - self.n % self.batch_size
            batches = order[:full].reshape(-1, self.batch_size)
            order = np.concatenate([batches[rng.permutation(len(batches))].ravel(), order[full:]])
        self._cached = (self.epoch, order)
        return order

    def next(self) -> tuple[np.ndarray, bool]:
        """Indices of the next batch, and whether it ends an epoch."""
        order = self._order()
        idx = order[self.index : self.index + self.batch_size]
        self.index += self.batch_size
        end = self.index >= self.n
        if end:
            self.epoch, self.index = self.epoch + 1, 0
        return idx, end

    def steps_per_epoch(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def _lengths_key(self) -> str | None:
        # The grouped order is built from the lengths (capped by max_seq_length, counted by
        # the tokenizer): a resume must see the same ones to continue the same order.
        if self.lengths is None:
            return None
        return hashlib.sha256(self.lengths.astype(np.int64).tobytes()).hexdigest()[:16]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "n": self.n,
                "grouped": self.lengths is not None, "lengths": self._lengths_key()}

    def load_state_dict(self, s: dict) -> None:
        if s["n"] != self.n:
            raise TrainingError(f"checkpoint was made on {s['n']} training items, this run has {self.n}")
        grouped = bool(s.get("grouped", False))  # checkpoints from before grouping existed: False
        if grouped != (self.lengths is not None):
            raise TrainingError(f"checkpoint was made {'with' if grouped else 'without'} group_by_length, "
                                f"this run is {'without' if grouped else 'with'} it: the batch order would change")
        if grouped and s.get("lengths") != self._lengths_key():
            raise TrainingError("checkpoint's length-grouped batches were built from other item lengths "
                                "(another --max-seq-length or tokenizer?): the batch order would change")
        self.epoch, self.index = s["epoch"], s["index"]


class Trainer:
    def __init__(
        self,
        model: SimBertModel,
        tokenizer: Tokenizer,
        info: ModelInfo,
        config: TrainConfig,
        positives: Sequence[tuple[str, str]] = (),
        labelled: Sequence[LabelledPair] = (),
        sentences: Sequence[str] = (),
        triples: Sequence[tuple[str, str, str]] = (),
        evaluator: Callable[[Encoder], dict] | None = None,
        teacher: Encoder | None = None,
        device: str | None = None,
    ):
        check_config(config)
        self.model, self.tokenizer, self.info, self.config = model, tokenizer, info, config
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.positives, self.labelled = list(positives), list(labelled)
        self.sentences, self.triples = list(sentences), list(triples)
        self.evaluator, self.teacher = evaluator, teacher
        if config.objective == "simbert":
            if not self.positives:
                raise InputError("the simbert objective needs positive pairs; the training data has none "
                                 "(label 1, or >= the graded threshold)")
            if model.lm_head is None or model.pooler is None:
                raise InputError("the simbert objective needs a model with a pooler and an LM head")
        if (config.objective == "cosent" or config.cosent_weight > 0) and len(self.labelled) < 2:
            raise InputError("the CoSENT loss needs labelled pairs; the training data has fewer than 2")
        if config.objective == "cosent":
            labels: dict[int, set[float]] = {}
            for p in self.labelled:
                labels.setdefault(p.source if config.cosent_scope == "file" else 0, set()).add(p.label)
            if all(len(v) < 2 for v in labels.values()):
                if config.cosent_scope == "file":
                    raise InputError("the CoSENT loss needs at least two different labels within any one "
                                     "file; each file's labels are all equal (--cosent-scope batch ranks "
                                     "across files, if their labels share one scale)")
                raise InputError("the CoSENT loss needs at least two different labels; all labels are equal")
        if config.distill_weight > 0 and teacher is None:
            raise InputError("distill_weight > 0 needs a teacher model")
        if (config.objective == "mlm" or config.mlm_weight > 0) and not self.sentences:
            raise InputError("the masked-LM loss needs sentences; none were given")
        if (config.objective == "mlm" or config.mlm_weight > 0) and (
                model.lm_head is None or tokenizer.mask_token_id is None):
            raise InputError("the masked-LM loss needs a model with an LM head and a [MASK] token")
        if (config.objective == "simcse" or config.simcse_weight > 0) and not self.triples:
            raise InputError("the SimCSE loss needs NLI triples (premise, entailment, contradiction); none "
                             "were given")
        texts = ({t for a, b in self.positives for t in (a, b)} | {t for p in self.labelled for t in (p.a, p.b)}
                 | set(self.sentences) | {t for tri in self.triples for t in tri})
        texts = sorted(texts)
        self._ids = dict(zip(texts, tokenizer.tokenize_ids(texts), strict=True))
        sizes = {"simbert": (len(self.positives), config.batch_size),
                 "cosent": (len(self.labelled), config.cosent_batch_size),
                 "mlm": (len(self.sentences), config.mlm_batch_size),
                 "simcse": (len(self.triples), config.simcse_batch_size)}

        def stream(name: str, seed: int) -> Stream:
            return Stream(*sizes[name], seed, self._lengths(name) if config.group_by_length else None)

        self.main = stream(config.objective, config.seed)
        self.aux = stream("cosent", config.seed + 1) if (
            config.objective != "cosent" and config.cosent_weight > 0) else None
        # Further losses beside the main objective, each with its own stream over its data.
        self.extra = {name: stream(name, config.seed + 2 + k)
                      for k, name in enumerate(("mlm", "simcse"))
                      if name != config.objective and getattr(config, f"{name}_weight") > 0}
        self.step = 0
        self.best_score: float | None = None

    # -- batches ----------------------------------------------------------------------
    def _lengths(self, name: str) -> list[int]:
        """Tokens each item of a stream puts in its batch, as the batch builders cut them."""
        keep = self.config.max_seq_length - 2

        def n(text: str, cap: int = keep) -> int:
            return min(len(self._ids[text]), cap)

        if name == "simbert":
            return [self._pair_length(i) for i in range(len(self.positives))]
        if name == "cosent":
            return [n(p.a) + n(p.b) for p in self.labelled]
        if name == "mlm":
            return [n(t) for t in self.sentences]
        return [sum(n(t) for t in tri) for tri in self.triples]

    def _pad(self, rows: list[list[int]], types: list[list[int]] | None = None) -> dict:
        return pad_batch(rows, self.tokenizer.pad_token_id, types, self.device)

    def _singles(self, texts: list[str]) -> dict:
        keep = self.config.max_seq_length - 2
        cls_, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        return self._pad([[cls_, *self._ids[t][:keep], sep] for t in texts])

    def _parts(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """Positions of a batch's items per forward pass: by length, ``micro_batches`` parts."""
        if self.config.micro_batches == 1:
            return [np.arange(len(lengths))]
        order = np.argsort(-np.asarray(lengths), kind="stable")
        return [part for part in np.array_split(order, self.config.micro_batches) if len(part)]

    def _vectors(self, texts: list[str]) -> torch.Tensor:
        """Pooled vectors of single sentences, in ``texts`` order, one forward pass per part."""
        parts = self._parts([len(self._ids[t]) for t in texts])
        vecs = [sentence_vectors(self.model, **_ids_mask(self._singles([texts[i] for i in part])),
                                 pooling=self.info.pooling) for part in parts]
        if self.config.micro_batches == 1:
            return vecs[0]
        return torch.cat(vecs)[to_device(torch.from_numpy(np.argsort(np.concatenate(parts))), vecs[0].device)]

    def _pair_length(self, i: int) -> int:
        """Tokens of positive pair ``i`` in a SimBERT row, each side cut as _simbert_batch cuts it."""
        half = (self.config.max_seq_length - 3) // 2
        return sum(min(len(self._ids[t]), half) for t in self.positives[i])

    def _simbert_batches(self, idx: np.ndarray) -> list[dict]:
        """The step's SimBERT batch as ``micro_batches`` padded parts of similar-length pairs."""
        return [self._simbert_batch(idx[part]) for part in self._parts([self._pair_length(i) for i in idx])]

    def _simbert_batch(self, idx: np.ndarray) -> dict:
        half = (self.config.max_seq_length - 3) // 2
        rows, types = [], []
        for i in idx:
            a, b = (self._ids[t][:half] for t in self.positives[i])
            for x, y in ((a, b), (b, a)):
                r, t = self.tokenizer.encode_pair(x, y)
                rows.append(r)
                types.append(t)
        batch = self._pad(rows, types)
        if self.config.mask_prob > 0 and self.tokenizer.mask_token_id is not None:
            # RoFormer-Sim: hide part of the source so generation learns to fill in, not copy.
            ids = batch["input_ids"]
            seg0 = (batch["token_type_ids"] == 0) & batch["attention_mask"].bool()
            seg0 &= (ids != self.tokenizer.cls_token_id) & (ids != self.tokenizer.sep_token_id)
            hit = seg0 & (torch.rand(ids.shape, device=ids.device) < self.config.mask_prob)
            batch["target_ids"] = ids
            batch["input_ids"] = ids.masked_fill(hit, self.tokenizer.mask_token_id)
        return batch

    def _single_losses(self, cosent_idx: np.ndarray | None, simcse_idx: np.ndarray | None) -> dict:
        """CoSENT on labelled pairs and SimCSE on NLI triples, from one encoder pass over all
        their sentences: on a GPU a small model's step is bound by the work per operation, not
        by its size, so one large pass costs much less than five small ones. With
        ``micro_batches`` > 1 (small passes, for a CPU's memory and caches) each column of
        sentences is cut into its own passes instead, as one large pass is slower there."""
        pairs = [self.labelled[i] for i in cosent_idx] if cosent_idx is not None else []
        triples = [self.triples[i] for i in simcse_idx] if simcse_idx is not None else []
        columns = [c for c in ([p.a for p in pairs], [p.b for p in pairs], *([t[k] for t in triples] for k in range(3)))
                   if c]
        if not columns:
            return {}
        if self.config.micro_batches == 1:
            vecs = self._vectors([t for c in columns for t in c])
        else:
            vecs = torch.cat([self._vectors(c) for c in columns])
        n, m, out = len(pairs), len(triples), {}
        if pairs:
            cos = torch.nn.functional.cosine_similarity(vecs[:n].float(), vecs[n:2 * n].float(), dim=-1)
            labels = to_device(torch.tensor([p.label for p in pairs]), cos.device)
            groups = (to_device(torch.tensor([p.source for p in pairs]), cos.device)
                      if self.config.cosent_scope == "file" else None)
            out["cosent"] = cosent_loss(cos, labels, groups=groups)
        if triples:
            out["simcse"] = simcse_loss(*vecs[2 * n:].split(m))
        return out

    def _mlm(self, idx: np.ndarray) -> torch.Tensor:
        batch = self._singles([self.sentences[i] for i in idx])
        tok = self.tokenizer
        special = to_device(torch.tensor([tok.cls_token_id, tok.sep_token_id, tok.pad_token_id]), self.device)
        corrupted, chosen = mask_tokens(batch["input_ids"], batch["attention_mask"], special, tok.mask_token_id,
                                        self.model.config.vocab_size, self.config.mlm_prob)
        return mlm_loss(self.model, batch["input_ids"], corrupted, batch["attention_mask"], chosen)

    def _losses(self) -> tuple[dict[str, torch.Tensor], bool]:
        cfg = self.config
        idx, epoch_end = self.main.next()
        main = cfg.objective
        cosent_idx = idx if main == "cosent" else self.aux.next()[0] if self.aux is not None else None
        simcse_idx = idx if main == "simcse" else (
            self.extra["simcse"].next()[0] if "simcse" in self.extra else None)
        single = self._single_losses(cosent_idx, simcse_idx)
        # the main objective's loss has weight 1; the others theirs
        weight = {name: 1.0 if name == main else getattr(cfg, f"{name}_weight") for name in ("cosent", "simcse")}
        losses: dict[str, torch.Tensor] = {}
        if main == "simbert":
            losses.update(simbert_losses(self.model, self._simbert_batches(idx)))
        elif main == "mlm":
            losses["mlm"] = self._mlm(idx)
        elif main == "simcse":
            losses["simcse"] = single.pop("simcse")
        if "cosent" in single:
            losses["cosent"] = weight["cosent"] * single["cosent"]
        if main == "simbert" and cfg.distill_weight > 0:
            texts = [self.positives[i][k] for i in idx for k in (0, 1)]
            student = self._vectors(texts)
            teacher = to_device(torch.from_numpy(self.teacher.encode(texts, show_progress_bar=False)), student.device)
            losses["distill"] = cfg.distill_weight * distill_loss(student, teacher)
        if "mlm" in self.extra:
            losses["mlm"] = cfg.mlm_weight * self._mlm(self.extra["mlm"].next()[0])
        if "simcse" in single:
            losses["simcse"] = weight["simcse"] * single["simcse"]
        return losses, epoch_end

    def total_steps(self) -> int:
        per_epoch = self.main.steps_per_epoch()
        total = per_epoch * self.config.epochs
        return min(total, self.config.max_steps) if self.config.max_steps else total

    def train(self, output: str | Path, resume_from: str | Path | None = None, overwrite: bool = False) -> Path:
        """Train; write ``output/model`` (best if an evaluator is set, else last), checkpoints and log.

        A NaN / infinite loss raises :class:`TrainingError` at the next log, epoch end or
        checkpoint, naming its step; nothing after that step is written, but this trainer's
        model in memory has taken the steps up to the check (load the last checkpoint).
        """
        cfg, out = self.config, Path(output)
        if out.exists() and resume_from is None and not overwrite and any(out.iterdir()):
            raise InputError(f"{out} already exists and is not empty; pass --overwrite or --resume")
        torch.manual_seed(cfg.seed)
        self.model.to(self.device).train()
        total = self.total_steps()
        self.clock = Clock()
        opt, sched = make_optimizer(self.model, cfg, total, self.clock)
        if resume_from is not None:
            self._resume(Path(resume_from), opt, sched)
        out.mkdir(parents=True, exist_ok=True)  # after a refused resume: no empty output dir
        write_json(out / "train_config.json", {"train_config": dataclasses.asdict(cfg),
                                               "positives": len(self.positives), "labelled": len(self.labelled),
                                               "total_steps": total})
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=self.step, unit="step", desc="train",
                   disable=logging.getLogger().getEffectiveLevel() > logging.INFO)
        t0, logf = time.perf_counter(), open(out / "log.jsonl", "a", encoding="utf-8")
        self.clock.restart()  # loading a checkpoint does not count against the budget
        first = self.step
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
        opt.zero_grad(set_to_none=True)  # stale gradients of the caller's must not leak into step 1
        if cfg.lr_schedule == "time" and self._out_of_time(t0):  # a finished run, resumed: nothing to add
            log.info("the %ss time schedule was already spent at step %d", cfg.time_budget, self.step)
            total = self.step
        # Each step's loss is checked for NaN / inf at the next log, evaluation or checkpoint,
        # not at once: asking at once would make the host wait for the GPU on every step.
        unchecked: list[tuple[int, torch.Tensor]] = []
        try:
            while self.step < total:
                with autocast:
                    losses, epoch_end = self._losses()
                    loss = sum(losses.values())
                unchecked.append((self.step + 1, loss.detach()))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                opt.step()
                # Free the gradients here, not just before backward: held through the next
                # forward they raise the peak (4 x 768 model: 3.19 -> 2.70 GB max RSS).
                opt.zero_grad(set_to_none=True)
                sched.step()
                self.step += 1
                bar.update(1)
                out_of_time = self._out_of_time(t0)
                at_checkpoint = self.step % cfg.checkpoint_every == 0 or self.step == total or out_of_time
                if self.step % cfg.log_every == 0 or epoch_end or at_checkpoint:
                    _check_finite(unchecked, out)
                if self.step % cfg.log_every == 0 or self.step == total:
                    rec = {"step": self.step, "epoch": self.main.epoch, "loss": round(loss.item(), 5),
                           **{k: round(v.item(), 5) for k, v in losses.items()},
                           "lr": sched.get_last_lr()[0], "elapsed": round(self.clock.elapsed(), 1)}
                    logf.write(json.dumps(rec) + "\n")
                    logf.flush()
                    bar.set_postfix(loss=rec["loss"])
                if epoch_end or self.step == total or out_of_time:
                    self._evaluate(out, logf)
                if at_checkpoint:
                    self._checkpoint(out, opt, sched)
                if out_of_time:
                    if cfg.lr_schedule == "time":  # the planned end: the rate has decayed to zero
                        log.info("time budget of %ss spent at step %d; done", cfg.time_budget, self.step)
                    else:
                        log.warning("time budget of %ss reached at step %d; stopping", cfg.time_budget, self.step)
                    break
            else:
                if cfg.lr_schedule == "time" and self.step > first:
                    log.warning("the steps ran out (%d) at %.0f s of the %ss time schedule, before the rate "
                                "reached zero; give more --epochs or --max-steps", total,
                                self.clock.elapsed(), cfg.time_budget)
        finally:
            bar.close()
            logf.close()
        final = out / "model"
        best = out / "best"
        if best.is_dir():
            if final.exists():
                shutil.rmtree(final)
            shutil.copytree(best, final)
        else:
            self._save(final)
        return final

    def _out_of_time(self, t0: float) -> bool:
        """Whether the time budget is spent: this process's time, or the whole run's with the
        time schedule (its rate reaches zero at the budget, resumed runs included)."""
        budget = self.config.time_budget
        if budget is None:
            return False
        spent = self.clock.elapsed() if self.config.lr_schedule == "time" else time.perf_counter() - t0
        return spent > budget

    # -- evaluation, checkpoints --------------------------------------------------------
    def encoder(self) -> Encoder:
        return Encoder.from_model(self.model, self.tokenizer, self.info, device=str(self.device))

    def _evaluate(self, out: Path, logf) -> None:
        if self.evaluator is None:
            return
        self.model.eval()
        try:
            result = self.evaluator(self.encoder())
        finally:
            self.model.to(torch.float32).train()
        score = float(result["main_score"])
        logf.write(json.dumps({"step": self.step, "eval": result}) + "\n")
        logf.flush()
        log.info("step %d: main_score %.4f", self.step, score)
        if self.best_score is None or score > self.best_score:
            self.best_score = score
            self._save(out / "best", extra={"step": self.step, "main_score": score})

    def _save(self, path: Path, extra: dict | None = None) -> None:
        info = dataclasses.replace(self.info, max_seq_length=self.info.max_seq_length,
                                   extra={**self.info.extra, **(extra or {})})
        self.model.eval()
        save_model(self.model, self.tokenizer, info, path, overwrite=True)
        self.model.train()

    def _checkpoint(self, out: Path, opt, sched) -> None:
        ckdir = out / "checkpoints"
        path = ckdir / f"step-{self.step:07d}"
        self._save(path)
        state = {
            "step": self.step,
            "best_score": self.best_score,
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": torch.get_rng_state(),
            "main": self.main.state_dict(),
            "aux": self.aux.state_dict() if self.aux else None,
            "extra": {name: stream.state_dict() for name, stream in self.extra.items()},
            "model_config": self.model.config.to_dict(),
            "elapsed": self.clock.elapsed(),
        }
        tmp = path / ".trainer_state.pt.tmp"
        torch.save(state, tmp)
        tmp.rename(path / "trainer_state.pt")
        for old in sorted(ckdir.glob("step-*"))[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
            lock_path(old).unlink(missing_ok=True)  # its writer lock (this trainer is the only writer)

    def _resume(self, path: Path, opt, sched) -> None:
        if path.name == "checkpoints" or (path / "checkpoints").is_dir():
            ck = path if path.name == "checkpoints" else path / "checkpoints"
            found = sorted(ck.glob("step-*"))
            if not found:
                raise TrainingError(f"{ck}: no checkpoints to resume from")
            path = found[-1]
        state_file = path / "trainer_state.pt"
        if not state_file.is_file():
            raise TrainingError(f"{state_file}: not found; {path} is not a training checkpoint")
        try:  # weights_only: a pickle that would run code is refused by torch, reported here
            state = torch.load(state_file, map_location="cpu", weights_only=True)
        except Exception as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise TrainingError(f"{state_file}: not a loadable trainer state ({reason})") from None
        keys = ("step", "best_score", "optimizer", "scheduler", "rng", "main", "aux", "model_config")
        if not isinstance(state, dict) or not all(k in state for k in keys) or not isinstance(state["model_config"], dict):
            raise TrainingError(f"{state_file}: not a simkit trainer state (expected the keys {', '.join(keys)})")
        mine = {k: v for k, v in self.model.config.to_dict().items() if k in _SHAPE_KEYS}
        theirs = {k: v for k, v in state["model_config"].items() if k in _SHAPE_KEYS}
        if mine != theirs:
            raise TrainingError(f"{path}: checkpoint of another model ({theirs}); this model is {mine}")
        model, _, _ = load_model(path)
        self.model.load_state_dict(model.state_dict())
        try:
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            self.main.load_state_dict(state["main"])
            if self.aux is not None and state["aux"] is not None:
                self.aux.load_state_dict(state["aux"])
            for name, stream_state in (state.get("extra") or {}).items():
                if name in self.extra:
                    self.extra[name].load_state_dict(stream_state)
        except (KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError) as e:
            raise TrainingError(f"{state_file}: trainer state does not fit this run ({type(e).__name__}: {e})") from None
        self.step, self.best_score = state["step"], state["best_score"]
        self.clock.before = float(state.get("elapsed", 0.0))  # absent in older checkpoints
        log.info("resumed from %s at step %d", path, self.step)


_SHAPE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "embedding_size", "model_type")


def _check_finite(unchecked: list[tuple[int, torch.Tensor]], out: Path) -> None:
    """Raise at the first of the ``(step, loss)`` pairs whose loss is NaN or infinite; empty the list."""
    if not unchecked:
        return
    values = torch.stack([v.float() for _, v in unchecked]).cpu()
    bad = (~torch.isfinite(values)).nonzero()
    steps = [s for s, _ in unchecked]
    unchecked.clear()
    if len(bad):
        i = int(bad[0])
        raise TrainingError(f"loss became {values[i].item()} at step {steps[i]}; training stopped. The last good "
                            f"checkpoint is kept in {out / 'checkpoints'}")


def _ids_mask(batch: dict) -> dict:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
