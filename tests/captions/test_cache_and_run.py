"""The caption cache and run orchestration: columns, resume, recaption, skips, failures, kills.

Backends here are the real ``describe`` captioner wrapped to count calls (and to fail or be
"killed" on chosen cells), so every number asserted is a count the orchestration produced.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from urbangeo.captions.base import ChipInfo
from urbangeo.captions.cache import (
    CacheWriter,
    compact_cache,
    default_cache_path,
    key_hash,
    load_cache,
)
from urbangeo.captions.describe import DescribeCaptioner
from urbangeo.captions.run import caption_cells
from urbangeo.errors import InputError, RemoteError
from urbangeo.geo.cells import CellsFile, read_cells, write_cells
from urbangeo.geo.chips.store import ChipStore

TILE = 16
COVERS = {  # cell -> constant RGB of its chip (water, grass, roofs, soil, asphalt)
    "r0c0": (20, 40, 90), "r0c1": (60, 140, 50), "r0c2": (200, 200, 205),
    "r1c0": (160, 120, 80), "r1c1": (90, 90, 95),
}
NO_CHIP = "r1c2"


def make_cells(tmp_path: Path, covers: dict[str, tuple[int, int, int]] = COVERS,
               no_chip: tuple[str, ...] = (NO_CHIP,)) -> Path:
    """A real cells GeoPackage with a real chip store beside it; ``no_chip`` cells get no chip."""
    ids = [*covers, *no_chip]
    cells = gpd.GeoDataFrame(
        {"cell_id": ids, "row": [int(c[1]) for c in ids], "col": [int(c[3]) for c in ids]},
        geometry=[box(1000 * int(c[3]), -1000 * int(c[1]), 1000 * int(c[3]) + 1000,
                      -1000 * int(c[1]) + 1000) for c in ids], crs="EPSG:32610")
    store = ChipStore.create(tmp_path / "cells.chips.zarr", tile_px=TILE,
                             band_names=["red", "green", "blue"], pixel_size_m=10.0)
    for cid, rgb in covers.items():
        store.write(cid, np.broadcast_to(np.array(rgb, np.uint8)[:, None, None],
                                         (3, TILE, TILE)).copy())
    path = tmp_path / "cells.gpkg"
    write_cells(path, CellsFile(cells, metadata={"chips": {
        "store": "cells.chips.zarr", "tile_px": TILE, "band_names": ["red", "green", "blue"],
        "pixel_size_m": 10.0}}))
    return path


class Counting:
    """The describe backend, counting calls; raises on ``fail`` cells, "dies" on ``kill_at``."""

    name = "describe"

    def __init__(self, version: str = "", fail: tuple[str, ...] = (), kill_at: int | None = None,
                 delay_s: float = 0.0) -> None:
        self.inner = DescribeCaptioner()
        self.version, self.fail, self.kill_at, self.delay_s = version, fail, kill_at, delay_s
        self.calls: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()

    def cache_key(self) -> str:
        return self.inner.cache_key() + self.version

    def caption(self, chip: np.ndarray, info: ChipInfo) -> str:
        with self._lock:
            self.calls.append(info.cell_id)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay_s)
            if self.kill_at is not None and len(self.calls) > self.kill_at:
                raise KeyboardInterrupt  # what SIGINT does mid-job
            if info.cell_id in self.fail:
                raise RemoteError(f"server gave up on {info.cell_id}")
            return self.inner.caption(chip, info)
        finally:
            with self._lock:
                self.in_flight -= 1


def _run(path: Path, captioner, **kw):
    cf, report = caption_cells(read_cells(path), path, captioner, **kw)
    write_cells(path, cf)
    return read_cells(path), report


def test_writes_caption_columns_and_skips_cells_without_chip(tmp_path: Path) -> None:
    path = make_cells(tmp_path)
    cf, report = _run(path, Counting())
    cells = cf.cells.set_index("cell_id")
    assert report.n_captioned == 5 and report.n_without_chip == 1 and report.n_failed == 0
    assert cells.loc[list(COVERS), "caption_raw"].str.len().gt(20).all()
    assert cells.loc[list(COVERS), "caption"].notna().all()
    assert set(cells.loc[list(COVERS), "caption_backend"]) == {"describe"}
    assert set(cells.loc[list(COVERS), "caption_prompt_hash"]) == {report.prompt_hash}
    assert cells.loc[NO_CHIP, ["caption_raw", "caption"]].isna().all()
    assert cells.loc["r0c0", "caption_raw"] != cells.loc["r0c1", "caption_raw"]
    section = cf.metadata["captions"]
    assert section["n_captioned"] == 5 and section["backend"] == "describe"
    assert section["prompt_hash"] == report.prompt_hash and "chips" in cf.metadata


def test_rerun_reuses_cache_and_new_prompt_recaptions(tmp_path: Path) -> None:
    path = make_cells(tmp_path)
    first = _run(path, Counting())[0].cells
    again = Counting()
    second, report = _run(path, again)
    assert again.calls == [] and report.n_cached == 5 and report.n_captioned == 0
    assert second.cells["caption_raw"].tolist() == first["caption_raw"].tolist()

    new_prompt = Counting(version="|prompt-2")
    _, report = _run(path, new_prompt)
    assert sorted(new_prompt.calls) == sorted(COVERS) and report.n_cached == 0
    forced = Counting(version="|prompt-2")
    _run(path, forced, recaption=True)
    assert sorted(forced.calls) == sorted(COVERS)


def test_chips_recut_from_other_imagery_are_recaptioned(tmp_path: Path) -> None:
    path = make_cells(tmp_path)
    first = Counting()
    _, before = _run(path, first)
    recut = ChipStore.create(tmp_path / "cells.chips.zarr", tile_px=TILE, overwrite=True,
                             band_names=["red", "green", "blue"], pixel_size_m=10.0,
                             attrs={"sources": [{"source": "other.tif", "kind": "raster"}]})
    for cid, rgb in COVERS.items():  # same pixels: only the store's identity changed
        recut.write(cid, np.broadcast_to(np.array(rgb, np.uint8)[:, None, None],
                                         (3, TILE, TILE)).copy())
    again = Counting()
    cf, after = _run(path, again)
    assert sorted(again.calls) == sorted(COVERS) and after.n_cached == 0
    assert after.prompt_hash != before.prompt_hash
    assert set(cf.cells["caption_prompt_hash"].dropna()) == {after.prompt_hash}


def test_cells_whose_has_chip_was_cleared_are_not_captioned(tmp_path: Path) -> None:
    path = make_cells(tmp_path)
    cf = read_cells(path)
    cf.cells["has_chip"] = cf.cells["cell_id"].isin(set(COVERS) - {"r0c1"})  # chip still stored
    write_cells(path, cf)
    counting = Counting()
    cf, report = _run(path, counting)
    assert sorted(counting.calls) == sorted(set(COVERS) - {"r0c1"})
    assert report.n_without_chip == 2 and report.n_captioned == 4
    assert pd_isna(cf.cells.set_index("cell_id").loc["r0c1", "caption_raw"])


def test_gpkg_columns_stand_in_for_a_lost_cache(tmp_path: Path) -> None:
    path = make_cells(tmp_path)
    _run(path, Counting())
    default_cache_path(path).unlink()
    again = Counting()
    assert _run(path, again)[1].n_cached == 5 and again.calls == []


def test_failed_cell_is_recorded_others_saved_and_rerun_fills_it(tmp_path: Path) -> None:
    path = make_cells(tmp_path)
    cf, report = _run(path, Counting(fail=("r0c2",)))
    assert list(report.failures) == ["r0c2"] and "server gave up" in report.failures["r0c2"]
    cells = cf.cells.set_index("cell_id")
    assert cells["caption_raw"].notna().sum() == 4 and pd_isna(cells.loc["r0c2", "caption_raw"])
    retry = Counting()
    cf, report = _run(path, retry)
    assert retry.calls == ["r0c2"] and report.n_failed == 0
    assert cf.cells["caption_raw"].notna().sum() == 5


def pd_isna(value: object) -> bool:
    return value is None or value != value


def test_empty_caption_is_a_failure_not_a_cached_caption(tmp_path: Path) -> None:
    class Mute(Counting):
        def caption(self, chip, info):
            return "  " if info.cell_id == "r0c1" else super().caption(chip, info)

    path = make_cells(tmp_path)
    _, report = _run(path, Mute())
    assert list(report.failures) == ["r0c1"] and "empty caption" in report.failures["r0c1"]
    assert "r0c1" not in load_cache(default_cache_path(path), report.prompt_hash)


def test_all_failing_backend_stops_early(tmp_path: Path) -> None:
    covers = {f"r{i}c0": (i + 1, i + 1, i + 1) for i in range(8)}
    path = make_cells(tmp_path, covers, no_chip=())
    down = Counting(fail=tuple(covers))
    with pytest.raises(RemoteError, match="first 5 cells all failed"):
        caption_cells(read_cells(path), path, down)
    assert len(down.calls) == 5


def test_kill_mid_run_keeps_finished_captions(tmp_path: Path) -> None:
    path = make_cells(tmp_path)
    killed = Counting(kill_at=3)
    with pytest.raises(KeyboardInterrupt):
        caption_cells(read_cells(path), path, killed)
    assert "caption_raw" not in read_cells(path).cells.columns  # GeoPackage untouched
    resumed = Counting()
    _, report = _run(path, resumed)
    assert report.n_cached == 3
    assert sorted(resumed.calls) == sorted(set(COVERS) - set(killed.calls[:3]))


def test_concurrency_is_bounded_by_workers(tmp_path: Path) -> None:
    covers = {f"r{i}c0": (i + 1, 2 * i + 9, 3 * i + 5) for i in range(9)}
    path = make_cells(tmp_path, covers, no_chip=())
    slow = Counting(delay_s=0.1)
    _, report = _run(path, slow, workers=3)
    assert report.n_captioned == 9 and slow.max_in_flight == 3


def test_batch_backends_get_batches(tmp_path: Path) -> None:
    class Batched(Counting):
        batch_size = 2

        def caption_batch(self, chips, infos):
            self.calls.append(tuple(i.cell_id for i in infos))
            return [self.inner.caption(c, i) for c, i in zip(chips, infos, strict=True)]

    path = make_cells(tmp_path)
    batched = Batched()
    _, report = _run(path, batched)
    assert [len(b) for b in batched.calls] == [2, 2, 1] and report.n_captioned == 5


def test_refinement_runs_on_every_caption_and_is_reported(tmp_path: Path) -> None:
    class Hedging(Counting):
        def caption(self, chip, info):
            return "The image depicts a city. It might be a busy place. " + super().caption(
                chip, info)

    path = make_cells(tmp_path)
    cf, report = _run(path, Hedging())
    assert cf.cells["caption_raw"].dropna().str.startswith("The image depicts").sum() == 5
    assert not cf.cells["caption"].dropna().str.contains("might be|depicts").any()
    assert sum(report.rule_hits.values()) >= 10 and cf.metadata["captions"]["rule_hits"]


def test_cells_without_chips_section_is_an_input_error(tmp_path: Path) -> None:
    path = make_cells(tmp_path)
    cf = read_cells(path)
    cf.metadata.pop("chips")
    with pytest.raises(InputError, match="urbangeo chips"):
        caption_cells(cf, path, Counting())


def test_cache_ignores_torn_and_foreign_lines(tmp_path: Path) -> None:
    cache = tmp_path / "c.jsonl"
    key = key_hash("backend|model|prompt")
    with CacheWriter(cache, key) as writer:
        writer.append("a", "first")
        writer.append("b", "second")
    with cache.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"cell_id": "x", "key": "other", "caption": "foreign"}) + "\n")
        fh.write("not json\n" + '{"cell_id": "c", "key": "' + key + '", "capt')  # torn by a kill
    assert load_cache(cache, key) == {"a": "first", "b": "second"}
    with CacheWriter(cache, key) as writer:  # appending after a torn line starts a fresh line
        writer.append("c", "third")
        writer.append("a", "first, redone")
    assert load_cache(cache, key) == {"a": "first, redone", "b": "second", "c": "third"}
    assert load_cache(tmp_path / "missing.jsonl", key) == {}


def test_compaction_keeps_the_last_line_per_cell_and_key(tmp_path: Path) -> None:
    cache = tmp_path / "c.jsonl"
    with CacheWriter(cache, "k1") as writer:
        for text in ("old", "older?", "newest"):
            writer.append("a", text)
    with CacheWriter(cache, "k2") as writer:
        writer.append("a", "other prompt")
    with cache.open("a", encoding="utf-8") as fh:
        fh.write('{"cell_id": "b", "key": "k1", "capt')  # torn by a kill
    compact_cache(cache)
    assert len(cache.read_text(encoding="utf-8").splitlines()) == 2
    assert load_cache(cache, "k1") == {"a": "newest"}
    assert load_cache(cache, "k2") == {"a": "other prompt"}


def test_recaptioning_does_not_grow_the_cache(tmp_path: Path) -> None:
    path = make_cells(tmp_path)
    for _ in range(3):
        _run(path, Counting(), recaption=True)
    lines = default_cache_path(path).read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(COVERS)
