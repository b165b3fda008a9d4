"""The paper's evaluation: probes of frozen features (Table 2), the ablations (Fig. 4) and
the transfer between cities (§4.4.1).

Every model, UrbanCLIP and baselines alike, is a feature extractor: fit once on the cells (self-
supervised, indicators unseen), then frozen features for every cell. For each split kind and
seed a probe per indicator is fit on the train cells, tuned on val and scored on test. Only the
probe and the split change with the seed, unless ``pretrain_per_seed``.

Fitting is the slow part, so each model's features are saved under ``out_dir/features/`` (and
UrbanCLIP's checkpoints under ``out_dir/models/``) named by a hash of everything that changes
them: a killed evaluation resumes without refitting the models it finished.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from urbangeo._atomic import atomic_path
from urbangeo.errors import InputError
from urbangeo.learn import report
from urbangeo.learn.baselines import BASELINES, FeatureExtractor, make_baseline
from urbangeo.learn.data import CellData
from urbangeo.learn.metrics import regression_metrics
from urbangeo.learn.probe import ProbeOptions, fit_probe, labelled_log
from urbangeo.learn.report import ProbeResult, Summary, sample_name
from urbangeo.learn.splits import SPLIT_KINDS, split_cells
from urbangeo.learn.train_options import TrainOptions
from urbangeo.progress import SILENT, Progress

URBANCLIP_VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "urbanclip-no-lm": ("UrbanCLIP w/o L_LM", {"lambda_lm": 0.0}),
    "urbanclip-no-con": ("UrbanCLIP w/o L_Con", {"lambda_con": 0.0}),
    "urbanclip-raw-text": ("UrbanCLIP w/o refinement", {"caption_column": "caption_raw"}),
    "urbanclip": ("UrbanCLIP", {}),
}
"""UrbanCLIP and its ablations (paper Fig. 4): label and the training options they change."""

TRANSFER = "transfer"
OUTPUT_NAMES = ("evaluation.md", "evaluation.csv", "evaluation_r2.png")
TRANSFER_FRACTIONS = (0.8, 0.2, 0.0)
"""Transfer probes learn from all of the source city: its cells split into train and val only."""


MODEL_KEYS = (*BASELINES, *URBANCLIP_VARIANTS)
"""Every row evaluate knows, in the table's order: baselines, ablations, UrbanCLIP last."""


@dataclass(frozen=True)
class EvalOptions:
    """What to evaluate and how; ``models``/``targets`` ``None`` mean all of them.

    ``model_dir`` makes the "urbanclip" row use that trained model instead of pretraining one.
    ``epochs`` applies to UrbanCLIP and to the baselines that train.
    """

    models: tuple[str, ...] | None = None
    targets: tuple[str, ...] | None = None
    seeds: int = 3
    splits: tuple[str, ...] = SPLIT_KINDS
    epochs: int = 10
    preset: str = "tiny"
    batch_size: int = 32
    lr: float | None = None
    model_dir: Path | None = None
    pretrain_per_seed: bool = False
    block_size_m: float | None = None
    resnet_weights: Path | None = None
    probe: ProbeOptions = ProbeOptions()
    device: str = "auto"

    def checked(self) -> EvalOptions:
        """These options with ``models`` resolved, or InputError naming what is wrong."""
        models = tuple(dict.fromkeys(self.models)) if self.models else MODEL_KEYS
        unknown = [m for m in models if m not in MODEL_KEYS]
        if unknown:
            raise InputError(f"unknown model(s) {', '.join(unknown)}: choose from "
                             f"{', '.join(MODEL_KEYS)}")
        bad_splits = [s for s in self.splits if s not in SPLIT_KINDS]
        if bad_splits or not self.splits:
            raise InputError(f"split kinds must be some of {', '.join(SPLIT_KINDS)}, got "
                             f"{', '.join(self.splits) or 'none'}")
        if self.seeds < 1:
            raise InputError(f"seeds must be at least 1, got {self.seeds}")
        if self.epochs < 1:
            raise InputError(f"epochs must be at least 1, got {self.epochs}")
        if self.model_dir is not None and "urbanclip" not in models:
            raise InputError("--model is the 'urbanclip' row's model: add urbanclip to --models "
                             "or drop --model")
        return replace(self, models=models, splits=tuple(dict.fromkeys(self.splits)))


