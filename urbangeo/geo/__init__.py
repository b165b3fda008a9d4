"""Geospatial layer: grids, chips, indicator alignment, GeoPackage/GeoTIFF I/O.

It never imports torch, so planners can grid, cut chips and align indicators without it.
"""
