"""``urbangeo predict``: indicators for every cell from a trained model (paper §3.3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from urbangeo import api
from urbangeo.cli.options import device_option, embed_batch_option
from urbangeo.cli.progress import progress_of, say


@click.command("predict")
@click.argument("cells", metavar="CELLS_FILE", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--model", "model", required=True, metavar="MODEL_DIR",
              type=click.Path(path_type=Path, file_okay=False),
              help="Model directory written by `urbangeo train` (config.json + "
                   "model.safetensors).")
@click.option("--target", "targets", required=True, multiple=True, metavar="NAME",
              help="Indicator column of CELLS_FILE to predict (see `urbangeo indicators`). "
                   "Repeatable: one probe per target.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="GeoPackage (.gpkg) to write, layer 'predictions'.")
@click.option("--raster-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Also write one Cloud-Optimized GeoTIFF per target here (TARGET_pred.tif, "
                   "one pixel per cell, with a QGIS .qml style).")
@click.option("--split", type=click.Choice(["random", "blocks"]), default="random",
              show_default=True,
              help="How cells are split 60/20/20 into train/val/test for the probe. random: "
                   "cells drawn at random. blocks: whole 4x4-cell blocks, so most of a test cell's "
                   "neighbours are held out with it (a harder test of transfer to new areas).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the split and the probe; the same seed gives the same predictions.")
@embed_batch_option
@device_option
@click.option("--overwrite", is_flag=True, help="Replace the output (and rasters) if they exist.")
@click.pass_context
def predict(ctx: click.Context, **options: Any) -> None:
    """Predict indicators for every cell of CELLS_FILE from a trained model.

    The model's image encoder stays frozen: each chip becomes one embedding (cached in
    CELLS.embeddings/, so a rerun or a crash re-embeds only what is missing; another model gets
    its own cache). A small MLP per target learns log1p(indicator) from the embeddings of the
    train cells, stopping early on the val cells, and predicts every cell with a chip.

    The output layer 'predictions' holds every cell of CELLS_FILE: has_chip, predicted,
    split, and per target the observed value, TARGET_pred (natural units), TARGET_pred_log and
    TARGET_residual_log (observed - predicted, log1p). Cells without a chip keep NULL
    predictions: they are never predicted from blank pixels. Prints R², RMSE and MAE on the
    test cells (log1p scale, as in the paper).

    \b
    Examples:
      urbangeo predict cells.gpkg --model model/ --target population -o predictions.gpkg
      urbangeo predict cells.gpkg --model model/ --target population --target carbon \\
          -o predictions.gpkg --raster-dir rasters/ --split blocks --seed 1
    """
    progress = progress_of(ctx)
    result = api.predict(**options, progress=progress)
    for line in result.lines():
        say(progress, line)