@dataclass
class UrbanCLIPFeatures:
    """UrbanCLIP (or an ablation) as a feature extractor: pretrain into ``model_dir`` (resumable),
    then the image encoder's embedding. Without ``train`` it uses ``model_dir`` as it is."""

    key: str
    label: str
    model_dir: Path
    train: TrainOptions | None
    device: str = "auto"

    def fit(self, data: CellData, *, progress: Progress = SILENT) -> None:
        if self.train is None or self.model_dir.is_dir():  # given, or trained before a kill
            return
        from urbangeo.learn.pretrain import train_model

        train_model(data, self.model_dir, self.train, progress=progress)

    def transform(self, data: CellData, *, progress: Progress = SILENT) -> np.ndarray:
        from urbangeo.learn.embed import default_cache, embed_cells

        # A user's own model shares predict's and similar's embedding cache beside the cells;
        # the models evaluate trains for itself keep their features in the evaluation folder.
        cache = default_cache(data.cells_path) if self.train is None else None
        return embed_cells(self.model_dir, data, device=self.device, cache=cache,
                           progress=progress)


@dataclass
class EvalReport:
    """What :func:`evaluate` or :func:`evaluate_transfer` wrote and measured.

    ``fit_seconds``: per model, the seconds this run spent fitting it and extracting features;
    models whose features were already saved are listed in ``reused`` instead.
    """

    out_dir: Path
    results: list[ProbeResult]
    summaries: list[Summary]
    labels: dict[str, str]
    split_titles: dict[str, str]
    fit_seconds: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [self.out_dir / name for name in OUTPUT_NAMES]

    def lines(self) -> list[str]:
        """Mean test R² (± std over seeds) per model and indicator, one block per split kind."""
        indicators = list(dict.fromkeys(s.indicator for s in self.summaries))
        width = max(len(label) for label in self.labels.values())
        lines = []
        for split in self.split_titles:
            rows = {(s.model, s.indicator): s for s in self.summaries if s.split == split}
            if not rows:
                continue
            lines.append(f"{split}: test R² (mean ± std over seeds)")
            lines.append(" " * (width + 2) + "".join(f"{i:>16}" for i in indicators))
            for model, label in self.labels.items():
                found = [rows.get((model, ind)) for ind in indicators]
                lines.append(f"  {label:<{width}}" + "".join(
                    f"{_short(s.mean['r2'], s.std['r2']) if s else '':>16}" for s in found))
        if self.fit_seconds:
            lines.append("fit + features: " + ", ".join(f"{m} {t:.1f} s"
                                                        for m, t in self.fit_seconds.items()))
        if self.reused:
            lines.append(f"reused saved features: {', '.join(self.reused)}")
        return [*lines, *(f"-> {p}" for p in self.paths)]


def _short(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f}±{std:.3f}"


# ---- fitting with saved features ---------------------------------------------------------------

def _digest(value: object, n: int = 12) -> str:
    blob = json.dumps(value, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:n]


def data_fingerprint(data: CellData) -> str:
    """Identity of the cells a model sees: file, cells, captions and the chip store."""
    return _digest({"path": str(data.cells_path.resolve()), "ids": data.cell_ids,
                    "captions": data.captions, "chips": data.store.attrs})


