"""Chips from local rasters: mosaics across CRSs, bands, stretch, nodata, resume, real scenes."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from affine import Affine
from pyproj import Transformer
from rasterio.enums import ColorInterp
from recording import RecordingProgress
from tileserver import square_cells

from urbangeo.cli.main import main
from urbangeo.errors import InputError, NoOverlapError
from urbangeo.geo.cells import read_cells, write_cells
from urbangeo.geo.chips import ChipStore, cut_chips
from urbangeo.geo.chips.local import LocalRaster

UTM = "EPSG:32610"
X0, Y_TOP = 560_000.0, 4_180_000.0  # East Bay, in UTM 10N


def write_tif(path: Path, data: np.ndarray, crs: str, transform: Affine, *,
              nodata: float | None = None, colorinterp: list[ColorInterp] | None = None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, crs=crs, transform=transform,
                       nodata=nodata, tiled=True, blockxsize=64, blockysize=64) as dst:
        dst.write(data)
        if colorinterp:
            dst.colorinterp = colorinterp
    return path


def utm_tif(path: Path, values: np.ndarray, *, x0: float = X0, res: float = 10.0,
            **kw: object) -> Path:
    """A raster in the cells' own UTM zone whose top-left corner is (x0, Y_TOP)."""
    return write_tif(path, values, UTM, Affine(res, 0, x0, 0, -res, Y_TOP), **kw)


