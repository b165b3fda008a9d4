"""The Table 2 baselines as feature extractors: shapes, determinism, transfer, training, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_city_cells
from recording import RecordingProgress
from safetensors.torch import save_file

from urbangeo.errors import DataError, InputError, ModelError
from urbangeo.learn.baselines import (
    BASELINES,
    ENCODER_WIDTH,
    PCA_COMPONENTS,
    dihedral,
    make_baseline,
    nt_xent,
    random_resized_crop,
)
from urbangeo.learn.data import CellData, load_cell_data
from urbangeo.model import UrbanCLIPConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = dict(image_size=32, epochs=1, batch_size=16)


@pytest.fixture(scope="module")
def other_city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, smaller city (other seed, 48 px chips) for the transfer path."""
    return build_city_cells(tmp_path_factory.mktemp("other_city"), seed=11, size_km=1,
                            tile_px=48)




@pytest.fixture
def data(city_cells: Path) -> CellData:
    return load_cell_data(city_cells)


def expected_dim(key: str, extractor: object) -> int:
    if key == "text-only":  # capped by the corpus: fewer components than terms and documents
        n_terms = len(extractor.vectorizer.vocabulary_)  # type: ignore[attr-defined]
        return min(64, n_terms - 1, 64 - 1)
    return {"pca": PCA_COMPONENTS, "autoencoder": 4 * ENCODER_WIDTH, "resnet18": 512,
            "tile2vec": 4 * ENCODER_WIDTH, "pg-simclr": 4 * ENCODER_WIDTH,
            "urbanvit": UrbanCLIPConfig.from_preset("tiny").embed_dim}[key]


@pytest.mark.parametrize("key", BASELINES)
def test_every_baseline_fits_and_transforms_this_and_another_city(
        key: str, data: CellData, other_city: Path) -> None:
    extractor = make_baseline(key, **FAST)
    extractor.fit(data)
    feats = extractor.transform(data)
    assert len(data) == 64
    assert feats.shape == (64, expected_dim(key, extractor))
    assert feats.dtype == np.float32 and np.isfinite(feats).all()
    assert feats.std(axis=0).max() > 1e-4, "features are constant across cells"
    other = load_cell_data(other_city)
    moved = extractor.transform(other)
    assert moved.shape == (len(other), feats.shape[1])
    assert np.isfinite(moved).all() and moved.std(axis=0).max() > 1e-4


def test_same_seed_same_features_other_seed_different(data: CellData) -> None:
    def features(seed: int) -> np.ndarray:
        extractor = make_baseline("pg-simclr", seed=seed, **FAST)
        extractor.fit(data)
        return extractor.transform(data)

    first = features(0)
    np.testing.assert_allclose(features(0), first, rtol=1e-5, atol=1e-6)
    assert not np.allclose(features(1), first, atol=1e-3)


def test_training_does_not_touch_the_global_rng(data: CellData) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_baseline("tile2vec", **FAST).fit(data)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("key", ["tile2vec", "urbanvit"])
def test_self_supervised_loss_decreases(key: str, data: CellData) -> None:
    extractor = make_baseline(key, image_size=32, epochs=5, batch_size=16)
    extractor.fit(data)
    history = extractor.history  # type: ignore[attr-defined]
    assert len(history) == 5 and all(np.isfinite(history))
    assert history[-1] < 0.9 * history[0], history


def test_progress_reports_one_step_per_batch(data: CellData) -> None:
    rec = RecordingProgress()
    make_baseline("autoencoder", image_size=32, epochs=2, batch_size=16).fit(data, progress=rec)
    assert rec.starts == [("Autoencoder", 2 * 4)] and rec.advanced == 8