def _extractor(key: str, seed: int, options: EvalOptions, image_size: int, device: str,
               models_dir: Path, fit_data: str,
               captions: dict[str, list[str]]) -> FeatureExtractor:
    """Model ``key``, unfitted, for ``seed``; UrbanCLIP variants train into ``models_dir``."""
    if key not in URBANCLIP_VARIANTS:
        return make_baseline(key, seed=seed, image_size=image_size, epochs=options.epochs,
                             batch_size=options.batch_size, device=device,
                             preset=options.preset, resnet_weights=options.resnet_weights)
    label, changes = URBANCLIP_VARIANTS[key]
    if key == "urbanclip" and options.model_dir is not None:
        return UrbanCLIPFeatures(key, f"{label} ({options.model_dir.name})", options.model_dir,
                                 None, device)
    extra = {} if options.lr is None else {"lr": options.lr}
    train = TrainOptions(preset=options.preset, epochs=options.epochs,
                         batch_size=options.batch_size, seed=seed, device=device,
                         image_size=image_size, **extra, **changes)
    # Named by what decides the weights, the caption texts rather than their column: when
    # refinement changed nothing, the w/o-refinement ablation reuses UrbanCLIP's training.
    weights = {**train.identity(), "caption_column": _digest(captions.get(train.caption_column))}
    name = f"urbanclip-con{train.lambda_con:g}-lm{train.lambda_lm:g}-seed{seed}"
    model_dir = models_dir / f"{name}-{_digest([weights, fit_data])}"
    return UrbanCLIPFeatures(key, label, model_dir, train, device)


def _fit_key(key: str, seed: int, options: EvalOptions, fit_data: str) -> str:
    """Hash of everything that changes a model's features besides the cells they are for."""
    given = None
    if key == "urbanclip" and options.model_dir is not None:
        from urbangeo.learn.embed import model_sha256

        given = model_sha256(options.model_dir)
    return _digest({"key": key, "seed": seed, "preset": options.preset, "epochs": options.epochs,
                    "batch_size": options.batch_size, "lr": options.lr, "model": given,
                    "resnet_weights": options.resnet_weights, "fit_data": fit_data})


def cached_features(extractor: FeatureExtractor, seed: int, fit_key: str, fit_on: CellData,
                    outputs: Sequence[CellData], out_dir: Path, *,
                    progress: Progress = SILENT) -> tuple[list[np.ndarray], float | None]:
    """Features of ``outputs`` from ``extractor`` fit on ``fit_on``.

    Saved as ``out_dir/features/<key>-seed<seed>-<fit_key>-<data hash>.npy``; when every
    array is saved the model is not fit again. Returns the arrays and the seconds fitting and
    extracting took (``None`` when all were reused).
    """
    paths = [out_dir / "features" / f"{extractor.key}-seed{seed}-{fit_key}-"
                                    f"{data_fingerprint(d)}.npy" for d in outputs]
    if all(p.exists() for p in paths):
        return [np.load(p) for p in paths], None
    start = time.perf_counter()
    extractor.fit(fit_on, progress=progress)
    arrays = []
    for data, path in zip(outputs, paths, strict=True):
        features = np.asarray(extractor.transform(data, progress=progress), dtype=np.float32)
        with atomic_path(path) as tmp:
            np.save(tmp, features)
        arrays.append(features)
    return arrays, time.perf_counter() - start


class _Fitter:
    """Builds and fits (or reuses) each model of one evaluation, recording labels and times."""

    def __init__(self, run: EvalReport, options: EvalOptions, fit_on: CellData,
                 outputs: Sequence[CellData], progress: Progress) -> None:
        from urbangeo.learn.device import resolve_device
        from urbangeo.model.config import UrbanCLIPConfig

        self.run, self.options, self.fit_on, self.outputs = run, options, fit_on, outputs
        self.progress = progress
        self.device = str(resolve_device(options.device))
        self.image_size = UrbanCLIPConfig.from_preset(options.preset).image_size
        self.fit_data = data_fingerprint(fit_on)

    def features(self, key: str, seed: int) -> list[np.ndarray]:
        extractor = _extractor(key, seed, self.options, self.image_size, self.device,
                               self.run.out_dir / "models", self.fit_data,
                               self.fit_on.captions)
        random_resnet = key == "resnet18" and self.options.resnet_weights is None
        self.run.labels[key] = extractor.label + (" (random init)" if random_resnet else "")
        arrays, seconds = cached_features(extractor, seed,
                                          _fit_key(key, seed, self.options, self.fit_data),
                                          self.fit_on, self.outputs, self.run.out_dir,
                                          progress=self.progress)
        if seconds is None:
            if key not in self.run.reused:
                self.run.reused.append(key)
        else:
            self.run.fit_seconds[key] = self.run.fit_seconds.get(key, 0.0) + seconds
        return arrays


