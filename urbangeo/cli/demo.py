"""``urbangeo demo``: the pipeline on a generated synthetic city (see :mod:`urbangeo.demo`)."""

from __future__ import annotations

from pathlib import Path

import click

from urbangeo import api
from urbangeo.cli.progress import progress_of, say


@click.command("demo")
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False),
              default=Path("outputs"), show_default=True, help="Folder for the sample and results.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the synthetic city (same seed, same city).")
@click.option("--overwrite", is_flag=True, help="Redo the demo over an existing output folder.")
@click.pass_context
def demo(ctx: click.Context, output: Path, seed: int, overwrite: bool) -> None:
    """Run the pipeline on a bundled SYNTHETIC city (offline, under a minute).

    Generates a procedural 6 km city (imagery, population, GDP, carbon rasters, AOI) in
    OUTPUT/sample, then grid + indicators -> chips -> caption -> rasterize into OUTPUT/.
    """
    progress = progress_of(ctx)
    api.demo(output, seed, overwrite, progress=progress, say=lambda line: say(progress, line))
