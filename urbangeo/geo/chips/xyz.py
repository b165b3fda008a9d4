"""Chips from XYZ ("slippy map") tile servers: ``https://host/{z}/{x}/{y}.png``.

Per cell: pick the zoom whose tile pixels are at least as fine as the chip's pixels, fetch the
tiles around the cell, mosaic them in web mercator and warp onto the cell like any raster.

Being a good client matters as much as the pixels: every tile is cached on disk (so a rerun
sends no request), requests carry a real User-Agent, at most ``max_connections`` are in flight,
and timeouts, connection errors, 429 (honouring Retry-After) and 5xx are retried with
exponential backoff and jitter. 404 means "no imagery here" and is cached as such. An
undecodable tile is fetched once more, then treated as missing (counted, never cached).
"""

from __future__ import annotations

import hashlib
import http.client
import io
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

import numpy as np
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from urbangeo import __version__
from urbangeo._atomic import atomic_path
from urbangeo._net import backoff_s, read_limited, redact, retry_after_s
from urbangeo.errors import InputError, RemoteError
from urbangeo.geo.chips.sources import CellWindow, warp_to_cell
from urbangeo.geo.crs import WEB_MERCATOR_HALF

USER_AGENT = f"urbangeo/{__version__} (+https://github.com/urbangeo/urbangeo)"
TILE_PX = 256
WEB_MERCATOR = CRS.from_epsg(3857)  # rasterio's, for the warp (crs.WEB_MERCATOR is pyproj's)
_MARGIN_TILE_PX = 2  # tile pixels fetched beyond the cell so bilinear edges have neighbours
_MAX_BACKOFF_S = 60.0
MAX_TILE_BYTES = 32 * 2**20  # far above any real tile; stops a wrong URL streaming a huge file
MAX_TILE_PX = 4096  # per side, checked before decoding: a tile is 256 or 512 px


def choose_zoom(mercator_width: float, tile_px: int, max_zoom: int) -> int:
    """Coarsest zoom whose tile pixels are no larger than the chip's pixels.

    Both are compared in web-mercator metres over the cell's own mercator extent, which
    stretches by 1/cos(latitude): that is the latitude correction (a 1 km cell at 60°N spans
    2 km of mercator and needs one zoom level less than at the equator).
    """
    chip_res = mercator_width / tile_px
    zoom = math.ceil(math.log2(2 * WEB_MERCATOR_HALF / (TILE_PX * chip_res)) - 1e-9)
    return max(0, min(max_zoom, zoom))


def _quadkey(z: int, x: int, y: int) -> str:
    return "".join(str(((x >> i) & 1) | (((y >> i) & 1) << 1)) for i in range(z - 1, -1, -1))