# ---- evaluation --------------------------------------------------------------------------------

def _targets(datas: Sequence[CellData], wanted: tuple[str, ...] | None) -> list[str]:
    """Indicators to probe: ``wanted`` (each checked in every file) or those all files have."""
    if wanted:
        for data in datas:
            for name in wanted:
                data.target(name)  # InputError naming the file and what it has
        return list(dict.fromkeys(wanted))
    common = [name for name in datas[0].targets if all(name in d.targets for d in datas[1:])]
    if not common:
        raise InputError(f"{datas[0].cells_path} has no indicators (in common with the other "
                         "cells file) to probe: add them with `urbangeo indicators`")
    return common


def _seed_plan(options: EvalOptions) -> list[tuple[int, list[int]]]:
    """(fit seed, probe seeds): one fit with seed 0 probed with every seed, or a fit per seed."""
    if options.pretrain_per_seed:
        return [(seed, [seed]) for seed in range(options.seeds)]
    return [(0, list(range(options.seeds)))]


def _prepare(out_dir: Path, overwrite: bool) -> None:
    """Resume by default; ``overwrite`` first removes what an earlier evaluation left."""
    if overwrite:
        for name in ("features", "models"):
            shutil.rmtree(out_dir / name, ignore_errors=True)
        for name in OUTPUT_NAMES:
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def evaluate(data: CellData, out_dir: Path, options: EvalOptions, *, overwrite: bool = False,
             progress: Progress = SILENT) -> EvalReport:
    """Table 2 and Fig. 4 on one cells file: every model x split kind x seed x indicator.

    Writes ``evaluation.md``, ``evaluation.csv`` and ``evaluation_r2.png`` into ``out_dir``.
    """
    options = options.checked()
    targets = _targets([data], options.targets)
    out_dir = Path(out_dir)
    # Each indicator splits only its labelled cells, so every seed tests on ~20 % of them.
    splits = {(kind, seed, name): split_cells(data.xy, kind, seed,
                                              block_size_m=options.block_size_m,
                                              only=np.isfinite(labelled_log(data.target(name))))
              for kind in options.splits for seed in range(options.seeds) for name in targets}
    _prepare(out_dir, overwrite)
    run = EvalReport(out_dir, [], [], {}, {kind: SPLIT_TITLES[kind] for kind in options.splits})
    fitter = _Fitter(run, options, data, [data], progress)
    for i, key in enumerate(options.models, 1):
        progress.info(f"evaluate: model {i}/{len(options.models)} ({key})")
        for fit_seed, probe_seeds in _seed_plan(options):
            (features,) = fitter.features(key, fit_seed)
            progress.start(f"probe {key}", len(options.splits) * len(probe_seeds) * len(targets))
            for kind in options.splits:
                for seed in probe_seeds:
                    for name in targets:
                        m = fit_probe(features, data.target(name), splits[kind, seed, name],
                                      seed=seed, options=options.probe).metrics("test")
                        run.results.append(ProbeResult(key, name, kind, seed, m.r2, m.rmse,
                                                       m.mae, m.n))
                        progress.advance()
            progress.finish()
    _write(run, title="Urban indicator prediction (UrbanCLIP Table 2 protocol)",
           header=_header([data], targets, options, device=fitter.device,
                          split_note=_split_note(options)))
    return run


