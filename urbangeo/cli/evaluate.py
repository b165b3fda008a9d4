"""``urbangeo evaluate``: the paper's Table 2, ablations (Fig. 4) and transfer test (§4.4.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from urbangeo import api
from urbangeo.cli.options import device_option
from urbangeo.cli.progress import progress_of, say

MODELS_HELP = (
    "Comma-separated rows to evaluate (repeatable) [default: all]. Baselines: pca, autoencoder, "
    "resnet18, tile2vec, pg-simclr, urbanvit (UrbanCLIP's image encoder without text), "
    "text-only (TF-IDF of the captions). UrbanCLIP: urbanclip and its ablations "
    "urbanclip-no-lm (contrastive loss only), urbanclip-no-con (language-model loss only), "
    "urbanclip-raw-text (captions before refinement).")


@click.command("evaluate")
@click.argument("cells", metavar="[CELLS_FILE]", required=False,
                type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output-dir", "output_dir", required=True,
              type=click.Path(path_type=Path, file_okay=False),
              help="Folder for evaluation.md, evaluation.csv, evaluation_r2.png and the fitted "
                   "models and features (kept so a rerun resumes).")
@click.option("--models", "models", multiple=True, metavar="M[,M...]", help=MODELS_HELP)
@click.option("--target", "targets", multiple=True, metavar="NAME",
              help="Indicator to predict (repeatable) [default: every indicator of the file].")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Seeds 0..N-1 of the split and probe; the table shows mean ± std over them.")
@click.option("--split", "splits", multiple=True, type=click.Choice(["random", "blocks"]),
              default=("random", "blocks"), show_default=True,
              help="How cells are split 60/20/20 into train/val/test (repeatable): random cells, "
                   "or whole 4x4-cell blocks, so most of a test cell's neighbours are held "
                   "out too.")
@click.option("--block-size", type=click.FloatRange(min=0, min_open=True), metavar="METRES",
              help="Side of the blocks of --split blocks [default: 4 cells].")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True,
              help="Training epochs of UrbanCLIP, its ablations and the trained baselines.")
@click.option("--preset", default="tiny", show_default=True,
              help="UrbanCLIP size (tiny, small, base...); its image size is every model's.")
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True,
              help="Training batch size of every trained model.")
@click.option("--model", "model", metavar="MODEL_DIR",
              type=click.Path(path_type=Path, file_okay=False),
              help="A model from `urbangeo train` for the urbanclip row, instead of "
                   "pretraining one here.")
@click.option("--pretrain-per-seed", is_flag=True,
              help="Fit every model again with each seed, so ± includes pretraining (slower).")
@click.option("--train-on", type=click.Path(path_type=Path, dir_okay=False), metavar="A.gpkg",
              help="Transfer test: fit every model and probe on this city's cells...")
@click.option("--test-on", type=click.Path(path_type=Path, dir_okay=False), metavar="B.gpkg",
              help="...and score on all labelled cells of this one (no CELLS_FILE).")
@click.option("--resnet-weights", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="ImageNet ResNet-18 weights (.safetensors/.pth) for the resnet18 row "
                   "[default: random init, nothing is downloaded].")
@device_option
@click.option("--overwrite", is_flag=True,
              help="Discard fitted models and features in the folder and start over.")
@click.pass_context
def evaluate(ctx: click.Context, **options: Any) -> None:
    """Compare UrbanCLIP with the baselines and ablations on CELLS_FILE (paper Table 2).

    Every model is fit on the cells without their indicators (self-supervised) and its
    frozen features feed a small MLP probe per indicator, trained on the train cells, stopped
    early on val and scored on test: R², RMSE and MAE of log1p(indicator), mean ± std over
    --seeds, per --split kind. Writes evaluation.md (the table, best R² in bold),
    evaluation.csv (every probe, one row) and evaluation_r2.png (bars with error bars).

    Fitted models (models/) and features (features/) stay in the output folder: rerunning the
    same command after a crash or Ctrl-C fits only what is missing; changing the epochs,
    preset or cells fits again. The demo's 576-cell city takes a few minutes on a CPU.

    \b
    Examples:
      urbangeo evaluate cells.gpkg -o evaluation/
      urbangeo evaluate cells.gpkg -o evaluation/ --models pca,urbanvit,urbanclip \\
          --target population --seeds 5 --split blocks --epochs 30
      # reuse a trained model for the urbanclip row
      urbangeo evaluate cells.gpkg -o evaluation/ --models resnet18,urbanclip --model model/
      # transfer: fit on one city, score on another
      urbangeo evaluate --train-on beijing.gpkg --test-on shanghai.gpkg -o transfer/
    """
    progress = progress_of(ctx)
    report = api.evaluate(options.pop("cells"), options.pop("output_dir"), **options,
                          progress=progress)
    for line in report.lines():
        say(progress, line)
