"""The plugin as QGIS loads it: metadata, qgis.utils with the stub iface, qgis_process."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
import qgis.utils
from qgis.core import QgsApplication

from .conftest import REPO

PLUGINS = REPO / "plugins"
QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")  # the /usr/bin/qgis_process wrapper is broken
ALGORITHMS = {"creategrid", "captioncells", "trainmodel", "predictindicators", "similarcells",
              "checkinstallation"}


def test_metadata_declares_a_processing_provider_for_qgis_3_22() -> None:
    meta = configparser.ConfigParser()
    meta.read(PLUGINS / "qgis_urbanclip" / "metadata.txt", encoding="utf-8")
    general = meta["general"]
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["hasProcessingProvider"] == "yes"
    for key in ("name", "description", "about", "version", "author", "email", "tracker",
                "repository"):
        assert general[key].strip(), key
    assert (PLUGINS / "qgis_urbanclip" / general["icon"]).is_file()


def test_loads_and_unloads_through_qgis_utils(qgis_iface, qgis_processing, monkeypatch) -> None:
    monkeypatch.setattr(qgis.utils, "plugin_paths", [str(PLUGINS)])
    qgis.utils.updateAvailablePlugins()
    assert "qgis_urbanclip" in qgis.utils.available_plugins
    assert qgis.utils.pluginMetadata("qgis_urbanclip", "name") == "UrbanCLIP"
    assert qgis.utils.loadPlugin("qgis_urbanclip")
    registry = QgsApplication.processingRegistry()
    try:
        assert qgis.utils.startPlugin("qgis_urbanclip")
        provider = registry.providerById("urbanclip")
        assert provider is not None and provider.name() == "UrbanCLIP"
        assert {alg.name() for alg in provider.algorithms()} == ALGORITHMS
        for alg in provider.algorithms():  # each says which command line it runs
            assert alg.shortHelpString() and alg.helpUrl().endswith("docs/qgis.md")
    finally:
        assert qgis.utils.unloadPlugin("qgis_urbanclip")
    assert registry.providerById("urbanclip") is None
    # never torch nor urbangeo inside QGIS's own Python
    import sys

    assert "torch" not in sys.modules and "urbangeo" not in sys.modules


def test_qgis_process_runs_an_algorithm(urbangeo_cli: Path, city: Path, tmp_path: Path) -> None:
    if not QGIS_PROCESS.is_file():
        pytest.fail(f"{QGIS_PROCESS} is missing: apt-get install -y --no-install-recommends qgis")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QGIS_PLUGINPATH": str(PLUGINS),
           "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path / "profile"),
           "URBANGEO_CLI": str(urbangeo_cli)}

    def qgis_process(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(QGIS_PROCESS), *args], env=env, capture_output=True,
                              text=True, timeout=300)

    enabled = qgis_process("plugins", "enable", "qgis_urbanclip")
    assert enabled.returncode == 0, enabled.stderr
    output = tmp_path / "cells.gpkg"
    done = qgis_process("--json", "run", "urbanclip:creategrid", "--",
                        f"AOI={city / 'aoi.geojson'}", "CELL_SIZE=500", f"OUTPUT={output}")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout[done.stdout.index("{"):])
    assert result["results"]["OUTPUT"] == f"{output}|layername=cells"
    assert output.is_file()
    assert result["provider_details"]["supported_output_vector_extensions"] == ["gpkg"]


def test_built_zip_installs_the_plugin_with_the_changelog(tmp_path: Path) -> None:
    zip_path = tmp_path / "qgis_urbanclip.zip"
    subprocess.run(["python3", str(REPO / "scripts" / "build_plugin.py"), "-o", str(zip_path)],
                   check=True, timeout=60)
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        metadata = archive.read("qgis_urbanclip/metadata.txt").decode("utf-8")
    assert all(name.startswith("qgis_urbanclip/") for name in names)
    assert "qgis_urbanclip/__init__.py" in names and "qgis_urbanclip/algorithms/grid.py" in names
    assert "qgis_urbanclip/LICENSE" in names  # plugins.qgis.org refuses a zip without it
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    meta = configparser.ConfigParser()
    meta.read_string(metadata)
    changelog = meta["general"]["changelog"]
    first_entry = next(line for line in (REPO / "CHANGELOG.md").read_text().splitlines()
                       if line.startswith("- "))
    assert first_entry[2:40] in changelog.replace("\n", " ")


def test_diagnostics_find_the_python_of_every_console_script_form() -> None:
    import sys

    from qgis_urbanclip.command import python_from_script

    python = Path(sys.executable)
    assert python_from_script(f"#!{python}\n") == python
    assert python_from_script("#!/usr/bin/env python3\n") is not None
    # pip's form for venv paths with spaces or too long for a #! line
    quote = "'" * 3
    pip_sh = f"#!/bin/sh\n{quote}exec' \"{python}\" \"$0\" \"$@\"\n' {quote}\n"
    assert python_from_script(pip_sh) == python
    assert python_from_script("MZ\x90 a Windows launcher") is None
