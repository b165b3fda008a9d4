"""Options several commands share, declared once so their help and defaults cannot drift."""

from __future__ import annotations

import click

device_option = click.option(
    "--device", default="auto", show_default=True,
    help="auto (the GPU when torch sees one, else the CPU), cpu, cuda or cuda:N.")

embed_batch_option = click.option(
    "--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
    help="Chips embedded per model call (lower it if the GPU runs out of memory).")
