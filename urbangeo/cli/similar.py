"""``urbangeo similar``: the cells most alike to one cell, across cities (paper §4.4.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from urbangeo import api
from urbangeo.cli.options import device_option, embed_batch_option
from urbangeo.cli.progress import progress_of, say


@click.command("similar")
@click.argument("cells", metavar="CELLS_FILE...", nargs=-1, required=True,
                type=click.Path(path_type=Path, dir_okay=False))
@click.option("--model", "model", required=True, metavar="MODEL_DIR",
              type=click.Path(path_type=Path, file_okay=False),
              help="Model directory written by `urbangeo train`.")
@click.option("--cell", "cell_id", required=True, metavar="CELL_ID",
              help="cell_id of the query cell (looked up in the first CELLS_FILE that has it).")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True,
              help="How many similar cells to list.")
@click.option("--other-files-only", is_flag=True,
              help="Search only the other CELLS_FILEs (the paper's cross-city search).")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="GeoPackage (.gpkg) for the query (rank 0) and its matches, layer 'similar' "
                   "in EPSG:4326, with rank, cosine, file, caption and indicator columns.")
@embed_batch_option
@device_option
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
@click.pass_context
def similar(ctx: click.Context, **options: Any) -> None:
    """List the cells of CELLS_FILE(s) whose imagery the model finds most similar to --cell.

    Each chip becomes the model's image embedding (cached in CELLS.embeddings/, shared with
    `urbangeo predict`); matches are ranked by cosine similarity, each shown with its
    caption and indicators so you can judge whether "similar" holds in words and numbers too.
    Give several cells files (other cities, possibly in other CRSs) to search across them.

    \b
    Examples:
      urbangeo similar cells.gpkg --model model/ --cell 32633-250-E2003-N21004
      urbangeo similar beijing.gpkg shanghai.gpkg shenzhen.gpkg --model model/ \\
          --cell 32650-1000-E440-N4420 --other-files-only -k 3 -o similar.gpkg
    """
    progress = progress_of(ctx)
    report = api.similar(list(options.pop("cells")), options.pop("model"),
                         options.pop("cell_id"), **options, progress=progress)
    for line in report.lines():
        say(progress, line)
