"""Predict indicators for every cell: frozen embeddings -> one probe per target -> GeoPackage.

The output keeps **every** cell of the cells file, so the map has no holes that look like zero:
cells without a chip are flagged (``has_chip``/``predicted`` false) with NULL predictions,
never predicted from blank pixels. Residuals on the log scale show where the model is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np

from urbangeo.errors import InputError
from urbangeo.geo.cells import CellsFile, write_cells
from urbangeo.geo.rasterize import write_cell_raster
from urbangeo.geo.styles import cells_style
from urbangeo.learn.data import CellData
from urbangeo.learn.embed import default_cache, embed_cells, model_sha256
from urbangeo.learn.metrics import Metrics
from urbangeo.learn.probe import ProbeFit, fit_probe, labelled_log
from urbangeo.learn.splits import SPLIT_KINDS, SplitKind, split_cells
from urbangeo.progress import SILENT, Progress

PREDICTIONS_LAYER = "predictions"


@dataclass
class PredictReport:
    """What :func:`predict_cells` wrote and how well each probe did on the test split."""

    output: Path
    targets: list[str]
    units: dict[str, str]
    test_metrics: dict[str, Metrics]
    counts: dict[str, int]
    target_counts: dict[str, dict[str, int]]
    split: str
    seed: int
    rasters: list[Path] = field(default_factory=list)

    def lines(self) -> list[str]:
        c = self.counts
        lines = [f"{c['predicted']} of {c['cells']} cells predicted ({c['cells'] - c['predicted']}"
                 f" without a chip left NULL); {self.split} split, seed {self.seed}"]
        for t in self.targets:
            m, tc = self.test_metrics[t], self.target_counts[t]
            units = f" [{self.units[t]}]" if self.units.get(t) else ""
            line = (f"{t}{units}: test R² {m.r2:.3f}, RMSE {m.rmse:.3f}, MAE {m.mae:.3f} "
                    f"(log1p scale, {m.n} test cells; trained on {tc['train']})")
            if tc["unlabelled"]:
                line += f"; {tc['unlabelled']} cells without a usable value left out of fitting"
            lines.append(line)
        lines += [f"-> {path}" for path in (self.output, *self.rasters)]
        return lines


def _check_outputs(output: Path, raster_dir: Path | None, targets: list[str],
                   overwrite: bool) -> dict[str, Path]:
    """Refuse bad names or unwanted overwrites before any work; the raster of each target."""
    if not targets:
        raise InputError("name at least one indicator to predict (--target NAME)")
    if len(set(targets)) != len(targets):
        raise InputError(f"a target is named twice in {targets}: name each once")
    if output.suffix.lower() != ".gpkg":
        raise InputError(f"output {output} must end in .gpkg (predictions are a GeoPackage)")
    rasters = {t: raster_dir / f"{t}_pred.tif" for t in targets} if raster_dir else {}
    existing = [p for p in (output, *rasters.values()) if p.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]} already exists: pass --overwrite to replace it, or "
                         "choose another output")
    return rasters


def _predictions_layer(data: CellData, targets: list[str], fits: dict[str, ProbeFit],
                       split: np.ndarray) -> gpd.GeoDataFrame:
    """Every cell of the cells file: observed, predicted and residual per target, NULL (NaN)
    where the cell has no chip."""
    cells = data.cells_file.cells
    n = len(cells)
    out = gpd.GeoDataFrame({"cell_id": cells["cell_id"].astype(str).to_numpy()},
                           geometry=cells.geometry.to_numpy(), crs=cells.crs)
    for column in ("row", "col"):
        out[column] = cells[column].to_numpy()
    predicted = np.zeros(n, dtype=bool)
    predicted[data.index] = True
    out["has_chip"] = cells["has_chip"].fillna(False).to_numpy(dtype=bool)
    out["predicted"] = predicted
    split_col = np.full(n, None, dtype=object)
    split_col[data.index] = np.where(split == "", None, split)  # "": no value to split
    out["split"] = split_col
    for t in targets:
        fit = fits[t]
        observed = cells[t].to_numpy(dtype=np.float64)
        pred, pred_log = np.full(n, np.nan), np.full(n, np.nan)
        pred_log[data.index] = fit.fitted_log
        pred[data.index] = np.clip(np.expm1(fit.fitted_log), 0.0, None)
        observed_log = np.full(n, np.nan)
        observed_log[data.index] = fit.y_log
        out[t] = observed
        out[f"{t}_pred"] = pred
        out[f"{t}_pred_log"] = pred_log
        out[f"{t}_residual_log"] = observed_log - pred_log
    return out


def predict_cells(data: CellData, model_dir: str | Path, targets: list[str], output: str | Path,
                  *, raster_dir: str | Path | None = None, split: SplitKind = "random",
                  seed: int = 0, batch_size: int = 64, device: str = "auto",
                  overwrite: bool = False, cache: Path | None = None,
                  progress: Progress = SILENT) -> PredictReport:
    """Embed the cells (cached beside the cells file), fit one probe per target on the
    ``split``'s train cells, predict every cell with a chip and write ``output``
    (layer ``predictions``) plus, with ``raster_dir``, one COG per target."""
    model_dir, output = Path(model_dir), Path(output)
    targets = list(targets)
    if split not in SPLIT_KINDS:
        raise InputError(f"unknown split '{split}': choose one of {', '.join(SPLIT_KINDS)}")
    if output.resolve() == data.cells_path.resolve():
        raise InputError(f"-o {output} is the cells file itself: predictions go to a file of "
                         "their own (e.g. predictions.gpkg), so the cells, chips and captions "
                         "stay intact")
    rasters = _check_outputs(output, Path(raster_dir) if raster_dir else None, targets, overwrite)
    target_values = {t: data.target(t) for t in targets}  # InputError for unknown names
    features = embed_cells(model_dir, data, batch_size=batch_size, device=device,
                           cache=cache or default_cache(data.cells_path), progress=progress)
    # Split the cells that have a value for some target (as evaluate does), so cells outside
    # the indicator rasters do not eat into the test set.
    labelled = np.any([np.isfinite(labelled_log(v)) for v in target_values.values()], axis=0)
    labels = split_cells(data.xy, split, seed, only=labelled)
    progress.start("probe", len(targets))
    fits = {}
    for t in targets:
        fits[t] = fit_probe(features, target_values[t], labels, seed=seed)
        progress.advance(1, t)
    progress.finish()

    layer = _predictions_layer(data, targets, fits, labels)
    units = {t: data.units.get(t, "") for t in targets}
    test = {t: fits[t].metrics("test") for t in targets}
    counts = {"cells": len(layer), "with_chip": int(layer["has_chip"].sum()),
              "predicted": len(data)}
    metadata: dict[str, Any] = {"grid": data.cells_file.metadata["grid"]}  # for rasterize
    metadata["predictions"] = {
        "model_dir": str(model_dir.resolve()), "model_sha256": model_sha256(model_dir),
        "targets": targets, "units": units, "split": split, "seed": seed,
        "test_metrics": {t: m.as_dict() for t, m in test.items()},
        "counts": counts, "target_counts": {t: fits[t].counts for t in targets},
        "source_cells": str(data.cells_path.resolve()),
    }
    cf = CellsFile(cells=layer, metadata=metadata, layer=PREDICTIONS_LAYER,
                   style_qml=cells_style(layer, f"{targets[0]}_pred"))
    write_cells(output, cf)
    for t, path in rasters.items():
        write_cell_raster(cf, [f"{t}_pred"], path, progress=progress)
    return PredictReport(output=output, targets=targets, units=units, test_metrics=test,
                         counts=counts, target_counts={t: fits[t].counts for t in targets},
                         split=split, seed=seed, rasters=list(rasters.values()))