def evaluate_transfer(train: CellData, test: CellData, out_dir: Path, options: EvalOptions, *,
                      overwrite: bool = False, progress: Progress = SILENT) -> EvalReport:
    """Paper §4.4.1: fit every model and probe on ``train``'s cells, score on all of ``test``'s
    labelled cells. ``options.splits`` does not apply: the seed draws train's train/val cut."""
    options = options.checked()
    targets = _targets([train, test], options.targets)
    out_dir = Path(out_dir)
    _prepare(out_dir, overwrite)
    title = f"transfer {sample_name(train.cells_path)} -> {sample_name(test.cells_path)}"
    run = EvalReport(out_dir, [], [], {}, {TRANSFER: title})
    fitter = _Fitter(run, options, train, [train, test], progress)
    for i, key in enumerate(options.models, 1):
        progress.info(f"evaluate: model {i}/{len(options.models)} ({key})")
        for fit_seed, probe_seeds in _seed_plan(options):
            f_train, f_test = fitter.features(key, fit_seed)
            progress.start(f"probe {key}", len(probe_seeds) * len(targets))
            for seed in probe_seeds:
                labels = split_cells(train.xy, "random", seed, fractions=TRANSFER_FRACTIONS)
                for name in targets:
                    fit = fit_probe(f_train, train.target(name), labels, seed=seed,
                                    options=options.probe)
                    m = regression_metrics(labelled_log(test.target(name)),
                                           fit.predict_log(f_test))
                    run.results.append(ProbeResult(key, name, TRANSFER, seed, m.r2, m.rmse,
                                                   m.mae, m.n))
                    progress.advance()
            progress.finish()
    source, target = sample_name(train.cells_path), sample_name(test.cells_path)
    note = (f"Transfer (paper §4.4.1): every model is fit on {source} only; each probe learns "
            f"from {source}'s cells ({TRANSFER_FRACTIONS[0]:.0%} train, "
            f"{TRANSFER_FRACTIONS[1]:.0%} val to stop early, a random cut drawn by the seed) "
            f"and is scored on every labelled cell of {target}.")
    _write(run, title=f"Urban indicator prediction, {title}",
           header=_header([train, test], targets, options, device=fitter.device,
                          split_note=note))
    return run


def _write(run: EvalReport, *, title: str, header: list[str]) -> None:
    run.summaries = report.summarize(run.results)
    report.write_csv(run.out_dir / "evaluation.csv", run.results)
    report.write_markdown(run.out_dir / "evaluation.md", run.summaries, title=title,
                          header=header, split_titles=run.split_titles, labels=run.labels)
    panels = {kind: kind if kind == TRANSFER else f"{kind} split" for kind in run.split_titles}
    report.write_r2_plot(run.out_dir / "evaluation_r2.png", run.summaries,
                         split_titles=panels, labels=run.labels, title=title)


# ---- the report's header -----------------------------------------------------------------------

SPLIT_TITLES = {
    "random": "Random split (60 % train / 20 % val / 20 % test cells)",
    "blocks": "Spatial blocks split (whole blocks held out: less neighbour leakage)",
}


def _split_note(options: EvalOptions) -> str:
    blocks = (f"{options.block_size_m:g} m" if options.block_size_m
              else "4 x 4 cells")
    return ("Each split kind cuts the cells into train / val / test by a seed: random shuffles "
            f"cells, blocks assigns square blocks of {blocks} whole, so most of a test cell's "
            "neighbours are held out with it (cells on a block's edge still touch train "
            "cells).")


