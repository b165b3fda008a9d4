"""Versions for bug reports: QGIS and its Python here, urbangeo/torch/CUDA in urbangeo's own
Python (asked in a subprocess, so torch is never imported into QGIS)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

from qgis.core import Qgis, QgsProcessingException

from .command import INSTALL_HINT, base_command, child_environment, interpreter

#: Run by urbangeo's interpreter; prints one JSON object.
_PROBE = """
import json, platform, sys
info = {"python": sys.version.split()[0], "executable": sys.executable,
        "platform": platform.platform()}
try:
    import urbangeo
    info["urbangeo"] = urbangeo.__version__
except Exception as exc:
    info["urbangeo"] = "not importable: %s" % exc
try:
    import torch
    info["torch"] = torch.__version__
    info["cuda_build"] = torch.version.cuda or "none (CPU build)"
    info["cuda_available"] = torch.cuda.is_available()
    info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
except Exception as exc:
    info["torch"] = "not importable: %s" % exc
try:
    import rasterio
    info["gdal"] = rasterio.__gdal_version__
except Exception as exc:
    info["gdal"] = "not importable: %s" % exc
print(json.dumps(info))
"""
_TIMEOUT_S = 120


def report_lines() -> list[str]:
    """``key: value`` lines; problems are reported in the lines, never raised."""
    lines = [f"QGIS: {Qgis.QGIS_VERSION}",
             f"QGIS Python: {sys.version.split()[0]} ({sys.executable})",
             f"OS: {platform.platform()}"]
    try:
        command = base_command()
    except QgsProcessingException as exc:
        return [*lines, f"urbangeo command: NOT FOUND - {exc}"]
    lines.append(f"urbangeo command: {' '.join(command)}")
    lines.append("urbangeo CLI: " + _run([*command, "--version"]).strip())
    python = interpreter()
    if python is None:
        return [*lines, "urbangeo Python: unknown (the command is not a Python script); set "
                        "the provider's urbangeo command to that Python for full details"]
    raw = _run([str(python), "-c", _PROBE])
    try:
        info = json.loads(raw.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return [*lines, f"urbangeo Python {python}: probe failed: {raw.strip()[-300:]}"]
    lines += [f"urbangeo Python: {info['python']} ({info['executable']})",
              f"urbangeo: {info['urbangeo']}",
              f"torch: {info['torch']}"]
    if "cuda_build" in info:
        gpus = ", ".join(info["gpus"]) or "none"
        lines += [f"CUDA: build {info['cuda_build']}, available: {info['cuda_available']}, "
                  f"GPUs: {gpus}"]
    lines.append(f"GDAL (urbangeo's rasterio): {info['gdal']}")
    return lines


def _run(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=_TIMEOUT_S,
                              env=child_environment(), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"failed to run: {exc}. {INSTALL_HINT}"
    if done.returncode != 0:
        return f"failed (exit {done.returncode}): {done.stderr.strip()[-300:]}"
    return done.stdout
