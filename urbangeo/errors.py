"""One exception family for every mistake a user can fix.

The CLI catches :class:`UrbangeoError` and prints its message as one line (no traceback), so
each message must say what is wrong *and* what to do about it. Anything else that escapes is a
bug in urbangeo and keeps its traceback.
"""

from __future__ import annotations


class UrbangeoError(Exception):
    """Base class: a problem the user can act on (bad input, unreachable server, ...)."""

    exit_code = 2


class InputError(UrbangeoError):
    """A file, option or parameter is missing, unreadable or inconsistent."""


class CRSError(InputError):
    """A coordinate reference system is missing, geographic where metres are needed, or unusable."""


class GeometryError(InputError):
    """An area of interest is empty, invalid beyond repair, or spans where no grid can go."""


class NoOverlapError(InputError):
    """Two datasets that must overlap (AOI and raster, cells and imagery) do not."""


class DataError(UrbangeoError):
    """Data content is unusable: NaN targets, malformed captions, corrupt tiles, nodata only."""


class RemoteError(UrbangeoError):
    """A tile server or model endpoint kept failing after every retry."""

    exit_code = 3


class ModelError(UrbangeoError):
    """A model directory or checkpoint is missing, incompatible or corrupt."""
