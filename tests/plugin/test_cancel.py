"""Cancelling kills the urbangeo process tree and leaves nothing partial behind."""

from __future__ import annotations

import hashlib
from pathlib import Path

import processing
import pytest
from qgis.core import QgsProcessingException

from .conftest import RecordingFeedback


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text`` (Linux /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_text(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_cancel_grid_while_cutting_chips_leaves_nothing(provider, city: Path,
                                                        tmp_path: Path) -> None:
    feedback = RecordingFeedback(cancel_on="chips")
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run("urbanclip:creategrid", {
            "AOI": str(city / "aoi.geojson"), "CELL_SIZE": 250,
            "IMAGERY": str(city / "imagery.tif"), "TILE_PX": 64,
            "OUTPUT": str(tmp_path / "cells.gpkg")}, feedback=feedback)
    assert feedback.texts[-1].startswith("chips")  # cancelled mid-run, not at the end
    assert _processes_mentioning(str(tmp_path)) == []
    # the cells file exists before chips are cut; cancelling removed it and the chip store
    assert list(tmp_path.iterdir()) == []


def test_cancel_caption_leaves_the_cells_file_as_it_was(provider, captioned_cells: Path) -> None:
    before = _digest(captioned_cells)
    feedback = RecordingFeedback(cancel_on="caption")
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run("urbanclip:captioncells", {
            "CELLS": f"{captioned_cells}|layername=cells", "RECAPTION": True},
            feedback=feedback)
    assert _digest(captioned_cells) == before
    assert not [p for p in captioned_cells.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.needs_learning
def test_cancel_training_leaves_no_model_but_keeps_checkpoints(
        provider, captioned_cells: Path, cli_commands: set[str], tmp_path: Path) -> None:
    if "train" not in cli_commands:
        pytest.skip("this urbangeo has no train command")
    model = tmp_path / "model"
    feedback = RecordingFeedback(cancel_on="epoch")
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run("urbanclip:trainmodel", {
            "CELLS": f"{captioned_cells}|layername=cells", "PRESET": 0, "EPOCHS": 50,
            "DEVICE": 1, "OUTPUT": str(model)}, feedback=feedback)
    assert _processes_mentioning(str(model)) == []
    assert not model.exists()  # no half-written model; checkpoints (if any) stay to resume
    assert set(tmp_path.iterdir()) <= {captioned_cells.parent, tmp_path / "model.partial"}
