"""embed_cells: frozen image embeddings, deterministic, resumable from their cache, and never
reused for another model or other chips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from recording import RecordingProgress

from urbangeo.errors import InputError, ModelError
from urbangeo.learn.data import load_cell_data
from urbangeo.learn.embed import default_cache, embed_cells, model_sha256
from urbangeo.model import UrbanCLIP, UrbanCLIPConfig, save_model
from urbangeo.model.io import WEIGHTS_NAME


def save_tiny_model(directory: Path, seed: int = 0) -> Path:
    """A randomly initialised tiny UrbanCLIP (64 px) saved as a model directory; the probe only
    needs a frozen encoder, so training is not required (and belongs to `urbangeo train`)."""
    torch.manual_seed(seed)
    return save_model(directory, UrbanCLIP(UrbanCLIPConfig.from_preset("tiny")))


@pytest.fixture
def encoded_rows(monkeypatch) -> list[int]:
    """Counts the images that go through the image encoder."""
    rows: list[int] = []
    original = UrbanCLIP.encode_image

    def counting(self, images, normalize=True):
        rows.append(len(images))
        return original(self, images, normalize)

    monkeypatch.setattr(UrbanCLIP, "encode_image", counting)
    return rows


def test_embeddings_are_deterministic_unit_vectors(city_cells, tmp_path) -> None:
    data = load_cell_data(city_cells)
    model = save_tiny_model(tmp_path / "model")
    first = embed_cells(model, data, batch_size=24, device="cpu")
    again = embed_cells(model, data, batch_size=64, device="cpu")
    assert first.shape == (64, UrbanCLIPConfig.from_preset("tiny").embed_dim)
    assert first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(first, again, atol=1e-5)
    assert np.abs(first[0] - first[1]).max() > 1e-4  # different chips, different vectors


def test_killed_run_resumes_with_only_the_missing_cells(city_cells, tmp_path,
                                                        encoded_rows) -> None:
    data = load_cell_data(city_cells)
    model = save_tiny_model(tmp_path / "model")
    cache = default_cache(city_cells)
    full = embed_cells(model, data, batch_size=16, cache=cache)
    assert sum(encoded_rows) == 64
    # simulate a kill: 20 ids complete, a half-written id, and a vector batch without ids
    entry = next(cache.iterdir())
    ids = (entry / "ids.txt").read_text().splitlines()
    (entry / "ids.txt").write_text("\n".join(ids[:20]) + "\n" + ids[20][:3])
    with (entry / "vectors.f32").open("ab") as f:
        f.write(b"\x00" * 10)
    encoded_rows.clear()
    progress = RecordingProgress()
    resumed = embed_cells(model, data, batch_size=16, cache=cache, progress=progress)
    assert sum(encoded_rows) == 44 and progress.totals["embed"] == 44
    np.testing.assert_allclose(resumed, full, atol=1e-5)
    encoded_rows.clear()
    np.testing.assert_array_equal(embed_cells(model, data, cache=cache), resumed)
    assert encoded_rows == []


def test_another_model_never_reuses_the_cache(city_cells, tmp_path, encoded_rows) -> None:
    data = load_cell_data(city_cells)
    cache = tmp_path / "cache"
    first = embed_cells(save_tiny_model(tmp_path / "a", seed=0), data, cache=cache)
    other = save_tiny_model(tmp_path / "b", seed=1)
    assert model_sha256(tmp_path / "a") != model_sha256(other)
    encoded_rows.clear()
    second = embed_cells(other, data, cache=cache)
    assert sum(encoded_rows) == 64 and not np.allclose(first, second, atol=1e-3)
    np.testing.assert_allclose(second, embed_cells(other, data), atol=1e-5)
    zarr.open_group(str(data.store.path), mode="r+").attrs["sources"] = ["other-imagery.tif"]
    encoded_rows.clear()
    embed_cells(other, load_cell_data(city_cells), cache=cache)  # chips re-cut: embed again
    assert sum(encoded_rows) == 64


def test_bad_model_or_device_is_a_clear_error(city_cells, tmp_path) -> None:
    data = load_cell_data(city_cells)
    with pytest.raises(ModelError, match="does not exist"):
        embed_cells(tmp_path / "nowhere", data)
    with pytest.raises(InputError, match="unknown device 'gpu0'"):
        embed_cells(tmp_path / "nowhere", data, device="gpu0")
    with pytest.raises(InputError, match="'meta' is not supported"):
        embed_cells(tmp_path / "nowhere", data, device="meta")
    model = save_tiny_model(tmp_path / "model")
    (model / WEIGHTS_NAME).unlink()
    with pytest.raises(ModelError, match="no model.safetensors"):
        model_sha256(model)
