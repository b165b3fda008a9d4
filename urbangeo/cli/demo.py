"""``urbangeo demo``: the pipeline on a generated synthetic city (see :mod:`urbangeo.demo`)."""

from __future__ import annotations

from pathlib import Path

import click

from urbangeo import api
from urbangeo.cli.progress import progress_of, say
from urbangeo.demo import EPOCHS


@click.command("demo")
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False),
              default=Path("outputs"), show_default=True, help="Folder for the sample and results.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the synthetic city, the training and the prediction split (same "
                   "seed, same results).")
@click.option("--overwrite", is_flag=True, help="Redo the demo over an existing output folder.")
@click.option("--epochs", type=click.IntRange(min=1), default=EPOCHS, show_default=True,
              help="Pretraining epochs of UrbanCLIP and of each ablation.")
@click.option("--eval-seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Seeds (splits and probes) the evaluation averages over.")
@click.option("--eval-models", metavar="KEYS",
              help="Comma-separated rows of the evaluation (see `urbangeo evaluate --help`) "
                   "[default: all].")
@click.pass_context
def demo(ctx: click.Context, output: Path, seed: int, overwrite: bool, epochs: int,
         eval_seeds: int, eval_models: str | None) -> None:
    """Run the whole pipeline on a bundled SYNTHETIC city (offline, no weights, a few
    minutes on 2 CPU cores).

    \b
    Generates a procedural 6 km city (imagery, population, GDP and carbon rasters, AOI) in
    OUTPUT/sample, then, into OUTPUT/:
      grid + indicators  cells.gpkg (576 cells of 250 m), population.tif
      chips, caption     64 px chips, describe captions refined by rule
      train              model/ (tiny UrbanCLIP)
      predict            predictions.gpkg + predictions/<indicator>_pred.tif
      evaluate           evaluation/evaluation.md|.csv|_r2.png: UrbanCLIP vs the paper's
                         baselines and ablations, random and spatial-block splits
    """
    progress = progress_of(ctx)
    api.demo(output, seed, overwrite, epochs=epochs, eval_seeds=eval_seeds,
             eval_models=eval_models, progress=progress, say=lambda line: say(progress, line))
