"""A real XYZ tile server on 127.0.0.1 for the chip tests, with faults on demand.

Tiles are cut on the fly from an EPSG:3857 GeoTIFF by plain nearest-neighbour sampling (on
purpose not the warp code under test), encoded as RGBA PNG (alpha 0 where the raster has no
data) and answered 404 where a tile holds no data at all. Faults are injected per request:

- ``first_faults``: the first requests of *every* tile answer these in turn: ``"429"`` (with
  ``Retry-After: 0``), ``"500"``, ``"slow"`` (sleep ``slow_s`` before answering) or
  ``"corrupt"`` (bytes that are no image);
- ``always``: a fault answered on every request of every tile.

The server counts requests per path, records every User-Agent it saw and the largest number of
requests it was holding at once (``peak_in_flight``); ``delay_s`` holds every request that long
before answering, so concurrent requests overlap. ``square_cells``
builds the hand-made cells the chip tests cut.
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from PIL import Image
from shapely.geometry import box

from urbangeo.geo.cells import CellsFile

HALF_WORLD = 20037508.342789244


class TileServer:
    """``with TileServer(tif) as server: server.template`` -> ``http://127.0.0.1:PORT/{z}/{x}/{y}.png``."""

    def __init__(self, raster: Path, *, first_faults: list[str] | None = None,
                 always: str | None = None, slow_s: float = 1.0, delay_s: float = 0.0) -> None:
        with rasterio.open(raster) as ds:
            if ds.crs.to_epsg() != 3857:
                raise ValueError("the test tile server serves EPSG:3857 rasters only")
            self._rgb = ds.read([1, 2, 3])
            self._valid = ds.dataset_mask() > 0
            self._inverse = ~ds.transform
        self.first_faults = list(first_faults or [])
        self.always = always
        self.slow_s = slow_s
        self.delay_s = delay_s
        self.peak_in_flight = 0
        self._in_flight = 0
        self.counts: Counter[str] = Counter()
        self.user_agents: list[str] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def template(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{{z}}/{{x}}/{{y}}.png"

    @property
    def total_requests(self) -> int:
        return sum(self.counts.values())

    def __enter__(self) -> TileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def render(self, z: int, x: int, y: int) -> bytes | None:
        """PNG bytes of tile z/x/y, or ``None`` when it holds no data."""
        span = 2 * HALF_WORLD / 2**z
        centres = (np.arange(256) + 0.5) * span / 256
        mx, my = np.meshgrid(-HALF_WORLD + x * span + centres, HALF_WORLD - y * span - centres)
        cols, rows = self._inverse @ (mx, my)
        cols, rows = np.floor(cols).astype(int), np.floor(rows).astype(int)
        inside = (cols >= 0) & (rows >= 0) & (cols < self._valid.shape[1]) & (
            rows < self._valid.shape[0])
        cols, rows = np.where(inside, cols, 0), np.where(inside, rows, 0)
        alpha = inside & self._valid[rows, cols]
        if not alpha.any():
            return None
        rgba = np.concatenate([self._rgb[:, rows, cols], (alpha * 255).astype(np.uint8)[None]])
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgba.transpose(1, 2, 0)), "RGBA").save(buffer, "PNG")
        return buffer.getvalue()

    def _fault_for(self, path: str) -> str | None:
        with self._lock:
            self.counts[path] += 1
            n = self.counts[path]
        if self.always:
            return self.always
        return self.first_faults[n - 1] if n <= len(self.first_faults) else None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with server._lock:
                    server.user_agents.append(self.headers.get("User-Agent", ""))
                    server._in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server._in_flight)
                # counted until the answer starts: a client may open its next request as soon
                # as it has read this one, before this thread has finished writing
                time.sleep(server.delay_s)
                with server._lock:
                    server._in_flight -= 1
                try:
                    self._answer(server._fault_for(self.path))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out first: that is what "slow" is for

            def _answer(self, fault: str | None) -> None:
                if fault == "slow":
                    time.sleep(server.slow_s)
                elif fault in ("429", "500"):
                    self.send_response(int(fault))
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                z, x, y = (int(part) for part in self.path.split("?")[0].strip("/")
                           .removesuffix(".png").split("/"))
                body = b"\x89PNG\r\n\x1a\nnot really a png" if fault == "corrupt" else (
                    server.render(z, x, y))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def square_cells(crs: str, x0: float, y_top: float, rows: int, cols: int,
                 size: float = 1000.0) -> CellsFile:
    """A hand-made grid (the chip tests must not depend on the grid builder): ``rows`` x
    ``cols`` squares of ``size`` from the top-left corner (x0, y_top)."""
    records = [{"cell_id": f"t_{r}_{c}", "row": r, "col": c,
                "geometry": box(x0 + c * size, y_top - (r + 1) * size,
                                x0 + (c + 1) * size, y_top - r * size)}
               for r in range(rows) for c in range(cols)]
    grid = {"scheme": "metric", "crs": crs, "cell_size_m": size, "zoom": None,
            "ground_cell_size_m": size, "origin": [x0, y_top], "n_cells": len(records)}
    return CellsFile(gpd.GeoDataFrame(records, crs=crs), {"grid": grid})
