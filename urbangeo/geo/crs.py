"""CRS constants and labels shared by the grid, indicator and chip code.

One home for them, so the web-mercator world size and the way a CRS is written into metadata
cannot drift apart between modules.
"""

from __future__ import annotations

import math

import pyproj

WGS84 = pyproj.CRS.from_epsg(4326)
WEB_MERCATOR = pyproj.CRS.from_epsg(3857)
#: EPSG:3857 projects the WGS84 ellipsoid's equatorial radius as a sphere.
WEB_MERCATOR_RADIUS = 6378137.0
#: EPSG:3857 x and y run from -this to +this (the world's edge at ±180°, ±85.05°).
WEB_MERCATOR_HALF = math.pi * WEB_MERCATOR_RADIUS
WEB_MERCATOR_MAX_LAT = 85.0511287798


def crs_string(crs: pyproj.CRS) -> str:
    """``EPSG:xxxx`` when the CRS has a code, else its WKT: what metadata and messages show."""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()


def wrap_period(crs: pyproj.CRS) -> float | None:
    """The world's width in ``crs`` x units when x wraps at the antimeridian (longitude in
    degrees, web mercator), else ``None``: a geometry across 180° must be unwrapped there."""
    if crs.is_geographic and {a.unit_name for a in crs.axis_info} <= {"degree"}:
        return 360.0
    if crs.equals(WEB_MERCATOR):
        return 2 * WEB_MERCATOR_HALF
    return None
