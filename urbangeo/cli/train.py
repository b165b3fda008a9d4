"""``urbangeo train``: pretrain UrbanCLIP on the cells' chips and captions (paper §3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from urbangeo import api
from urbangeo.cli.options import device_option
from urbangeo.cli.progress import progress_of, say
from urbangeo.errors import UrbangeoError
from urbangeo.learn.train_options import CAPTION_COLUMNS, TrainOptions
from urbangeo.model.config import PRESETS

DEFAULTS = TrainOptions()


def _floats(_ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...]:
    return tuple(float(v) for v in _split(param, value))


def _ints(_ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...]:
    return tuple(int(v) for v in _split(param, value))


def _split(param: click.Parameter, value: str | None) -> list[str]:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    for item in items:
        try:
            float(item) if param.name == "grid_lr" else int(item)
        except ValueError:
            raise click.BadParameter(f"{item!r} is not a number; give a comma-separated list "
                                     "such as 2e-5,2e-4 (or 16,32)") from None
    return items


@click.command("train")
@click.argument("cells", metavar="CELLS_FILE", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Model directory to write (config.json, model.safetensors, tokenizer.json, "
                   "train_log.jsonl).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="small", show_default=True,
              help="Network size. tiny: seconds on a CPU (demos, tests); small/base: a GPU; "
                   "coca_*: open_clip CoCa shapes, for --init-from.")
@click.option("--epochs", type=click.IntRange(min=1), default=DEFAULTS.epochs, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=DEFAULTS.batch_size,
              show_default=True, help="Image-caption pairs per step (the contrastive negatives).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=DEFAULTS.lr,
              show_default=True, help="Peak learning rate (AdamW, linear warm-up, cosine decay).")
@click.option("--lambda-con", type=click.FloatRange(min=0), default=DEFAULTS.lambda_con,
              show_default=True, help="Weight of the contrastive loss (0: captioning only).")
@click.option("--lambda-lm", type=click.FloatRange(min=0), default=DEFAULTS.lambda_lm,
              show_default=True, help="Weight of the captioning loss (0: contrastive only).")
@click.option("--caption-column", type=click.Choice(CAPTION_COLUMNS),
              default=DEFAULTS.caption_column, show_default=True,
              help="caption: refined text; caption_raw: the captioner's text as it came.")
@click.option("--val-frac", type=click.FloatRange(min=0, max=0.5, max_open=True),
              default=DEFAULTS.val_frac, show_default=True,
              help="Share of cells held out (seeded) for the validation loss that picks the "
                   "best epoch; 0 keeps the last epoch.")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help="Pixels the network sees (chips are resized) [default: the preset's].")
@click.option("--init-from", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Start from an open_clip CoCa checkpoint (.pt/.bin/.safetensors, e.g. "
                   "coca_ViT-B-32 mscoco); needs --preset coca_vit_b32 or coca_vit_l14 and "
                   "uses CLIP's tokenizer.")
@click.option("--tokenizer", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Directory with a saved tokenizer (tokenizer.json + tokenizer_config.json) "
                   "[default: train a byte-level BPE on the captions].")
@device_option
@click.option("--seed", type=int, default=DEFAULTS.seed, show_default=True,
              help="Seeds the weights, the validation split, the batch order and the flips.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=DEFAULTS.checkpoint_every,
              show_default=True, help="Steps between checkpoints (one is also kept per epoch).")
@click.option("--grid-lr", callback=_floats, metavar="LR,LR,...",
              help="Grid search: learning rates to try, instead of --lr (paper: "
                   "2e-6,2e-5,2e-4,2e-3,2e-2).")
@click.option("--grid-batch-size", callback=_ints, metavar="N,N,...",
              help="Grid search: batch sizes to try, instead of --batch-size (paper: "
                   "4,8,16,32,64).")
@click.option("--grid-epochs", type=click.IntRange(min=1), default=None,
              help="Epochs per grid trial [default: --epochs, and the best trial is kept]; "
                   "fewer makes trials cheaper, then the best pair trains for --epochs.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing model directory; discard an unfinished run with other "
                   "options.")
@click.pass_context
def train(ctx: click.Context, cells: Path, **options: Any) -> None:
    """Pretrain UrbanCLIP on the chips and captions of CELLS_FILE; write a model directory.

    Learns an image encoder whose embeddings match each cell's caption (contrastive loss) and
    a text decoder that writes the caption from the image (captioning loss), as in the paper.
    A validation loss on held-out cells picks the best epoch, which is saved to -o with its
    tokenizer, the chip size, indicator names and the training log, for `urbangeo predict`.
    Needs `urbangeo chips` and `urbangeo caption` run on CELLS_FILE first.

    Resume: checkpoints go to MODEL_DIR.partial/ every --checkpoint-every steps and at each
    epoch's end. If the run is stopped (Ctrl-C, crash, even kill -9), run the same command
    again: it continues from the last checkpoint and, on a CPU, ends with exactly the weights
    of an uninterrupted run. Other options are refused unless --overwrite (which starts over).

    \b
    Examples:
      # a quick model on a CPU
      urbangeo train cells.gpkg -o model --preset tiny --epochs 20
      # the paper's setting on a GPU
      urbangeo train cells.gpkg -o model --preset base --epochs 30 --device cuda
      # ablation: without the refined text, or without the captioning loss
      urbangeo train cells.gpkg -o model_raw --caption-column caption_raw
      urbangeo train cells.gpkg -o model_con --lambda-lm 0
      # grid search over learning rate and batch size, 3 epochs per trial
      urbangeo train cells.gpkg -o model --grid-lr 2e-5,2e-4 --grid-batch-size 16,32 \\
          --grid-epochs 3
      # fine-tune open_clip's CoCa weights
      urbangeo train cells.gpkg -o model --preset coca_vit_b32 \\
          --init-from open_clip_pytorch_model.bin
    """
    progress = progress_of(ctx)
    output = options.pop("output")
    try:
        result = api.train(cells, output, **options, progress=progress)
    except KeyboardInterrupt:
        raise UrbangeoError(f"interrupted; the last checkpoint is in {output}.partial: run the "
                            "same command again to resume from it") from None
    for line in result.lines():
        say(progress, line)
