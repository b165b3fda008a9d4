"""Chips from an XYZ tile server: a real HTTP server on 127.0.0.1 with injected faults."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from tileserver import TileServer, square_cells

from urbangeo.errors import InputError, RemoteError
from urbangeo.geo.chips import ChipStore, cut_chips
from urbangeo.geo.chips import xyz as xyz_module
from urbangeo.geo.chips.xyz import XYZSource, choose_zoom

UTM = "EPSG:32610"
X0, Y_TOP = 560_000.0, 4_180_000.0  # East Bay, in UTM 10N
FAST = {"timeout": 0.3, "backoff_s": 0.01}


@pytest.fixture
def mercator_tif(tmp_path: Path) -> Path:
    """A small EPSG:3857 scene (20 m) around the test cells, so tests run without ../shared."""
    mx, my = Transformer.from_crs(UTM, "EPSG:3857", always_xy=True).transform(X0, Y_TOP)
    rng = np.random.default_rng(7)
    data = rng.integers(20, 240, (3, 60, 60), dtype=np.uint8).repeat(5, 1).repeat(5, 2)
    path = tmp_path / "merc.tif"
    with rasterio.open(path, "w", driver="GTiff", width=300, height=300, count=3,
                       dtype="uint8", crs="EPSG:3857",
                       transform=Affine(20, 0, mx - 1000, 0, -20, my + 1000)) as dst:
        dst.write(data)
    return path


def xyz(server: TileServer, tmp_path: Path, **options: object) -> XYZSource:
    return XYZSource(options.pop("template", server.template), indexes=[1, 2, 3],
                     cache_dir=tmp_path / "tiles", **{**FAST, **options})


def chips(path: Path, ids: list[str]) -> np.ndarray:
    return ChipStore.open(path).read_many(ids).astype(float)


@pytest.mark.shared_data
def test_xyz_chips_match_chips_cut_from_the_geotiff(shared_data: Path, tmp_path: Path) -> None:
    tif = shared_data / "sfbay" / "landsat7_sfbay_nirrg_30m.tif"
    cells = square_cells(UTM, X0, Y_TOP, 2, 2)
    ids = cells.cells["cell_id"].tolist()
    with TileServer(tif) as server:
        _, report = cut_chips(cells, tmp_path / "web.gpkg", [xyz(server, tmp_path)], tile_px=64)
    cut_chips(cells, tmp_path / "local.gpkg", [str(tif)], tile_px=64)
    web, local = chips(tmp_path / "web.chips.zarr", ids), chips(tmp_path / "local.chips.zarr", ids)
    assert report.cut == 4
    # tiles are nearest-sampled at zoom 13, then warped again: close, not identical
    assert np.abs(web - local).mean() < 4.0
    assert np.corrcoef(web.ravel(), local.ravel())[0, 1] > 0.97
    assert all(agent.startswith("urbangeo/") and "github.com/urbangeo" in agent
               for agent in server.user_agents)


def test_retries_429_500_and_timeouts_then_rerun_hits_cache(mercator_tif: Path,
                                                           tmp_path: Path) -> None:
    cells = square_cells(UTM, X0, Y_TOP, 1, 2)
    ids = cells.cells["cell_id"].tolist()
    with TileServer(mercator_tif) as clean:
        cut_chips(cells, tmp_path / "clean.gpkg", [xyz(clean, tmp_path / "a")], tile_px=32)
    with TileServer(mercator_tif, first_faults=["429", "500", "slow"], slow_s=1.0) as server:
        _, report = cut_chips(cells, tmp_path / "c.gpkg", [xyz(server, tmp_path / "b")],
                              tile_px=32, workers=2)
        assert report.cut == 2
        assert set(server.counts.values()) == {4}  # 3 faults, then the tile: one fetch each
        assert np.array_equal(chips(tmp_path / "c.chips.zarr", ids),
                              chips(tmp_path / "clean.chips.zarr", ids))

        before = server.total_requests
        _, again = cut_chips(cells, tmp_path / "d.gpkg", [xyz(server, tmp_path / "b")],
                             tile_px=32)
        assert again.cut == 2 and server.total_requests == before  # all from the cache


def test_corrupt_tiles_are_retried_once_counted_and_never_cached(mercator_tif: Path,
                                                                tmp_path: Path) -> None:
    cells = square_cells(UTM, X0, Y_TOP, 1, 1)
    with TileServer(mercator_tif, always="corrupt") as server:
        out, report = cut_chips(cells, tmp_path / "c.gpkg", [xyz(server, tmp_path)], tile_px=32)
    assert set(server.counts.values()) == {2}
    assert report.corrupt_tiles == len(server.counts) and report.no_coverage == 1
    assert not out.cells["has_chip"].any()
    assert not [p for p in (tmp_path / "tiles").rglob("*") if p.is_file()]


def test_404_is_no_imagery_and_is_remembered(mercator_tif: Path, tmp_path: Path) -> None:
    far = square_cells(UTM, X0 + 40_000, Y_TOP, 1, 2)  # the scene is 6 km wide
    with TileServer(mercator_tif) as server:
        out, report = cut_chips(far, tmp_path / "c.gpkg", [xyz(server, tmp_path)], tile_px=32)
        asked = server.total_requests
        cut_chips(far, tmp_path / "c.gpkg", [xyz(server, tmp_path)], tile_px=32)
        assert server.total_requests == asked > 0
    assert report.no_coverage == 2 and not out.cells["has_chip"].any()


def test_exhausted_retries_raise_remote_error_without_the_key(mercator_tif: Path,
                                                              tmp_path: Path) -> None:
    cells = square_cells(UTM, X0, Y_TOP, 1, 1)
    with TileServer(mercator_tif, always="500") as server:
        source = xyz(server, tmp_path, template=server.template + "?api_key=SECRET42",
                     retries=2)
        with pytest.raises(RemoteError) as error:
            cut_chips(cells, tmp_path / "c.gpkg", [source], tile_px=32, workers=1)
    message = str(error.value)
    assert "HTTP 500" in message and "api_key=***" in message and "SECRET42" not in message
    assert max(server.counts.values()) == 3


def test_zoom_follows_ground_resolution_and_latitude() -> None:
    # 1000 m cells, 256 px: ~3.9 m ground pixels; mercator stretches by 1/cos(lat)
    equator = choose_zoom(1000.0, 256, 19)
    sixty = choose_zoom(1000.0 / math.cos(math.radians(60)), 256, 19)
    assert (equator, sixty) == (16, 15)
    assert 156543.034 / 2**equator <= 1000.0 / 256 < 156543.034 / 2 ** (equator - 1)
    assert choose_zoom(1.0, 256, 17) == 17  # capped


def test_bad_templates_and_bands_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"needs \{z\}"):
        XYZSource("https://tiles.example/{z}/{x}.png", indexes=[1, 2, 3], cache_dir=tmp_path)
    with pytest.raises(InputError, match="3 bands.*band 4 does not exist"):
        XYZSource("https://t.example/{z}/{x}/{y}.png", indexes=[1, 2, 3, 4], cache_dir=tmp_path)


def test_layers_differing_only_in_a_query_value_never_share_cache_or_store(
        mercator_tif: Path, tmp_path: Path) -> None:
    cells = square_cells(UTM, X0, Y_TOP, 1, 1)
    with TileServer(mercator_tif) as server:  # (it ignores the query: same pixels for both)
        a = xyz(server, tmp_path, template=server.template + "?layer=satellite")
        b = xyz(server, tmp_path, template=server.template + "?layer=streets")
        assert a.label == b.label  # redaction hides both values...
        assert a.client.cache_dir != b.client.cache_dir  # ...the full-template hash does not
        assert a.describe() != b.describe() and "satellite" not in str(a.describe())
        cut_chips(cells, tmp_path / "c.gpkg", [a], tile_px=32)
        with pytest.raises(InputError, match="cut from other imagery"):
            cut_chips(cells, tmp_path / "c.gpkg", [b], tile_px=32)


def test_tile_server_never_sees_more_than_max_connections(mercator_tif: Path,
                                                          tmp_path: Path) -> None:
    cells = square_cells(UTM, X0, Y_TOP, 2, 3)  # at 256 px: zoom 15, 12 tiles, most shared
    with TileServer(mercator_tif, delay_s=0.03) as server:
        _, report = cut_chips(cells, tmp_path / "c.gpkg", [server.template], tile_px=256,
                              cache_dir=tmp_path / "tiles", workers=6, max_connections=2)
    assert report.no_coverage + report.cut + report.too_little_coverage == 6
    assert len(server.counts) > 6
    assert server.peak_in_flight == 2  # reached, never passed
    assert set(server.counts.values()) == {1}  # tiles shared by neighbouring cells: one fetch


def test_oversized_tiles_are_refused(mercator_tif: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", (xyz_module.MAX_TILE_PX + 1, 1)).save(buffer, "PNG")
    with pytest.raises(ValueError, match="no map tile"):  # counted as a corrupt tile
        xyz_module._decode(buffer.getvalue())

    monkeypatch.setattr(xyz_module, "MAX_TILE_BYTES", 100)  # the test tiles are ~10 kB
    cells = square_cells(UTM, X0, Y_TOP, 1, 1)
    with TileServer(mercator_tif) as server:
        with pytest.raises(RemoteError, match="sent more than"):
            cut_chips(cells, tmp_path / "c.gpkg", [xyz(server, tmp_path)], tile_px=32)


def test_url_placeholders(tmp_path: Path) -> None:
    from urbangeo.geo.chips.xyz import TileClient

    client = TileClient("https://t.example/{z}/{x}/{-y}/{y}/{q}.png", tmp_path)
    assert client.url(3, 3, 5) == "https://t.example/3/3/2/5/213.png"  # TMS y, Bing quadkey
