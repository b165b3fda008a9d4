"""Entry point: ``urbangeo`` and its subcommands (loaded lazily so ``--help`` is instant and
commands that need no torch never import it)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any, NoReturn

import click

from urbangeo import __version__
from urbangeo.errors import UrbangeoError

# name -> "module:attribute"; a command's module is imported only when it is used.
COMMANDS: dict[str, str] = {
    "grid": "urbangeo.cli.grid:grid",
    "chips": "urbangeo.cli.chips:chips",
    "indicators": "urbangeo.cli.indicators:indicators",
    "rasterize": "urbangeo.cli.grid:rasterize",
    "caption": "urbangeo.cli.caption:caption",
    "train": "urbangeo.cli.train:train",
    "predict": "urbangeo.cli.predict:predict",
    "evaluate": "urbangeo.cli.evaluate:evaluate",
    "similar": "urbangeo.cli.similar:similar",
    "demo": "urbangeo.cli.demo:demo",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _available(name)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not _available(name):
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


def _available(name: str) -> bool:
    module = COMMANDS[name].split(":")[0]
    return importlib.util.find_spec(module) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="urbangeo")
@click.option("--progress", "progress_mode", type=click.Choice(["bar", "json", "none"]),
              default="bar", show_default=True,
              help="How to report progress: a bar on the terminal, JSON lines on stdout "
                   "(for the QGIS plugin and scripts), or nothing.")
@click.pass_context
def cli(ctx: click.Context, progress_mode: str) -> None:
    """urbangeo: urban region profiling from satellite imagery and language (UrbanCLIP).

    \b
    The pipeline, one file a stage:
      urbangeo grid AOI -o cells.gpkg      ~1 km² cells (+ chips, indicators)
      urbangeo chips cells.gpkg --imagery SRC   one satellite chip per cell
      urbangeo indicators cells.gpkg --indicator pop=pop.tif:sum
      urbangeo caption cells.gpkg          describe each chip, refine the text
      urbangeo train cells.gpkg -o model/  pretrain UrbanCLIP on chips + captions
      urbangeo predict cells.gpkg --model model/ --target pop -o pred.gpkg
      urbangeo evaluate cells.gpkg -o eval/     UrbanCLIP vs the paper's baselines
      urbangeo similar cells.gpkg --model model/ --cell ID
      urbangeo rasterize cells.gpkg COLUMN -o out.tif
      urbangeo demo                        all of it on a bundled synthetic city
    Run `urbangeo COMMAND --help` for each command's options.
    """
    from urbangeo.cli.progress import make_progress

    ctx.ensure_object(dict).update(progress=make_progress(progress_mode),
                                   progress_mode=progress_mode)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; mistakes print one ``error:`` line (and, with ``--progress json``, an
    ``{"type": "error"}`` record on stdout for the program reading it) and exit non-zero,
    without a traceback."""
    state: dict[str, Any] = {}
    try:
        cli.main(args=argv, prog_name="urbangeo", standalone_mode=False, obj=state)
    except UrbangeoError as exc:
        _fail(state, str(exc), exc.exit_code)
    except click.exceptions.Abort:
        _fail(state, "aborted", 130)
    except click.UsageError as exc:
        path = exc.ctx.command_path if exc.ctx is not None else "urbangeo"
        _fail(state, f"{exc.format_message()} (see `{path} --help`)", exc.exit_code)
    except click.ClickException as exc:
        _fail(state, exc.format_message(), exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


def _fail(state: dict[str, Any], message: str, code: int) -> NoReturn:
    from urbangeo.progress import JsonLinesProgress

    progress = state.get("progress")
    if isinstance(progress, JsonLinesProgress):
        progress.error(message)
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