def is_synthetic(data: CellData) -> bool:
    """Whether the imagery or indicator rasters are urbangeo's generated sample city (their
    GeoTIFF tags say ``SYNTHETIC=yes``)."""
    import rasterio

    meta = data.cells_file.metadata
    rasters = [*(meta.get("chips") or {}).get("sources", []),
               *(spec.get("raster") for spec in (meta.get("indicators") or {}).values())]
    for path in rasters:
        if not path or not Path(path).is_file():
            continue
        try:
            with rasterio.open(path) as src:
                if str(src.tags().get("SYNTHETIC", "")).lower() == "yes":
                    return True
        except rasterio.errors.RasterioIOError:
            continue
    return False


def _header(datas: Sequence[CellData], targets: list[str], options: EvalOptions, *,
            device: str, split_note: str) -> list[str]:
    """What a reader needs to judge the table: the sample, the protocol, what ± means."""
    lines = []
    for data in datas:
        grid = data.cells_file.metadata.get("grid") or {}
        size = grid.get("cell_size_m") or grid.get("ground_cell_size_m") or math.nan
        lines.append(f"- Sample `{sample_name(data.cells_path)}`: {len(data)} cells with a chip "
                     f"from `{data.cells_path}` ({grid.get('crs', 'unknown CRS')}, {size:g} m "
                     "cells).")
    if any(is_synthetic(d) for d in datas):
        lines.append("- **Synthetic data**: the imagery and indicator rasters are urbangeo's "
                     "procedurally generated sample city. These numbers check that the pipeline "
                     "works; they say nothing about real cities or the paper's claims.")
    units = {name: datas[0].units.get(name, "") for name in targets}
    lines.append("- Indicators: " + ", ".join(f"{n} ({u})" if u else n
                                              for n, u in units.items()) + ".")
    lines.append("- Protocol: each model is fit without the indicators; its frozen features "
                 f"feed an MLP probe per indicator ({options.probe.hidden} hidden units, at most "
                 f"{options.probe.max_epochs} epochs), fit on the train cells and stopped early "
                 "on val. R², RMSE and MAE are on log1p(indicator) of the test cells (cells "
                 "without data are left out).")
    lines.append(f"- {split_note}")
    fit = ("each model pretrained again with every seed" if options.pretrain_per_seed
           else "models fit once with seed 0; only the split and probe change")
    lines.append(f"- ± is the sample standard deviation (ddof=1) over {options.seeds} seed(s) "
                 f"({fit}). Best mean R² per indicator in **bold**.")
    given = ""
    if options.model_dir:
        from urbangeo.model.config import UrbanCLIPConfig
        from urbangeo.model.io import read_model_config

        size = read_model_config(options.model_dir)["architecture"]["image_size"]
        given = (f"; the UrbanCLIP row uses the given model `{options.model_dir}` "
                 f"({size} px input, as trained; the other rows see "
                 f"{UrbanCLIPConfig.from_preset(options.preset).image_size} px)")
        if options.pretrain_per_seed:
            given += ", embedded, not retrained, for every seed"
    lines.append(f"- Training: preset `{options.preset}`, {options.epochs} epoch(s), batch "
                 f"{options.batch_size}, device {device}{given}.")
    if "resnet18" in (options.models or ()) and options.resnet_weights is None:
        lines.append("- ResNet-18 has random weights (no ImageNet weights file was given): a "
                     "random-features control, not the paper's ImageNet transfer.")
    if "urbanclip-raw-text" in (options.models or ()):
        lines += _raw_text_note(datas[0])
    return lines


def _raw_text_note(data: CellData) -> list[str]:
    """The w/o-refinement row differs from UrbanCLIP only where refinement changed a caption."""
    raw, refined = data.captions.get("caption_raw"), data.captions.get("caption")
    if not raw or not refined:
        return []
    same = sum(a == b for a, b in zip(raw, refined, strict=True))
    if same == len(raw):
        return [f"- Refinement changed none of the {len(raw)} captions, so the \"w/o "
                "refinement\" row is UrbanCLIP trained on identical text."]
    return [f"- Refinement changed {len(raw) - same} of {len(raw)} captions; the \"w/o "
            "refinement\" row trains on their raw text."]
