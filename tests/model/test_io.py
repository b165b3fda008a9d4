"""Model directories: round trip, and a clear ModelError for every broken directory."""

from __future__ import annotations

import json

import pytest
import torch

from urbangeo.errors import ModelError
from urbangeo.model.config import UrbanCLIPConfig
from urbangeo.model.io import CONFIG_NAME, WEIGHTS_NAME, load_model, save_model
from urbangeo.model.urbanclip import UrbanCLIP


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    model = UrbanCLIP(UrbanCLIPConfig.from_preset("tiny", image_size=32, context_length=16))
    directory = save_model(tmp_path / "model", model,
                           tokenizer={"kind": "bpe", "file": "tokenizer.json"},
                           extra={"indicators": ["pop", "gdp"], "units": {"pop": "people"}},
                           files={"tokenizer.json": '{"model": {}}'})
    return model.eval(), directory


def test_round_trip_restores_weights_config_and_metadata(saved):
    model, directory = saved
    loaded = load_model(directory)
    assert loaded.model.config == model.config
    assert loaded.tokenizer == {"kind": "bpe", "file": "tokenizer.json"}
    assert loaded.extra["units"] == {"pop": "people"}
    assert (directory / "tokenizer.json").read_text() == '{"model": {}}'
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    images = torch.randn(2, 3, 32, 32)
    tokens = torch.randint(3, 1024, (2, 8))
    assert torch.equal(model.encode_image(images), loaded.model.encode_image(images))
    assert torch.equal(model.encode_text(tokens), loaded.model.encode_text(tokens))
    meta = json.loads((directory / CONFIG_NAME).read_text())
    assert meta["architecture"]["image_size"] == 32
    assert meta["architecture"]["image_mean"] == list(model.config.image_mean)


def test_saving_again_replaces_the_directory(saved, tmp_path):
    model, directory = saved
    (directory / "stale.txt").write_text("old")
    save_model(directory, model)
    assert not (directory / "stale.txt").exists()
    assert load_model(directory).extra == {}


def test_missing_directory_and_files(tmp_path, saved):
    _, directory = saved
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_model(tmp_path / "empty")
    (directory / WEIGHTS_NAME).unlink()
    with pytest.raises(ModelError, match="no model.safetensors"):
        load_model(directory)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: "{not json", "corrupt"),
    (lambda m: json.dumps({**m, "format": "other"}), "not an urbangeo model"),
    (lambda m: json.dumps({**m, "format_version": 99}), "format version 99"),
    (lambda m: json.dumps({**m, "architecture": {**m["architecture"], "text_width": 32}}),
     "do not fit"),
    (lambda m: json.dumps({**m, "architecture": {**m["architecture"], "patch_size": 7}}),
     "multiple of patch_size"),
])
def test_bad_config_raises_model_error(saved, edit, message):
    _, directory = saved
    path = directory / CONFIG_NAME
    path.write_text(edit(json.loads(path.read_text())))
    with pytest.raises(ModelError, match=message):
        load_model(directory)


@pytest.mark.parametrize(("field", "value"), [
    ("patch_size", 0), ("image_size", 0), ("context_length", 0), ("text_width", -32),
    ("vision_width", 64.0), ("vision_heads", True), ("text_layers", "2"), ("eos_id", -1),
])
def test_non_positive_or_non_int_sizes_name_the_field(saved, field, value):
    """A hand-edited count gets one ModelError naming it, not a ZeroDivisionError/TypeError."""
    _, directory = saved
    path = directory / CONFIG_NAME
    meta = json.loads(path.read_text())
    meta["architecture"][field] = value
    path.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=rf"{field} {value!r}.*must be positive integers"):
        load_model(directory)


def test_corrupt_weights_raise_model_error(saved):
    _, directory = saved
    weights = directory / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match="corrupt"):
        load_model(directory)
