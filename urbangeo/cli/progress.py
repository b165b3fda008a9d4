"""Front-end renderings of :class:`urbangeo.progress.Progress`: a rich bar or JSON lines."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from urbangeo.progress import SILENT, JsonLinesProgress
from urbangeo.progress import Progress as ProgressProtocol


class RichProgress:
    """A rich progress bar per stage on stderr, so stdout stays clean for results."""

    def __init__(self) -> None:
        self._console = Console(stderr=True)
        self._bar: Progress | None = None
        self._task = None

    def start(self, stage: str, total: int | None, message: str = "") -> None:
        self.finish()
        self._bar = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[message]}"), console=self._console, transient=False,
        )
        self._bar.start()
        self._task = self._bar.add_task(stage, total=total, message=message)

    def advance(self, n: int = 1, message: str = "") -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=n, message=message)

    def info(self, message: str) -> None:
        self._console.print(message, highlight=False)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def make_progress(mode: str) -> ProgressProtocol:
    """``bar`` (rich, only on a terminal), ``json`` (JSON lines on stdout) or ``none``."""
    if mode == "json":
        return JsonLinesProgress(sys.stdout)
    if mode == "none" or (mode == "bar" and not sys.stderr.isatty()):
        return SILENT if mode == "none" else _PlainProgress()
    return RichProgress()


class _PlainProgress:
    """Without a terminal (logs, CI): no bars, but stage starts, ends and facts still show."""

    def __init__(self) -> None:
        self._stage = ""

    def start(self, stage: str, total: int | None, message: str = "") -> None:
        self._stage = stage
        print(f"{stage}: {total if total is not None else '?'} to do {message}".rstrip(),
              file=sys.stderr)

    def advance(self, n: int = 1, message: str = "") -> None:
        pass

    def info(self, message: str) -> None:
        print(message, file=sys.stderr)

    def finish(self) -> None:
        if self._stage:
            print(f"{self._stage}: done", file=sys.stderr)
            self._stage = ""


def say(progress: ProgressProtocol, line: str) -> None:
    """Print a result line: on stdout, or as an info record when stdout carries JSON lines."""
    if isinstance(progress, JsonLinesProgress):
        progress.info(line)
    else:
        click.echo(line)


def progress_of(ctx: click.Context) -> ProgressProtocol:
    """The progress reporter the root ``urbangeo`` command chose (silent outside the CLI)."""
    return (ctx.find_root().obj or {}).get("progress", SILENT)
