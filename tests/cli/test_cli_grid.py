"""`urbangeo grid` and `urbangeo rasterize` end to end, in process and as the installed script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rio_cogeo.cogeo import cog_validate

from urbangeo.cli.main import cli
from urbangeo.errors import CRSError, InputError
from urbangeo.geo import cells as cells_module
from urbangeo.geo.cells import read_cells

BBOX = "-122.23,37.57,-122.05,37.67"


def _run(*args: str) -> object:
    return CliRunner().invoke(cli, ["--progress", "none", *args])


@pytest.fixture
def aoi_file(tmp_path: Path) -> Path:
    path = tmp_path / "aoi.geojson"
    frame = gpd.GeoDataFrame(geometry=[shapely.box(-122.2, 37.6, -122.1, 37.65)], crs=4326)
    pyogrio.write_dataframe(frame, path)
    return path


def test_grid_from_file_writes_styled_cells_and_summary(tmp_path: Path, aoi_file: Path) -> None:
    out = tmp_path / "cells.gpkg"
    result = _run("grid", str(aoi_file), "-o", str(out), "--cell-size", "500")
    assert result.exit_code == 0, result.output
    cf = read_cells(out)
    assert cf.metadata["grid"]["cell_size_m"] == 500
    assert len(cf.cells) == cf.metadata["grid"]["n_cells"]
    assert f"{len(cf.cells)} cells (500 m" in result.output and str(out) in result.output
    assert "EPSG:32610" in result.output and 'type="singleSymbol"' in cf.style_qml


def test_grid_style_column_and_xyz(tmp_path: Path) -> None:
    out = tmp_path / "tiles.gpkg"
    result = _run("grid", "--bbox", BBOX, "--scheme", "xyz", "--zoom", "14", "-o", str(out),
                  "--style-column", "row")
    assert result.exit_code == 0, result.output
    cf = read_cells(out)
    assert cf.cells.cell_id.str.fullmatch(r"z14-x\d+-y\d+").all()
    assert 'attr="row"' in cf.style_qml and "zoom 14" in result.output


def test_grid_refuses_overwrite_and_ambiguous_aoi(tmp_path: Path, aoi_file: Path) -> None:
    out = tmp_path / "cells.gpkg"
    assert _run("grid", "--bbox", BBOX, "-o", str(out)).exit_code == 0
    before = out.read_bytes()
    refused = _run("grid", "--bbox", BBOX, "-o", str(out), "--cell-size", "250")
    assert isinstance(refused.exception, InputError) and "--overwrite" in str(refused.exception)
    assert out.read_bytes() == before
    assert _run("grid", "--bbox", BBOX, "-o", str(out), "--cell-size", "250",
                "--overwrite").exit_code == 0
    assert read_cells(out).metadata["grid"]["cell_size_m"] == 250
    both = _run("grid", str(aoi_file), "--bbox", BBOX, "-o", str(tmp_path / "b.gpkg"))
    assert isinstance(both.exception, InputError) and "not both" in str(both.exception)
    neither = _run("grid", "-o", str(tmp_path / "n.gpkg"))
    assert isinstance(neither.exception, InputError)
    xyz_size = _run("grid", "--bbox", BBOX, "--scheme", "xyz", "--zoom", "14",
                    "--cell-size", "500", "-o", str(tmp_path / "x.gpkg"))
    assert isinstance(xyz_size.exception, InputError) and "--zoom" in str(xyz_size.exception)
    geographic = _run("grid", "--bbox", BBOX, "--crs", "EPSG:4326", "-o", str(tmp_path / "g.gpkg"))
    assert isinstance(geographic.exception, CRSError)


def test_json_progress_keeps_stdout_machine_readable(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--progress", "json", "grid", "--bbox", BBOX,
                                      "-o", str(tmp_path / "c.gpkg")])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert {"start", "finish", "info"} <= {r["type"] for r in records}
    assert any("cells (1000 m" in r["message"] for r in records)


def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch) -> None:
    real_write = pyogrio.write_dataframe

    def write_then_fail(*args, **kwargs):
        real_write(*args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(cells_module.pyogrio, "write_dataframe", write_then_fail)
    result = _run("grid", "--bbox", BBOX, "-o", str(tmp_path / "cells.gpkg"))
    assert isinstance(result.exception, OSError)
    assert list(tmp_path.iterdir()) == []


def test_grid_with_a_bad_imagery_path_leaves_no_cells_file(tmp_path: Path) -> None:
    """The corrected command must then run as typed, without --overwrite."""
    out = tmp_path / "cells.gpkg"
    result = _run("grid", "--bbox", BBOX, "-o", str(out), "--imagery", str(tmp_path / "no.tif"))
    assert isinstance(result.exception, InputError)
    assert "no.tif" in str(result.exception)
    assert not out.exists()
    assert _run("grid", "--bbox", BBOX, "-o", str(out)).exit_code == 0


def test_rasterize_writes_valid_cog_with_sidecar(tmp_path: Path) -> None:
    cells = tmp_path / "cells.gpkg"
    assert _run("grid", "--bbox", BBOX, "-o", str(cells)).exit_code == 0
    out = tmp_path / "rc.tif"
    result = _run("rasterize", str(cells), "row", "col", "-o", str(out), "--ramp", "YlOrRd")
    assert result.exit_code == 0, result.output
    assert cog_validate(str(out))[0] and (tmp_path / "rc.qml").exists()
    with rasterio.open(out) as ds:
        assert ds.descriptions == ("row", "col")
    again = _run("rasterize", str(cells), "row", "-o", str(out))
    assert isinstance(again.exception, InputError) and "--overwrite" in str(again.exception)
    missing = _run("rasterize", str(tmp_path / "none.gpkg"), "row", "-o", str(tmp_path / "n.tif"))
    assert isinstance(missing.exception, InputError)


def test_help_teaches_with_examples() -> None:
    for command in ("grid", "rasterize"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0
        assert "Examples:" in result.output and f"urbangeo {command} " in result.output


def _console_script() -> Path:
    script = Path(sys.executable).with_name("urbangeo")
    found = script if script.exists() else shutil.which("urbangeo")
    if not found:
        pytest.skip("the urbangeo console script is not installed (pip install -e .)")
    return Path(found)


def test_installed_script_prints_one_error_line(tmp_path: Path) -> None:
    proc = subprocess.run([str(_console_script()), "grid", "--bbox", BBOX, "--crs", "EPSG:4326",
                           "-o", str(tmp_path / "c.gpkg")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "geographic" in lines[0] and "--crs EPSG:32610" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "c.gpkg").exists()


@pytest.mark.parametrize("args, needle", [
    (["-o", "cells.txt"], "must end in .gpkg"),
    (["-o", "cells.gpkg", "--style-column", "pop"], "--style-column pop is not a column"),
])
def test_output_mistakes_are_refused_before_any_work(tmp_path: Path, monkeypatch, args, needle):
    def no_work(*_args, **_kwargs):
        raise AssertionError("the grid was built before the output options were checked")

    monkeypatch.setattr("urbangeo.geo.grid.build_grid", no_work)
    args = [str(tmp_path / a) if a.startswith("cells.") else a for a in args]
    result = _run("grid", "--bbox", BBOX, *args)
    assert isinstance(result.exception, InputError) and needle in str(result.exception)
