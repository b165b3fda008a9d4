"""Shared test setup.

TRITON_INTERPRET must be set before anything imports triton, so the Triton kernels run on the
CPU in interpreter mode here (there is no GPU on CI).
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# The real-QGIS suite runs in its own interpreter (scripts/qgis-tests, .venv-qgis).
collect_ignore = ["plugin"]

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only on developer machines and CI)")
    return SHARED_DATA


# A small captioned synthetic city, made once per session, for the learning stages' tests.

def build_city_cells(out: Path, *, seed: int = 3, size_km: float = 2, tile_px: int = 64,
                     name: str = "cells.gpkg") -> Path:
    """A synthetic city in 250 m cells with chips, describe captions and its three indicators,
    made through the API exactly as a user would."""
    from urbangeo import api
    from urbangeo.sample import make_synthetic_city

    city = make_synthetic_city(out / "sample", seed=seed, size_km=size_km)
    cells = out / name
    api.grid(city.aoi, output=cells, cell_size=250, indicators=city.indicator_specs)
    api.chips(cells, city.imagery, tile_px=tile_px, nir_band=4)
    api.caption(cells).raise_for_failures()
    return cells


@pytest.fixture(scope="session")
def _city_cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_city_cells(tmp_path_factory.mktemp("learn_city"))


@pytest.fixture
def city_cells(_city_cells: Path, tmp_path: Path) -> Path:
    """A private copy of a 2 km synthetic city in 250 m cells (64 cells) with 64 px chips,
    describe captions and population/gdp/carbon; tests may change it freely."""
    for item in _city_cells.parent.iterdir():
        if item.name.startswith("cells"):
            copy = shutil.copytree if item.is_dir() else shutil.copy2
            copy(item, tmp_path / item.name)
    return tmp_path / _city_cells.name


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory):
    """``urbangeo demo`` end to end once per session, shortened to 1 epoch and 2 seeds: every
    step, model and output of the real run. Returns the run and the lines it reported."""
    from urbangeo import api

    lines: list[str] = []
    run = api.demo(tmp_path_factory.mktemp("demo") / "outputs", epochs=1, eval_seeds=2,
                   say=lines.append)
    return run, lines


@pytest.fixture
def one_torch_thread():
    """Tiny networks on a busy 2-core box: OpenMP threads spin-waiting for a shared core made
    two threads ~10x slower than one (measured), so such tests run on one and restore it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
