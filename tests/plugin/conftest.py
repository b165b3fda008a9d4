"""Real QGIS (headless, through pytest-qgis) running the plugin against a real urbangeo CLI.

``URBANGEO_CLI`` names the urbangeo command (scripts/qgis-tests sets it; default: the
checkout's ``.venv/bin/urbangeo``). Test data is a small synthetic city made by that CLI's own
Python, as a user's urbangeo install would make it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "plugins"))
os.environ.setdefault("PROJ_DATA", "/usr/share/proj")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsProcessingFeedback,
    QgsSettings,
)
from qgis_urbanclip.command import SETTING_KEY, child_environment  # noqa: E402
from qgis_urbanclip.provider import UrbanClipProvider  # noqa: E402


@pytest.fixture(scope="session")
def urbangeo_cli() -> Path:
    """The urbangeo command under test; a missing one is a failure, not a skip."""
    cli = Path(os.environ.get("URBANGEO_CLI") or REPO / ".venv" / "bin" / "urbangeo")
    if not cli.is_file():
        pytest.fail(f"urbangeo CLI {cli} not found: set URBANGEO_CLI or create .venv "
                    "(python3 -m venv .venv && .venv/bin/pip install -e .)")
    return cli


@pytest.fixture(scope="session")
def urbangeo_python(urbangeo_cli: Path) -> Path:
    """The Python of the urbangeo install (from the console script's #! line)."""
    first = urbangeo_cli.read_bytes().split(b"\n", 1)[0]
    assert first.startswith(b"#!"), f"{urbangeo_cli} is not a console script"
    return Path(first[2:].decode().strip().split()[0])


def run_cli(cli: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI run directly (no plugin), e.g. to make inputs or to compare error lines."""
    return subprocess.run([str(cli), "--progress", "none", *args], capture_output=True,
                          text=True, env=child_environment(), timeout=300)


@pytest.fixture(scope="session")
def cli_commands(urbangeo_cli: Path) -> set[str]:
    """Subcommands this urbangeo has (train/similar arrive with the learning stages)."""
    out = run_cli(urbangeo_cli, "--help").stdout
    section = out.split("Commands:", 1)[-1]
    return {line.split()[0] for line in section.splitlines() if line.strip()}


@pytest.fixture(scope="session")
def city(tmp_path_factory: pytest.TempPathFactory, urbangeo_python: Path) -> Path:
    """A 2 km synthetic city (imagery.tif, population.tif, ..., aoi.geojson), seed 3."""
    out = tmp_path_factory.mktemp("plugin_city") / "sample"
    code = ("import sys; from urbangeo.sample import make_synthetic_city; "
            "make_synthetic_city(sys.argv[1], seed=3, size_km=2)")
    subprocess.run([str(urbangeo_python), "-c", code, str(out)], check=True,
                   env=child_environment(), timeout=120)
    return out


@pytest.fixture(scope="session")
def _captioned_cells(tmp_path_factory: pytest.TempPathFactory, urbangeo_cli: Path,
                     city: Path) -> Path:
    cells = tmp_path_factory.mktemp("plugin_cells") / "cells.gpkg"
    indicators = [f"--indicator={name}={city / name}.tif:sum"
                  for name in ("population", "gdp", "carbon")]
    for args in (["grid", str(city / "aoi.geojson"), "-o", str(cells), "--cell-size", "250",
                  *indicators, "--imagery", str(city / "imagery.tif"), "--tile-px", "64",
                  "--nir-band", "4", "--style-column", "population"],
                 ["caption", str(cells)]):
        done = run_cli(urbangeo_cli, *args)
        assert done.returncode == 0, done.stderr
    return cells


def copy_cells(cells: Path, into: Path) -> Path:
    """A private copy of a cells file and everything beside it that belongs to it."""
    into.mkdir(parents=True, exist_ok=True)
    for item in cells.parent.iterdir():
        if item.name.startswith(cells.stem):
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, into / item.name)
    return into / cells.name


@pytest.fixture
def captioned_cells(_captioned_cells: Path, tmp_path: Path) -> Path:
    """A private copy of 64 captioned 250 m cells with 64 px chips and three indicators."""
    return copy_cells(_captioned_cells, tmp_path / "cells")


@pytest.fixture
def provider(qgis_processing: None, urbangeo_cli: Path) -> Iterator[UrbanClipProvider]:
    """The plugin's provider, registered for one test and pointed at the CLI under test
    (a fresh object each time: re-registering an id deletes the old Python object)."""
    QgsSettings().setValue(SETTING_KEY, str(urbangeo_cli))
    registry = QgsApplication.processingRegistry()
    provider = UrbanClipProvider()
    assert registry.addProvider(provider)
    yield provider
    registry.removeProvider(provider)
    QgsSettings().remove(SETTING_KEY)


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps what an algorithm reported; ``cancel_on`` cancels at the first progress text
    starting with it (to cancel mid-run)."""

    def __init__(self, cancel_on: str | None = None) -> None:
        super().__init__()
        self.progress: list[float] = []
        self.texts: list[str] = []
        self.infos: list[str] = []
        self.commands: list[str] = []
        self._cancel_on = cancel_on
        self.progressChanged.connect(self.progress.append)

    def setProgressText(self, text: str) -> None:
        self.texts.append(text)
        if self._cancel_on is not None and text.startswith(self._cancel_on):
            self.cancel()
        super().setProgressText(text)

    def pushInfo(self, info: str) -> None:
        self.infos.append(info)
        super().pushInfo(info)

    def pushCommandInfo(self, info: str) -> None:
        self.commands.append(info)
        super().pushCommandInfo(info)