class TileClient:
    """Fetches (z, x, y) tiles as RGBA arrays through a disk cache; safe to share by threads.

    Concurrent requests for the same tile share one fetch (the first caller fetches, the
    others wait for its result); requests for different tiles never wait for each other, only
    for one of the ``max_connections`` slots, held only while a request is open.
    """

    def __init__(self, template: str, cache_dir: Path, *, timeout: float = 10.0,
                 retries: int = 4, backoff_s: float = 0.5, max_connections: int = 4,
                 user_agent: str = USER_AGENT) -> None:
        if max_connections < 1:
            raise InputError(f"max_connections must be at least 1, got {max_connections}")
        self.template = template
        self.cache_dir = cache_dir
        self.timeout, self.retries, self.backoff_s = timeout, retries, backoff_s
        self.user_agent = user_agent
        self.corrupt = 0
        self._slots = threading.BoundedSemaphore(max_connections)
        self._in_flight: dict[tuple[int, int, int], Future[np.ndarray | None]] = {}
        self._lock = threading.Lock()

    def url(self, z: int, x: int, y: int) -> str:
        return (self.template.replace("{z}", str(z)).replace("{x}", str(x))
                .replace("{-y}", str(2**z - 1 - y)).replace("{y}", str(y))
                .replace("{q}", _quadkey(z, x, y)))

    def tile(self, z: int, x: int, y: int) -> np.ndarray | None:
        """(4, h, w) uint8 RGBA, or ``None`` where the server has no tile."""
        key = (z, x, y)
        mine: Future[np.ndarray | None] = Future()
        with self._lock:
            shared = self._in_flight.setdefault(key, mine)
        if shared is not mine:  # a neighbouring cell is fetching this tile right now
            return shared.result()
        try:
            rgba = self._cached_or_fetched(z, x, y)
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        finally:
            with self._lock:
                del self._in_flight[key]
        mine.set_result(rgba)
        return rgba

    def _cached_or_fetched(self, z: int, x: int, y: int) -> np.ndarray | None:
        path = self.cache_dir / str(z) / str(x) / str(y)
        missing = path.with_name(f"{y}.404")
        if missing.exists():
            return None
        if path.exists():
            try:
                return _decode(path.read_bytes())
            except ValueError:
                path.unlink(missing_ok=True)  # damaged cache entry: fetch it again
        url = self.url(z, x, y)
        for _ in range(2):
            body = self._fetch(url)
            if body is None:
                _write_atomic(missing, b"")
                return None
            try:
                rgba = _decode(body)
            except ValueError:
                continue
            _write_atomic(path, body)
            return rgba
        with self._lock:
            self.corrupt += 1
        return None

    def _fetch(self, url: str) -> bytes | None:
        """The body at ``url`` (``None`` for 404/204), retrying what a retry can fix.

        A connection slot is held only while the request is open, never while backing off.
        """
        problem = ""
        for attempt in range(self.retries + 1):
            server_wait: float | None = None
            try:
                with self._slots:
                    request = Request(url, headers={"User-Agent": self.user_agent,
                                                    "Accept": "image/*"})
                    with urlopen(request, timeout=self.timeout) as response:
                        if response.status == 204:
                            return None
                        return read_limited(response, MAX_TILE_BYTES, f"tile {redact(url)}")
            except HTTPError as exc:
                exc.close()
                if exc.code == 404:
                    return None
                if exc.code != 429 and exc.code < 500:
                    raise RemoteError(f"{redact(url)} answered HTTP {exc.code} {exc.reason}: "
                                      "check the URL template and any API key") from None
                problem = f"HTTP {exc.code}"
                server_wait = retry_after_s(exc.headers.get("Retry-After"))
            except (URLError, OSError, http.client.HTTPException) as exc:
                problem = str(getattr(exc, "reason", exc)) or type(exc).__name__
            if attempt < self.retries:
                time.sleep(backoff_s(attempt, base_s=self.backoff_s, max_s=_MAX_BACKOFF_S,
                                     retry_after=server_wait))
        raise RemoteError(f"tile server kept failing for {redact(url)} ({problem}) after "
                          f"{self.retries + 1} tries: check the server or try again later")


