"""Where the urbangeo command line is: the provider setting, ``$URBANGEO_CLI``, then ``PATH``.

QGIS ships its own Python, which usually lacks torch; urbangeo lives in a separate environment
and the plugin only ever talks to it through its command line.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from qgis.core import QgsProcessingException, QgsSettings

#: ProcessingConfig stores provider settings under this QgsSettings group.
SETTING_KEY = "Processing/Configuration/URBANGEO_CLI"
INSTALL_HINT = ("Install it with `pip install urbangeo` (from a clone: `pip install -e .`), "
                "then set its path in Processing > Options > Providers > UrbanCLIP > "
                "\"urbangeo command\" or put it on PATH.")
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?(\.exe)?$", re.IGNORECASE)


def configured_command() -> str:
    """The user's choice: the provider setting, else ``$URBANGEO_CLI`` (empty when neither)."""
    value = QgsSettings().value(SETTING_KEY, "") or ""
    return str(value).strip() or os.environ.get("URBANGEO_CLI", "").strip()


def find_executable() -> Path:
    """The ``urbangeo`` executable or a Python interpreter that has urbangeo installed."""
    configured = configured_command()
    if configured:
        found = shutil.which(configured) or (configured if Path(configured).is_file() else None)
        if found is None:
            raise QgsProcessingException(
                f"The configured urbangeo command {configured!r} does not exist. "
                + INSTALL_HINT)
        return Path(found)
    found = shutil.which("urbangeo")
    if found is None:
        raise QgsProcessingException("The urbangeo command was not found. " + INSTALL_HINT)
    return Path(found)


def base_command() -> list[str]:
    """The argument list that starts the urbangeo CLI (a Python runs it as a module)."""
    executable = find_executable()
    if _PYTHON.match(executable.name):
        return [str(executable), "-m", "urbangeo.cli.main"]
    return [str(executable)]


def interpreter() -> Path | None:
    """The Python behind the CLI (for diagnostics): the setting itself, or the console
    script's ``#!`` line; ``None`` when it cannot be told (e.g. a Windows .exe launcher)."""
    executable = find_executable()
    if _PYTHON.match(executable.name):
        return executable
    try:
        with executable.open("rb") as script:
            head = script.read(8192).decode("utf-8", "replace")
    except OSError:
        return None
    return python_from_script(head)


def python_from_script(head: str) -> Path | None:
    """The Python a console script starts, from its first lines: ``#!/path/python``,
    ``#!/usr/bin/env python3``, or pip's ``#!/bin/sh`` + ``exec "/path/python"`` form (used
    when the venv path has spaces or is too long for a ``#!`` line)."""
    lines = head.splitlines()
    if not lines or not lines[0].startswith("#!"):
        return None
    words = lines[0][2:].split()
    if words and Path(words[0]).name == "env" and len(words) > 1:
        found = shutil.which(words[1])
        return Path(found) if found else None
    if words and _PYTHON.match(Path(words[0]).name):
        return Path(words[0]) if Path(words[0]).is_file() else None
    for line in lines[1:3]:
        match = re.search(r"exec' \"([^\"]+)\"", line)
        if match and Path(match.group(1)).is_file():
            return Path(match.group(1))
    return None


def child_environment() -> dict[str, str]:
    """QGIS's environment minus what would make another Python or GDAL misbehave.

    QGIS sets PYTHONPATH/PYTHONHOME for its own Python and GDAL_DATA/PROJ_* for its own GDAL
    and PROJ; urbangeo's wheels bring their own, of other versions.
    """
    env = {key: value for key, value in os.environ.items()
           if key not in {"PYTHONPATH", "PYTHONHOME", "GDAL_DATA", "PROJ_LIB", "PROJ_DATA",
                          "GDAL_DRIVER_PATH"}}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env