def ramp(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth 'world' in UTM metres that bilinear warping reproduces exactly."""
    return 30 + 0.04 * (x - X0) + 0.02 * (Y_TOP - y)


def chips_of(path: Path, ids: list[str]) -> np.ndarray:
    return ChipStore.open(path).read_many(ids).astype(float)


def test_mosaic_across_two_crss_first_source_wins(tmp_path: Path) -> None:
    # Source A (UTM, 10 m) covers cells 0-1; source B (lon/lat) covers cells 1-2, 60 brighter.
    ys, xs = np.mgrid[0:100, 0:200] + 0.5
    a = utm_tif(tmp_path / "a.tif", np.rint(ramp(X0 + xs * 10, Y_TOP - ys * 10))
                .astype(np.uint8)[None])
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    lon0, lat1 = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True).transform(X0 + 950,
                                                                                   Y_TOP + 50)
    res = 0.0001
    lats, lons = np.mgrid[0:115, 0:245] + 0.5
    bx, by = to_utm.transform(lon0 + lons * res, lat1 - lats * res)
    b = write_tif(tmp_path / "b.tif", np.rint(np.clip(ramp(bx, by) + 60, 0, 255))
                  .astype(np.uint8)[None].repeat(3, 0), "EPSG:4326",
                  Affine(res, 0, lon0, 0, -res, lat1))

    cells = square_cells(UTM, X0, Y_TOP, 1, 3)
    out, report = cut_chips(cells, tmp_path / "cells.gpkg", [str(a), str(b)], tile_px=32,
                            bands=[1, 1, 1])
    assert report.cut == 3 and out.cells["chip_valid_frac"].tolist() == [1.0, 1.0, 1.0]

    chips = chips_of(tmp_path / "cells.chips.zarr", ["t_0_0", "t_0_1", "t_0_2"])
    centres = (np.arange(32) + 0.5) * 1000 / 32
    for col, offset in enumerate([0, 0, 60]):  # cell 1 is in both: A was given first
        cx, cy = np.meshgrid(X0 + col * 1000 + centres, Y_TOP - centres)
        assert np.abs(chips[col, 0] - (ramp(cx, cy) + offset)).mean() < 1.0


def test_band_selection_nir_and_names_from_colorinterp(tmp_path: Path) -> None:
    values = np.stack([np.full((200, 300), 10 * k, np.uint8) for k in (1, 2, 3, 4)])
    tif = utm_tif(tmp_path / "rgbn.tif", values, colorinterp=[
        ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined])
    cells = square_cells(UTM, X0, Y_TOP, 1, 1)
    out, _ = cut_chips(cells, tmp_path / "c.gpkg", [str(tif)], tile_px=16, bands=[3, 2, 1],
                       nir_band=4)
    chip = ChipStore.open(tmp_path / "c.chips.zarr").read("t_0_0")
    assert chip.reshape(4, -1).mean(axis=1).tolist() == [30, 20, 10, 40]
    assert out.metadata["chips"]["band_names"] == ["blue", "green", "red", "nir"]

    with pytest.raises(InputError, match=r"rgbn\.tif has 4 band.*band 5 does not exist"):
        cut_chips(cells, tmp_path / "d.gpkg", [str(tif)], bands=[1, 2, 5])
    with pytest.raises(InputError, match="3 names for 4 channels|gives 2 names"):
        cut_chips(cells, tmp_path / "e.gpkg", [str(tif)], band_names=["a", "b"])


def test_uint16_stretch_is_one_per_source_not_per_chip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(1000, 2000, (200, 100)),  # dark west cell
                             rng.uniform(8000, 9000, (200, 100))], axis=1).astype(np.uint16)
    tif = utm_tif(tmp_path / "u16.tif", values[None].repeat(3, 0))
    out, _ = cut_chips(square_cells(UTM, X0, Y_TOP, 1, 2), tmp_path / "c.gpkg", [str(tif)],
                       tile_px=16)
    dark, bright = chips_of(tmp_path / "c.chips.zarr", ["t_0_0", "t_0_1"]).mean(axis=(1, 2, 3))
    assert dark < 40 and bright > 215  # a per-chip stretch would put both near 128

    stretch = out.metadata["chips"]["stretch"][str(tif.resolve())]
    low, high = np.percentile(values.astype(float), [2, 98])
    assert stretch["low"] == pytest.approx([low] * 3)
    assert stretch["high"] == pytest.approx([high] * 3)
    assert stretch["percentiles"] == [2.0, 98.0]


def test_nodata_masked_and_uncovered_cells_flagged(tmp_path: Path) -> None:
    # Raster: cells 0 and 1 fully, cell 2 only its west 20%; nodata over cell 1's east 30%.
    values = np.full((100, 220), 150, np.uint8)
    values[:, 170:200] = 0
    tif = utm_tif(tmp_path / "nd.tif", values[None].repeat(3, 0), nodata=0)
    cells = square_cells(UTM, X0, Y_TOP, 1, 4)
    out, report = cut_chips(cells, tmp_path / "c.gpkg", [str(tif)], tile_px=20)

    frac = out.cells.set_index("cell_id")["chip_valid_frac"]
    assert frac["t_0_0"] == 1.0 and frac["t_0_1"] == pytest.approx(0.7, abs=0.06)
    assert frac["t_0_2"] == pytest.approx(0.2, abs=0.06) and frac["t_0_3"] == 0.0
    assert out.cells["has_chip"].tolist() == [True, True, False, False]
    assert (report.cut, report.partial, report.too_little_coverage, report.no_coverage) == (
        2, 1, 1, 1)

    store = ChipStore.open(tmp_path / "c.chips.zarr")
    assert store.cell_ids() == ["t_0_0", "t_0_1"]  # flagged cells are never stored black
    partial = store.read("t_0_1")
    assert (partial[:, :, :12] == 150).all() and (partial[:, :, 16:] == 0).all()


def test_no_overlap_and_unreadable_raster_are_user_errors(tmp_path: Path) -> None:
    tif = utm_tif(tmp_path / "small.tif", np.full((3, 50, 50), 9, np.uint8))
    far = square_cells(UTM, X0 + 50_000, Y_TOP, 2, 2)
    with pytest.raises(NoOverlapError, match="no cell overlaps the imagery"):
        cut_chips(far, tmp_path / "c.gpkg", [str(tif)])
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x00garbage" * 20)
    with pytest.raises(InputError, match="broken.tif"):
        cut_chips(far, tmp_path / "c.gpkg", [str(bad)])
    with pytest.raises(InputError, match="missing.tif does not exist"):
        cut_chips(far, tmp_path / "c.gpkg", [str(tmp_path / "missing.tif")])
    assert not (tmp_path / "c.chips.zarr").exists()


class CountingRaster(LocalRaster):
    """A local raster that remembers which cells it was asked for."""

    def __init__(self, path: Path, **kw: object) -> None:
        super().__init__(path, **kw)
        self.asked: list[tuple[float, ...]] = []

    def read(self, cell):  # type: ignore[no-untyped-def]
        self.asked.append(cell.bounds)
        return super().read(cell)


def test_rerun_after_kill_cuts_only_missing_chips(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tif = utm_tif(tmp_path / "r.tif", rng.integers(1, 255, (3, 200, 200), dtype=np.uint8))
    cells = square_cells(UTM, X0, Y_TOP, 2, 2)
    ids = cells.cells["cell_id"].tolist()
    cut_chips(cells, tmp_path / "full.gpkg", [str(tif)], tile_px=16)
    expected = chips_of(tmp_path / "full.chips.zarr", ids)

    # A job killed after two chips (and half-way through a third: data without its flag).
    first_two = type(cells)(cells.cells.iloc[:2], cells.metadata)
    cut_chips(first_two, tmp_path / "run.gpkg", [str(tif)], tile_px=16)
    store = ChipStore.open(tmp_path / "run.chips.zarr", read_only=False)
    store.reserve([ids[2]])
    zarr.open_group(str(tmp_path / "run.chips.zarr"), mode="r+")["chips"][2] = 255

    source = CountingRaster(tif, indexes=[1, 2, 3])
    out, report = cut_chips(cells, tmp_path / "run.gpkg", [source], tile_px=16)
    assert (report.skipped_existing, report.cut) == (2, 2)
    assert sorted(source.asked) == sorted(tuple(b) for b in cells.cells.geometry.bounds
                                          .to_numpy()[2:])
    assert np.array_equal(chips_of(tmp_path / "run.chips.zarr", ids), expected)
    assert out.cells["has_chip"].all()


def test_other_tile_px_needs_new_store_or_overwrite(tmp_path: Path) -> None:
    tif = utm_tif(tmp_path / "r.tif", np.full((3, 100, 100), 77, np.uint8))
    cells = square_cells(UTM, X0, Y_TOP, 1, 1)
    cut_chips(cells, tmp_path / "c.gpkg", [str(tif)], tile_px=16)
    with pytest.raises(InputError, match="holds 16 px chips, not 32.*--overwrite"):
        cut_chips(cells, tmp_path / "c.gpkg", [str(tif)], tile_px=32)
    _, report = cut_chips(cells, tmp_path / "c.gpkg", [str(tif)], tile_px=32, overwrite=True)
    assert report.cut == 1 and ChipStore.open(tmp_path / "c.chips.zarr").tile_px == 32


def test_cli_chips_writes_columns_metadata_and_one_line(tmp_path: Path, capsys) -> None:
    tif = utm_tif(tmp_path / "r.tif", np.full((3, 100, 230), 120, np.uint8))
    gpkg = tmp_path / "cells.gpkg"
    write_cells(gpkg, square_cells(UTM, X0, Y_TOP, 1, 3))
    main(["--progress", "none", "chips", str(gpkg), "--imagery", str(tif), "--tile-px", "16",
          "--bands", "3,2,1", "--band-names", "r,g,b", "--workers", "2"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("2 cells with chips (2 cut, 0 already stored)")
    cf = read_cells(gpkg)
    assert cf.cells["has_chip"].tolist() == [True, True, False]
    assert cf.metadata["chips"]["store"] == "cells.chips.zarr"
    assert cf.metadata["chips"]["band_names"] == ["r", "g", "b"]
    assert cf.metadata["grid"]["scheme"] == "metric"  # earlier sections survive

    with pytest.raises(SystemExit) as exit_info:
        main(["chips", str(gpkg), "--imagery", str(tmp_path / "nope.tif")])
    assert exit_info.value.code != 0
    assert capsys.readouterr().err.strip().startswith("error: imagery file")
    with sqlite3.connect(gpkg) as con:  # the failed run left the file as it was
        chips_meta = con.execute("SELECT value FROM urbangeo_metadata WHERE key='chips'").fetchone()
    assert json.loads(chips_meta[0])["n_chips"] == 2


def test_cli_chips_on_a_damaged_or_foreign_gpkg_prints_one_error_line(tmp_path: Path,
                                                                       capsys) -> None:
    tif = utm_tif(tmp_path / "r.tif", np.full((3, 100, 230), 120, np.uint8))
    good = tmp_path / "good.gpkg"
    write_cells(good, square_cells(UTM, X0, Y_TOP, 1, 3))
    truncated = tmp_path / "truncated.gpkg"
    truncated.write_bytes(good.read_bytes()[:20_000])
    foreign = tmp_path / "foreign.gpkg"
    foreign.write_text("this is a text file with the wrong extension")
    for bad in (truncated, foreign):
        with pytest.raises(SystemExit) as exit_info:
            main(["--progress", "none", "chips", str(bad), "--imagery", str(tif)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, err
        assert err.startswith(f"error: {bad} is not a readable GeoPackage")
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.shared_data
def test_real_haiti_rgbn_chips(shared_data: Path, tmp_path: Path) -> None:
    tif = shared_data / "haiti" / "haiti_rgbn_5m.tif"
    cells = square_cells("EPSG:32618", 793_000, 2_050_000, 1, 2)  # inside the 2.5 x 2 km scene
    out, report = cut_chips(cells, tmp_path / "h.gpkg", [str(tif)], tile_px=50, nir_band=4)
    assert report.cut == 2 and out.cells["chip_valid_frac"].tolist() == [1.0, 1.0]
    assert out.metadata["chips"]["band_names"] == ["red", "green", "blue", "nir"]
    assert out.metadata["chips"]["pixel_size_m"] == 20.0
    chips = chips_of(tmp_path / "h.chips.zarr", ["t_0_0", "t_0_1"])
    with rasterio.open(tif) as ds:
        for k, x0 in enumerate((793_000, 794_000)):
            window = ds.window(x0, 2_049_000, x0 + 1000, 2_050_000)
            source = ds.read([1, 2, 3, 4], window=window).astype(float)
            # each 20 m chip pixel averages 4 x 4 source pixels: band means agree closely
            assert chips[k].mean(axis=(1, 2)) == pytest.approx(source.mean(axis=(1, 2)), abs=1.5)


@pytest.mark.shared_data
def test_real_sfbay_false_colour_chips(shared_data: Path, tmp_path: Path) -> None:
    tif = shared_data / "sfbay" / "landsat7_sfbay_nirrg_30m.tif"
    cells = square_cells(UTM, X0, Y_TOP, 2, 2)
    out, report = cut_chips(cells, tmp_path / "s.gpkg", [str(tif)], tile_px=32,
                            band_names=["nir", "red", "green"], nir_band=1)
    assert report.cut == 4
    assert out.metadata["chips"]["band_names"] == ["nir", "red", "green", "nir"]
    # web-mercator metres are not ground metres, but these cells are in UTM: 1000 m / 32 px
    assert out.metadata["chips"]["pixel_size_m"] == pytest.approx(31.25)
    chips = chips_of(tmp_path / "s.chips.zarr", out.cells["cell_id"].tolist())
    assert np.array_equal(chips[:, 3], chips[:, 0])  # the nir channel is band 1 again
    assert chips[:, :3].std() > 10  # real texture, not a flat fill


def test_ground_resolution_is_the_sources_own_when_coarser(shared_data: Path,
                                                          tmp_path: Path) -> None:
    """30 web-mercator metres at 37.8°N are ~23.7 ground metres; cutting them at 1000/256 m
    per pixel does not make the chips any sharper, and captions must know that."""
    tif = shared_data / "sfbay" / "landsat7_sfbay_nirrg_30m.tif"
    cells = square_cells(UTM, X0, Y_TOP, 1, 1)
    out, _ = cut_chips(cells, tmp_path / "g.gpkg", [str(tif)], tile_px=256)
    section = out.metadata["chips"]
    assert section["pixel_size_m"] == pytest.approx(1000 / 256)
    assert section["ground_resolution_m"] == pytest.approx(30 * np.cos(np.radians(37.75)),
                                                           rel=0.01)
    assert ChipStore.open(tmp_path / "g.chips.zarr").ground_resolution_m == pytest.approx(
        section["ground_resolution_m"])


def _chips_readable(store_path: Path) -> int:
    """How many chips a store that another process is writing holds; 0 while it cannot be
    opened yet (not created, or its metadata caught mid-write): the caller polls again."""
    try:
        return len(ChipStore.open(store_path))
    except Exception:  # any failure to read a store being written means "not yet"
        return 0


def test_sigkill_mid_run_leaves_only_complete_chips(tmp_path: Path) -> None:
    """A real SIGKILL: every chip the store then holds is complete (chips are written in small
    batches, so the chips of the batch in flight are cut again), and a rerun finishes."""
    rng = np.random.default_rng(2)
    tif = utm_tif(tmp_path / "r.tif", rng.integers(1, 255, (3, 800, 1000), dtype=np.uint8))
    cells = square_cells(UTM, X0, Y_TOP, 8, 10)
    gpkg = tmp_path / "cells.gpkg"
    write_cells(gpkg, cells)
    script = (f"from pathlib import Path\nfrom urbangeo.geo.cells import read_cells\n"
              f"from urbangeo.geo.chips import cut_chips\n"
              f"cut_chips(read_cells({str(gpkg)!r}), Path({str(gpkg)!r}), [{str(tif)!r}], "
              f"tile_px=256, workers=1)\n")
    child = subprocess.Popen([sys.executable, "-c", script])
    store_path = tmp_path / "cells.chips.zarr"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if _chips_readable(store_path) >= 5:
                break
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    survived = ChipStore.open(store_path).cell_ids()
    assert 5 <= len(survived) < len(cells.cells), "the kill should land mid-run"

    done = type(cells)(cells.cells[cells.cells["cell_id"].isin(survived)], cells.metadata)
    cut_chips(done, tmp_path / "ref.gpkg", [str(tif)], tile_px=256)
    reference = ChipStore.open(tmp_path / "ref.chips.zarr")
    assert np.array_equal(ChipStore.open(store_path).read_many(survived),
                          reference.read_many(survived))
    out, report = cut_chips(read_cells(gpkg), gpkg, [str(tif)], tile_px=256)
    assert report.skipped_existing == len(survived)
    assert report.cut == len(cells.cells) - len(survived) and out.cells["has_chip"].all()


def test_float_raster_with_nan_nodata(tmp_path: Path) -> None:
    values = np.tile(np.linspace(0.0, 1.0, 200, dtype=np.float32), (100, 1))
    values[:, 60:100] = np.nan  # the east 40% of the first cell has no data
    tif = utm_tif(tmp_path / "f.tif", values[None].repeat(3, 0), nodata=float("nan"))
    out, _ = cut_chips(square_cells(UTM, X0, Y_TOP, 1, 2), tmp_path / "c.gpkg", [str(tif)],
                       tile_px=20)
    assert out.cells["chip_valid_frac"].tolist() == pytest.approx([0.6, 1.0], abs=0.05)
    west, east = chips_of(tmp_path / "c.chips.zarr", ["t_0_0", "t_0_1"])[:, 0]
    assert (west[:, 13:] == 0).all() and (west[:, :11] < 80).all()  # dark ramp start, no NaN
    assert np.all(np.diff(east, axis=1) >= 0) and east[:, -1].min() == 255  # ramp up to p98


def test_guessed_band_names_are_reported(shared_data: Path, tmp_path: Path) -> None:
    """The SF Bay scene is NIR-R-G but GDAL labels it red,green,blue: the user must be told."""
    tif = shared_data / "sfbay" / "landsat7_sfbay_nirrg_30m.tif"

    guessed, named = RecordingProgress(), RecordingProgress()
    cut_chips(square_cells(UTM, X0, Y_TOP, 1, 1), tmp_path / "a.gpkg", [str(tif)], tile_px=16,
              progress=guessed)
    cut_chips(square_cells(UTM, X0, Y_TOP, 1, 1), tmp_path / "b.gpkg", [str(tif)], tile_px=16,
              band_names=["nir", "red", "green"], progress=named)
    assert any("--band-names" in line and "red,green,blue" in line for line in guessed.infos)
    assert not any("--band-names" in line for line in named.infos)


def test_a_store_write_error_is_raised_not_lost(tmp_path: Path, monkeypatch) -> None:
    """Chips are written on a background thread; its failure must still stop the run."""
    rng = np.random.default_rng(3)
    tif = utm_tif(tmp_path / "r.tif", rng.integers(1, 255, (3, 400, 500), dtype=np.uint8))

    def disk_full(self, items):
        raise OSError("disk full")

    monkeypatch.setattr(ChipStore, "write_many", disk_full)
    with pytest.raises(OSError, match="disk full"):
        cut_chips(square_cells(UTM, X0, Y_TOP, 4, 5), tmp_path / "c.gpkg", [str(tif)],
                  tile_px=16)