def _decode(body: bytes) -> np.ndarray:
    """Image bytes -> (4, h, w) uint8 RGBA; ``ValueError`` if they are not a readable image."""
    try:
        with Image.open(io.BytesIO(body)) as image:
            width, height = image.size  # from the header: checked before any pixel is decoded
            if width > MAX_TILE_PX or height > MAX_TILE_PX:
                raise ValueError(f"{width}x{height} px is no map tile (at most {MAX_TILE_PX})")
            image.load()
            rgba = np.asarray(image.convert("RGBA"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"undecodable tile: {exc}") from exc
    return np.ascontiguousarray(rgba.transpose(2, 0, 1))


def _write_atomic(path: Path, body: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(body)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/urbangeo/tiles`` (``~/.cache/urbangeo/tiles`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "urbangeo" / "tiles"


class XYZSource:
    """A tile server as a chip source; ``indexes`` pick among the tiles' R, G, B (1..3)."""

    def __init__(self, template: str, *, indexes: Sequence[int], cache_dir: Path | None = None,
                 max_zoom: int = 19, **client_options: Any) -> None:
        zxy = "{z}" in template and "{x}" in template and re.search(r"\{-?y\}", template)
        if not zxy and "{q}" not in template:
            raise InputError(f"imagery URL {redact(template)} needs {{z}}, {{x}} and {{y}} "
                             "(or {-y}, or {q} alone): e.g. https://host/{z}/{x}/{y}.png")
        bad = [i for i in indexes if not 1 <= i <= 3]
        if bad:
            raise InputError(f"tile server imagery has 3 bands (red, green, blue); band "
                             f"{','.join(map(str, bad))} does not exist: fix --bands, drop "
                             "--nir-band")
        self.label = redact(template)
        self.indexes = [int(i) for i in indexes]
        self.max_zoom = max_zoom
        # The label hides every query value, so ?layer=satellite and ?layer=streets look alike;
        # a one-way hash of the full template tells them apart without revealing any key.
        self.template_sha256 = hashlib.sha256(template.encode("utf-8")).hexdigest()
        host = re.sub(r"[^A-Za-z0-9.-]", "_", urlsplit(template).hostname or "host")
        root = Path(cache_dir) if cache_dir else default_cache_dir()
        self.client = TileClient(template, root / f"{host}-{self.template_sha256[:16]}",
                                 **client_options)

    @property
    def corrupt_tiles(self) -> int:
        return self.client.corrupt

    def band_names_hint(self) -> list[str | None]:
        return [("red", "green", "blue")[i - 1] for i in self.indexes]

    def ground_resolution_m(self, lon: float, lat: float) -> float | None:
        return None  # tiles are fetched at the zoom that matches the chip's own pixels

    def describe(self) -> dict[str, Any]:
        return {"source": self.label, "kind": "xyz", "template_sha256": self.template_sha256,
                "bands": self.indexes, "max_zoom": self.max_zoom, "stretch": None}

    def overlaps(self, cell: CellWindow) -> bool:
        return True  # the whole mercator world; 404s say where a server has nothing

    def read(self, cell: CellWindow) -> tuple[np.ndarray, np.ndarray]:
        left, bottom, right, top = transform_bounds(cell.crs, WEB_MERCATOR, *cell.bounds,
                                                    densify_pts=21)
        z = choose_zoom(min(right - left, top - bottom), cell.tile_px, self.max_zoom)
        span = 2 * WEB_MERCATOR_HALF / 2**z
        margin = _MARGIN_TILE_PX * span / TILE_PX
        last = 2**z - 1
        wanted = (math.floor((left - margin + WEB_MERCATOR_HALF) / span),
                  math.floor((WEB_MERCATOR_HALF - top - margin) / span),
                  math.floor((right + margin + WEB_MERCATOR_HALF) / span),
                  math.floor((WEB_MERCATOR_HALF - bottom + margin) / span))
        x0, y0 = max(0, wanted[0]), max(0, wanted[1])
        x1, y1 = min(last, wanted[2]), min(last, wanted[3])
        tiles = {(x, y): self.client.tile(z, x, y)
                 for y in range(y0, y1 + 1) for x in range(x0, x1 + 1)}
        px = next((t.shape[1] for t in tiles.values() if t is not None), None)
        n, size = len(self.indexes), cell.tile_px
        if px is None:
            return np.zeros((n, size, size), np.uint8), np.zeros((size, size), bool)
        mosaic = np.zeros((4, (y1 - y0 + 1) * px, (x1 - x0 + 1) * px), np.uint8)
        for (x, y), rgba in tiles.items():
            if rgba is not None:
                if rgba.shape[1:] != (px, px):
                    rgba = _resize(rgba, px)
                mosaic[:, (y - y0) * px:(y - y0 + 1) * px, (x - x0) * px:(x - x0 + 1) * px] = rgba
        transform = Affine(span / px, 0.0, -WEB_MERCATOR_HALF + x0 * span,
                           0.0, -span / px, WEB_MERCATOR_HALF - y0 * span)
        data = mosaic[[i - 1 for i in self.indexes]]
        spans = all(t is not None for t in tiles.values()) and (x0, y0, x1, y1) == wanted
        chip, mask = warp_to_cell(data, mosaic[3] >= 128, transform, WEB_MERCATOR, cell,
                                  spans_cell=spans)
        chip[:, ~mask] = 0
        return chip, mask

    def close(self) -> None:
        pass


def _resize(rgba: np.ndarray, px: int) -> np.ndarray:
    """A tile of another size (a server mixing 256 and 512 px tiles) scaled to ``px``."""
    image = Image.fromarray(np.ascontiguousarray(rgba.transpose(1, 2, 0)), "RGBA")
    return np.asarray(image.resize((px, px), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
