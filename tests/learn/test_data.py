"""load_cell_data: only cells with a stored chip, with their captions, indicators and places."""

from __future__ import annotations

import numpy as np
import pytest

from urbangeo.errors import InputError
from urbangeo.geo.cells import read_cells, write_cells
from urbangeo.learn.data import load_cell_data, to_model_input


def test_reads_chips_captions_indicators_and_neighbours(city_cells) -> None:
    data = load_cell_data(city_cells)
    assert len(data) == 64 and data.images().shape == (64, 3, 64, 64)
    assert data.images([5]).dtype == np.uint8
    assert len(data.caption_texts()) == 64 and set(data.targets) == {"population", "gdp", "carbon"}
    assert data.units["population"] == "people"
    near = data.neighbours()
    corner = int(np.argmin(data.rowcol.sum(axis=1)))
    assert len(near[corner]) == 3 and max(len(n) for n in near) == 8  # an 8 x 8 grid
    streamed = load_cell_data(city_cells, in_memory_bytes=0)
    assert np.array_equal(streamed.images([3, 1]), data.images([3, 1]))


def test_cells_without_a_chip_are_left_out(city_cells) -> None:
    cf = read_cells(city_cells)
    cf.cells.loc[[0, 7], "has_chip"] = False
    write_cells(city_cells, cf)
    data = load_cell_data(city_cells)
    assert len(data) == 62 and 0 not in data.index and 7 not in data.index
    assert data.cell_ids[0] == cf.cells["cell_id"].iloc[1]


def test_missing_chips_and_captions_are_clear_errors(city_cells) -> None:
    cf = read_cells(city_cells)
    cf.cells.loc[3, "caption"] = None
    write_cells(city_cells, cf)
    with pytest.raises(Exception, match="no 'caption'.*rerun `urbangeo caption`"):
        load_cell_data(city_cells).caption_texts()
    del cf.metadata["chips"]
    write_cells(city_cells, cf)
    with pytest.raises(InputError, match="has no chips: cut them first"):
        load_cell_data(city_cells)


def test_model_input_is_unit_range_at_the_asked_size() -> None:
    chips = np.full((2, 3, 64, 64), 255, np.uint8)
    x = to_model_input(chips, 32)
    assert x.shape == (2, 3, 32, 32) and float(x.max()) == pytest.approx(1.0)