def test_resnet18_loads_a_local_weights_file(data: CellData, tmp_path: Path) -> None:
    from torchvision.models import resnet18

    torch.manual_seed(5)
    state = resnet18(weights=None).state_dict()  # a full checkpoint, classifier included
    good = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(good))
    loaded = make_baseline("resnet18", resnet_weights=good, **FAST)
    loaded.fit(data)
    random = make_baseline("resnet18", **FAST)
    random.fit(data)
    assert torch.equal(loaded.net.conv1.weight, state["conv1.weight"])  # type: ignore[attr-defined]
    assert not np.allclose(loaded.transform(data), random.transform(data))

    pth = tmp_path / "resnet18.pth"
    torch.save(state, pth)
    from_pth = make_baseline("resnet18", resnet_weights=pth, **FAST)
    from_pth.fit(data)
    np.testing.assert_array_equal(from_pth.transform(data), loaded.transform(data))


def test_resnet18_refuses_weights_of_another_network(data: CellData, tmp_path: Path) -> None:
    bad = tmp_path / "not_resnet.safetensors"
    save_file({"conv1.weight": torch.zeros(8, 3, 3, 3)}, str(bad))
    with pytest.raises(ModelError, match="not a torchvision ResNet-18 state dict"):
        make_baseline("resnet18", resnet_weights=bad).fit(data)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read ResNet-18 weights"):
        make_baseline("resnet18", resnet_weights=junk).fit(data)
    with pytest.raises(ModelError, match="does not exist"):
        make_baseline("resnet18", resnet_weights=tmp_path / "missing.pth").fit(data)


def test_text_only_refuses_missing_captions(data: CellData) -> None:
    data.captions["caption"][3] = ""
    with pytest.raises(DataError, match="have no 'caption'"):
        make_baseline("text-only").fit(data)
    del data.captions["caption"]
    with pytest.raises(InputError, match="urbangeo caption"):
        make_baseline("text-only").fit(data)


def test_text_only_reads_the_chosen_column(data: CellData) -> None:
    extractor = make_baseline("text-only", caption_column="caption_raw")
    extractor.fit(data)
    data.captions["caption_raw"][0] = ""
    with pytest.raises(DataError, match="caption_raw"):
        extractor.transform(data)


def test_unknown_key_and_unfitted_use(data: CellData) -> None:
    with pytest.raises(InputError, match="pca, autoencoder, resnet18, tile2vec"):
        make_baseline("vgg16")
    with pytest.raises(ModelError, match="call fit"):
        make_baseline("tile2vec", **FAST).transform(data)


def test_a_single_cell_is_refused(data: CellData) -> None:
    data.cell_ids, data.index, data.rowcol = data.cell_ids[:1], data.index[:1], data.rowcol[:1]
    data._cache = data._cache[:1]
    with pytest.raises(DataError, match="at least 2 cells"):
        make_baseline("pg-simclr", **FAST).fit(data)


def test_dihedral_views_are_exact_turns_and_flips() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    out = dihedral(x.repeat(32, 1, 1, 1), torch.Generator().manual_seed(0))
    turns = [torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]
    seen = set()
    for i, view in enumerate(out):
        matches = [j for j, t in enumerate(turns) if torch.equal(view, t[i % 2])]
        assert matches, f"view {i} is not a flip/rotation of its chip"
        seen.add(matches[0])
    assert len(seen) == 8


def test_crop_resize_keeps_shape_and_range_and_varies() -> None:
    x = torch.rand(8, 3, 32, 32)
    out = random_resized_crop(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x)


def test_nt_xent_prefers_aligned_pairs() -> None:
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    assert nt_xent(z, z) < nt_xent(z, z.roll(1, dims=0))


def test_tile2vec_distant_cells_are_never_adjacent(data: CellData) -> None:
    extractor = make_baseline("tile2vec", **FAST)
    extractor._prepare(data)  # type: ignore[attr-defined]
    near = data.neighbours()
    gen = torch.Generator().manual_seed(0)
    drawn = set()
    for i in range(len(data)):
        for _ in range(5):
            j = extractor._distant_of(i, len(data), gen)  # type: ignore[attr-defined]
            assert 0 <= j < len(data) and j != i and j not in set(near[i].tolist())
            drawn.add(j)
        positive = extractor._neighbour_of(i, gen)  # type: ignore[attr-defined]
        assert positive in set(near[i].tolist())
    assert len(drawn) > len(data) // 2  # spread over the city, not stuck on a few cells
