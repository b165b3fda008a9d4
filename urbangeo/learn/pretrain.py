"""Pretraining UrbanCLIP on a cells file's chips and captions (paper §3 and §4.1.3).

One run: tokenizer (a BPE trained on the captions, a saved one, or CLIP's for CoCa weights),
captions fitted to the context at sentence borders, AdamW with linear warm-up and cosine decay,
gradient clipping, mixed precision on CUDA only, flips and 90-degree turns of the chips, a
validation loss per epoch, and the best epoch's weights saved as a model directory.

Runs survive being killed: checkpoints go to ``MODEL_DIR.partial/`` (:mod:`.checkpoint`) and
the batches and augmentations are a pure function of (seed, epoch, position)
(:mod:`.train_batches`), so on CPU a resumed run ends with the same weights, bit for bit, as
one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from urbangeo.errors import InputError, ModelError
from urbangeo.learn.checkpoint import WorkDir, partial_dir
from urbangeo.learn.data import CellData, to_model_input
from urbangeo.learn.device import resolve_device
from urbangeo.learn.train_batches import (
    augment,
    epoch_batches,
    steps_per_epoch,
    train_val_positions,
)
from urbangeo.learn.train_options import MIN_CELLS, TrainOptions
from urbangeo.model import UrbanCLIP, UrbanCLIPConfig, UrbanTokenizer
from urbangeo.model.io import build_with_weights, load_model, save_model
from urbangeo.progress import SILENT, Progress

__all__ = ["TrainOptions", "TrainReport", "Trial", "grid_search", "train_model"]

VAL_BATCH = 32
"""Validation batches have this fixed size, whatever the training batch size: the contrastive
loss grows with the batch, so only a fixed size makes grid-search trials comparable."""

LOSS_NAMES = ("total", "con", "lm")


@dataclass
class Trial:
    """One grid-search pair and how well it did (its best validation loss)."""

    lr: float
    batch_size: int
    best_val_loss: float
    best_epoch: int


@dataclass
class TrainReport:
    """What a run did; ``train_loss`` is the last epoch's mean (total/con/lm).

    ``seconds`` and ``images_per_s`` measure this process's training steps (a resumed run
    counts only the part it ran); ``captions`` counts captions cut to fit the context.
    """

    model_dir: Path
    preset: str
    device: str
    epochs: int
    steps: int
    best_epoch: int
    best_val_loss: float | None
    train_loss: dict[str, float]
    images_per_s: float
    seconds: float
    n_train: int
    n_val: int
    resumed_from_step: int | None = None
    captions: dict[str, int] = field(default_factory=dict)
    lr: float = 0.0
    batch_size: int = 0
    trials: list[Trial] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"trained a {self.preset} UrbanCLIP for {self.epochs} epochs ({self.steps} "
               f"steps, lr {self.lr:g}, batch {self.batch_size}) on {self.n_train} cells "
               f"-> {self.model_dir}"]
        if self.best_val_loss is None:
            out.append("no validation cells: kept the last epoch")
        else:
            out.append(f"best epoch {self.best_epoch}: validation loss {self.best_val_loss:.4f}"
                       f" on {self.n_val} cells (kept)")
        loss = self.train_loss
        out.append(f"last epoch's training loss {loss['total']:.4f} (contrastive "
                   f"{loss['con']:.4f}, captioning {loss['lm']:.4f})")
        resumed = (f", resumed from step {self.resumed_from_step}"
                   if self.resumed_from_step is not None else "")
        out.append(f"{self.images_per_s:.1f} images/s on {self.device}, {self.seconds:.1f} s"
                   + resumed)
        if self.captions.get("truncated") or self.captions.get("cut_mid_sentence"):
            out.append(f"captions longer than the context: {self.captions['truncated']} cut "
                       f"at a sentence border, {self.captions['cut_mid_sentence']} inside one")
        for trial in self.trials:
            mark = "  <- chosen" if (trial.lr, trial.batch_size) == (self.lr,
                                                                     self.batch_size) else ""
            out.append(f"grid trial lr {trial.lr:g}, batch {trial.batch_size}: best validation "
                       f"loss {trial.best_val_loss:.4f} (epoch {trial.best_epoch}){mark}")
        return out

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["model_dir"] = str(self.model_dir)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainReport:
        values = {**data, "model_dir": Path(data["model_dir"]),
                  "trials": [Trial(**t) for t in data.get("trials", [])]}
        return cls(**values)


# ---- one run ---------------------------------------------------------------------------------

def train_model(data: CellData, model_dir: str | Path, options: TrainOptions, *,
                overwrite: bool = False, progress: Progress = SILENT) -> TrainReport:
    """Pretrain UrbanCLIP on ``data``'s chips and captions; save the best epoch to ``model_dir``.

    An existing ``model_dir`` is refused unless ``overwrite``. An unfinished run of the same
    options and data in ``MODEL_DIR.partial/`` is resumed; one with other options is refused
    (InputError) unless ``overwrite``, which discards it.
    """
    return _train(data, Path(model_dir), options, overwrite=overwrite, progress=progress)


def _train(data: CellData, model_dir: Path, options: TrainOptions, *, overwrite: bool,
           progress: Progress, trials: Sequence[Trial] = ()) -> TrainReport:
    options.validate()
    refuse_existing(model_dir, overwrite)
    texts = data.caption_texts(options.caption_column)
    if len(data) < MIN_CELLS:
        raise InputError(f"{data.cells_path} has only {len(data)} cells with a chip; training "
                         f"needs at least {MIN_CELLS}: use a larger area or smaller cells")
    device = resolve_device(options.device)
    work = WorkDir(partial_dir(model_dir))
    identity = run_identity(options, data, texts)
    resuming = work.begin(identity, overwrite=overwrite)
    if resuming:
        tokenizer = work.load_tokenizer()
    else:
        tokenizer = make_tokenizer(options, texts, progress)
        work.save_tokenizer(tokenizer)
        work.mark_started(identity)
    config = model_config(options, tokenizer)
    fit = tokenizer.fit_to_context(texts, config.context_length, progress=progress)
    tokens = torch.from_numpy(tokenizer.encode_batch(fit.texts, config.context_length,
                                                     overflow="error"))
    checkpoint = work.latest() if resuming else None
    if checkpoint is not None:
        model = build_with_weights(config, checkpoint.weights, source=str(work.path))
        progress.info(f"resuming the unfinished run in {work.path} at step {checkpoint.step}")
    else:
        model = initial_model(config, options)
    trainer = _Trainer(data, tokens, model.to(device), options, device, progress)
    if checkpoint is not None:
        trainer.restore(checkpoint.state, checkpoint.best)
    trainer.run(work)

    report = TrainReport(
        model_dir=model_dir, preset=options.preset, device=str(device), epochs=options.epochs,
        steps=trainer.step, best_epoch=int(trainer.best_epoch or 0),
        best_val_loss=trainer.best_val, train_loss=trainer.log[-1]["train"],
        images_per_s=trainer.images_per_s(), seconds=trainer.seconds,
        n_train=len(trainer.train_idx), n_val=len(trainer.val_idx),
        resumed_from_step=checkpoint.step if checkpoint is not None else None,
        captions={"truncated": fit.n_truncated, "cut_mid_sentence": fit.n_cut_mid_sentence},
        lr=options.lr, batch_size=options.batch_size, trials=list(trials))
    model.load_state_dict(trainer.best_state)
    _save(model_dir, model, tokenizer, data, options, identity, report, trainer.log)
    work.remove()
    return report


def run_identity(options: TrainOptions, data: CellData, texts: Sequence[str]) -> dict[str, Any]:
    """What a resumed run must share with the one it continues: options and training data."""
    digest = hashlib.sha256(json.dumps([data.cell_ids, list(texts), data.tile_px,
                                        data.store.attrs.get("store_id")]).encode())
    return {"options": options.identity(),
            "data": {"n_cells": len(data), "cells_and_captions_sha256": digest.hexdigest()}}


def make_tokenizer(options: TrainOptions, texts: Sequence[str],
                   progress: Progress = SILENT) -> UrbanTokenizer:
    """CLIP's for CoCa weights, the given directory's, or a BPE trained on the captions."""
    from urbangeo.model import clip_tokenizer, train_bpe

    preset = UrbanCLIPConfig.from_preset(options.preset)
    if options.init_from:
        return clip_tokenizer(context_length=preset.context_length)
    if options.tokenizer:
        tokenizer = UrbanTokenizer.load(options.tokenizer)
        tokenizer.context_length = preset.context_length  # the model's context decides
        return tokenizer
    return train_bpe(texts, vocab_size=preset.vocab_size, context_length=preset.context_length,
                     progress=progress)


def model_config(options: TrainOptions, tokenizer: UrbanTokenizer) -> UrbanCLIPConfig:
    """The preset, sized for the tokenizer (unless CoCa weights fix the vocabulary)."""
    overrides: dict[str, Any] = {"lambda_con": options.lambda_con,
                                 "lambda_lm": options.lambda_lm}
    if options.image_size is not None:
        overrides["image_size"] = options.image_size
    if not options.init_from:
        overrides.update(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id,
                         bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
                         context_length=tokenizer.context_length)
    return UrbanCLIPConfig.from_preset(options.preset, **overrides)


def initial_model(config: UrbanCLIPConfig, options: TrainOptions) -> UrbanCLIP:
    """Random weights from the run's seed (without touching the caller's RNG), or CoCa's."""
    if options.init_from:
        from urbangeo.model import load_openclip_coca

        return load_openclip_coca(options.init_from, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        return UrbanCLIP(config)


def refuse_existing(model_dir: Path, overwrite: bool) -> None:
    """Refuse to replace a model directory unless asked (checked before any data is read)."""
    if model_dir.exists() and not overwrite:
        raise InputError(f"{model_dir} already exists: pass --overwrite to replace it, or "
                         "choose another -o")


def _save(model_dir: Path, model: UrbanCLIP, tokenizer: UrbanTokenizer, data: CellData,
          options: TrainOptions, identity: dict[str, Any], report: TrainReport,
          log: list[dict[str, Any]]) -> None:
    """The model directory contract read by predict, evaluate and similar."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        files = {p.name: p.read_text(encoding="utf-8") for p in Path(tmp).iterdir()}
    files["train_log.jsonl"] = "".join(json.dumps(record) + "\n" for record in log)
    grid = data.cells_file.metadata.get("grid") or {}
    extra = {
        "chips": {"tile_px": data.tile_px, "band_names": list(data.store.band_names),
                  "ground_resolution_m": data.ground_resolution_m},
        "caption_column": options.caption_column,
        "indicators": dict(data.units),
        "grid": {"crs": grid.get("crs"), "cell_size_m": grid.get("cell_size_m")},
        "training": {"options": options.to_dict(), "data": identity["data"],
                     "results": report.to_dict()},
    }
    save_model(model_dir, model, tokenizer={**tokenizer.config, "file": "tokenizer.json"},
               extra=extra, files=files)


# ---- the loop --------------------------------------------------------------------------------

def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


class _Trainer:
    """The optimisation state of one run and the loop over its epochs.

    Everything a resume needs is in :meth:`state`; nothing else carries over between steps.
    """

    def __init__(self, data: CellData, tokens: Tensor, model: UrbanCLIP, options: TrainOptions,
                 device: torch.device, progress: Progress) -> None:
        self.data, self.tokens, self.model, self.options = data, tokens, model, options
        self.device, self.progress = device, progress
        self.train_idx, self.val_idx = train_val_positions(len(data), options.val_frac,
                                                           options.seed)
        if len(self.train_idx) < 2:
            raise InputError(f"only {len(self.train_idx)} training cells remain after holding "
                             f"out {len(self.val_idx)} for validation: lower val_frac")
        self.per_epoch = steps_per_epoch(len(self.train_idx), options.batch_size)
        total = self.per_epoch * options.epochs
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]  # norms, biases, logit scale
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": options.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=options.lr, betas=(0.9, 0.98), eps=1e-6)
        warmup = round(options.warmup * total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: _lr_factor(step, total, warmup))
        cuda = device.type == "cuda"
        self.amp_dtype = (torch.bfloat16 if cuda and torch.cuda.is_bf16_supported()
                          else torch.float16 if cuda else None)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        # counters: the next epoch and batch to run, and what the current epoch has seen
        self.epoch = self.batch = self.step = 0
        self.sums = [0.0, 0.0, 0.0]
        self.log: list[dict[str, Any]] = []
        self.best_val: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, Tensor] | None = None
        self.seconds = 0.0
        self._images = 0
        self._step_seconds = 0.0

    # -- state --

    def state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": self.epoch, "batch": self.batch, "step": self.step,
                "sums": list(self.sums), "log": self.log, "best_val": self.best_val,
                "best_epoch": self.best_epoch}

    def restore(self, state: dict[str, Any], best: dict[str, Tensor] | None) -> None:
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state["scaler"]:
                self.scaler.load_state_dict(state["scaler"])
            self.epoch, self.batch, self.step = state["epoch"], state["batch"], state["step"]
            self.sums, self.log = list(state["sums"]), list(state["log"])
            self.best_val, self.best_epoch = state["best_val"], state["best_epoch"]
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"the checkpoint's training state does not fit this run ({exc}); "
                             "delete the MODEL_DIR.partial folder to start over") from exc
        self.best_state = best

    def _checkpoint(self, work: WorkDir) -> None:
        work.save(self.step, self.model.state_dict(), self.best_state, self.state())

    # -- loop --

    def run(self, work: WorkDir) -> None:
        started = time.perf_counter()
        opts = self.options
        for epoch in range(self.epoch, opts.epochs):
            batches = epoch_batches(len(self.train_idx), opts.batch_size, opts.seed, epoch)
            self.progress.start(f"epoch {epoch + 1}/{opts.epochs}", len(batches))
            if self.batch:
                self.progress.advance(self.batch, "resumed")
            for position in range(self.batch, len(batches)):
                losses = self._train_step(self.train_idx[batches[position]], epoch, position)
                self.sums = [s + v for s, v in zip(self.sums, losses, strict=True)]
                self.batch, self.step = position + 1, self.step + 1
                self.progress.advance(1, f"loss {losses[0]:.3f} · "
                                         f"{self.images_per_s():.0f} img/s")
                if self.step % opts.checkpoint_every == 0 and self.batch < len(batches):
                    self._checkpoint(work)
            self._end_epoch(epoch, len(batches))
            self._checkpoint(work)
            self.progress.finish()
        self.seconds += time.perf_counter() - started

    def _end_epoch(self, epoch: int, n_batches: int) -> None:
        train = {name: s / n_batches for name, s in zip(LOSS_NAMES, self.sums, strict=True)}
        val = self._validate()
        record = {"epoch": epoch + 1, "step": self.step, "lr": self.scheduler.get_last_lr()[0],
                  "train": train, "val": val}
        self.log.append(record)
        if val is None or self.best_val is None or val["total"] < self.best_val:
            self.best_val = None if val is None else val["total"]
            self.best_epoch = epoch + 1
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.epoch, self.batch, self.sums = epoch + 1, 0, [0.0, 0.0, 0.0]
        val_text = f", validation {val['total']:.4f}" if val else ""
        self.progress.info(f"epoch {epoch + 1}: training loss {train['total']:.4f}{val_text}")

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def _inputs(self, positions: np.ndarray, chips: np.ndarray) -> tuple[Tensor, Tensor]:
        size = self.model.config.image_size
        images = to_model_input(chips, size).to(self.device, non_blocking=True)
        return self.model.normalize_pixels(images), self.tokens[positions].to(self.device)

    def _train_step(self, positions: np.ndarray, epoch: int, position: int) -> list[float]:
        tic = time.perf_counter()
        opts = self.options
        chips = augment(self.data.images(positions), opts.seed, epoch, position)
        images, tokens = self._inputs(positions, chips)
        self.model.train()
        with self._autocast():
            losses = self.model(images, tokens)["losses"]
        total = losses["total"]
        if not self.scaler.is_enabled() and not torch.isfinite(total):
            raise ModelError(f"training diverged at step {self.step + 1} (loss {total.item()}):"
                             " lower the learning rate (--lr) and start over with --overwrite")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), opts.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        values = [float(losses[name].detach()) for name in LOSS_NAMES]
        self._images += len(positions)
        self._step_seconds += time.perf_counter() - tic
        return values

    @torch.no_grad()
    def _validate(self) -> dict[str, float] | None:
        if not len(self.val_idx):
            return None
        self.model.eval()
        sums = dict.fromkeys(LOSS_NAMES, 0.0)
        for chunk in _chunks(self.val_idx, VAL_BATCH):
            images, tokens = self._inputs(chunk, self.data.images(chunk))
            with self._autocast():
                losses = self.model(images, tokens)["losses"]
            for name in LOSS_NAMES:
                sums[name] += float(losses[name]) * len(chunk)
        return {name: value / len(self.val_idx) for name, value in sums.items()}

    def images_per_s(self) -> float:
        return self._images / self._step_seconds if self._step_seconds else 0.0


def _chunks(positions: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Near-equal chunks of at most ``size`` (no lone trailing cell)."""
    yield from np.array_split(positions, math.ceil(len(positions) / size))


# ---- grid search (paper §4.1.3: learning rate x batch size) ----------------------------------

def grid_search(data: CellData, model_dir: str | Path, options: TrainOptions, *,
                lrs: Sequence[float] = (), batch_sizes: Sequence[int] = (),
                trial_epochs: int | None = None, overwrite: bool = False,
                progress: Progress = SILENT) -> TrainReport:
    """Train one trial per (lr, batch size), keep the pair with the lowest validation loss.

    Trials train ``trial_epochs`` (default: ``options.epochs``) into ``MODEL_DIR.grid/``; a
    finished trial is not rerun, an unfinished one resumes. When trials are as long as the
    final run, the winning trial *is* the final run (same options, same seed, so retraining
    would give the same weights bit for bit on CPU) and is kept; shorter trials only pick the
    pair, which is then trained for ``options.epochs``. ``MODEL_DIR.grid/`` is removed at the
    end; the trials' results are in the report and the model's ``config.json``.
    """
    import shutil

    model_dir = Path(model_dir)
    options.validate()
    refuse_existing(model_dir, overwrite)
    if options.val_frac <= 0:
        raise InputError("a grid search compares validation losses: set val_frac above 0")
    trial_epochs = trial_epochs or options.epochs
    grid_dir = model_dir.with_name(model_dir.name + ".grid")
    trials: list[Trial] = []
    reports: dict[tuple[float, int], TrainReport] = {}
    for lr in list(lrs) or [options.lr]:
        for batch_size in list(batch_sizes) or [options.batch_size]:
            trial_options = replace(options, lr=lr, batch_size=batch_size, epochs=trial_epochs)
            trial_dir = grid_dir / f"lr{lr:g}-batch{batch_size}"
            report = _finished_trial(trial_dir, trial_options, data)
            if report is None:
                report = train_model(data, trial_dir, trial_options, overwrite=True,
                                     progress=progress)
            assert report.best_val_loss is not None  # val_frac > 0
            trial = Trial(lr, batch_size, report.best_val_loss, report.best_epoch)
            trials.append(trial)
            reports[lr, batch_size] = report
            progress.info(f"grid trial lr {lr:g}, batch {batch_size}: best validation loss "
                          f"{trial.best_val_loss:.4f} (epoch {trial.best_epoch})")
    best = min(trials, key=lambda t: t.best_val_loss)
    final_options = replace(options, lr=best.lr, batch_size=best.batch_size)
    if trial_epochs == options.epochs:
        report = _promote_trial(grid_dir / f"lr{best.lr:g}-batch{best.batch_size}", model_dir,
                                reports[best.lr, best.batch_size], trials)
    else:
        report = _train(data, model_dir, final_options, overwrite=overwrite, progress=progress,
                        trials=trials)
    shutil.rmtree(grid_dir, ignore_errors=True)
    return report


def _finished_trial(trial_dir: Path, options: TrainOptions, data: CellData) -> TrainReport | None:
    """The report of a trial already trained with these options on this data, else None."""
    try:
        training = load_model(trial_dir).extra["training"]
    except (ModelError, KeyError):
        return None
    texts = data.caption_texts(options.caption_column)
    stored = {"options": TrainOptions(**training["options"]).identity(),
              "data": training["data"]}
    if stored != json.loads(json.dumps(run_identity(options, data, texts))):
        return None
    return TrainReport.from_dict(training["results"])


def _promote_trial(trial_dir: Path, model_dir: Path, report: TrainReport,
                   trials: list[Trial]) -> TrainReport:
    """Save the winning trial as the final model, its config recording every trial."""
    loaded = load_model(trial_dir)
    report = replace(report, model_dir=model_dir, trials=trials)
    training = {**loaded.extra["training"], "results": report.to_dict()}
    files = {p.name: p.read_text(encoding="utf-8") for p in trial_dir.iterdir()
             if p.suffix in (".json", ".jsonl") and p.name != "config.json"}
    save_model(model_dir, loaded.model, tokenizer=loaded.tokenizer,
               extra={**loaded.extra, "training": training}, files=files)
    return report
