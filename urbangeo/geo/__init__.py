"""Geospatial layer: grids, chips, indicator alignment, GeoPackage/GeoTIFF I/O. Never imports torch."""
