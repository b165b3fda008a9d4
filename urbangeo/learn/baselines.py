"""The paper's baselines (Table 2, section 4.1.2) and UrbanViT (Fig. 4) as feature extractors.

Each baseline turns cells into a fixed vector (``fit`` on one city, ``transform`` on any city,
so the transfer test works too); the evaluate harness then probes indicators from those
vectors exactly as it probes UrbanCLIP's image embeddings. Every network sees chips through
:func:`urbangeo.learn.data.to_model_input`, so rows differ only by method.

Sizes are for CPUs: one small shared conv encoder for the self-supervised image baselines, the
``tiny`` ViT for UrbanViT. Augmentations for overhead imagery have no "up": flips and
90-degree rotations, plus a random square crop-resize for the SimCLR-style ones. Results are
deterministic for a seed: weights are initialised under a forked, seeded RNG and every random
draw comes from a seeded ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from urbangeo.errors import DataError, InputError, ModelError
from urbangeo.learn.data import CellData, to_model_input
from urbangeo.learn.text_features import TextOnlyFeatures
from urbangeo.progress import SILENT, Progress

if TYPE_CHECKING:
    import torch
    from sklearn.decomposition import PCA
    from torch import Tensor, nn


class FeatureExtractor(Protocol):
    """A table row: learns on the fit cells, then maps any cells to (n, D) float32 features."""

    key: str
    label: str

    def fit(self, data: CellData, *, progress: Progress = SILENT) -> None: ...

    def transform(self, data: CellData, *, progress: Progress = SILENT) -> np.ndarray: ...


BASELINES: tuple[str, ...] = ("pca", "autoencoder", "resnet18", "tile2vec", "pg-simclr",
                              "urbanvit", "text-only")

PCA_COMPONENTS = 10
"""The paper keeps the first 10 principal components of the flattened image."""
ENCODER_WIDTH = 16
"""Base width of the shared conv encoder (64-d features): sized for the CPU budget."""
LEARNING_RATE = 1e-3
TRIPLET_MARGIN = 1.0
TILE2VEC_NORM_PENALTY = 0.01
"""Tile2Vec's L2 penalty on embedding norms: without it the margin is met by scaling up."""
NT_XENT_TEMPERATURE = 0.2
CROP_SCALE = (0.35, 1.0)
"""Area fraction kept by the random crop-resize of the SimCLR-style views."""
EMBED_BATCH = 256


def make_baseline(key: str, *, seed: int = 0, image_size: int = 64, epochs: int = 10,
                  batch_size: int = 32, device: str = "cpu", preset: str = "tiny",
                  resnet_weights: Path | None = None, caption_column: str = "caption"
                  ) -> FeatureExtractor:
    """The baseline ``key`` (one of :data:`BASELINES`), unfitted."""
    if key not in BASELINES:
        raise InputError(f"unknown baseline {key!r}; choose from {', '.join(BASELINES)}")
    if key == "text-only":
        return TextOnlyFeatures(seed=seed, caption_column=caption_column)
    if image_size < 16:
        raise InputError(f"image_size {image_size} is too small for the image baselines; use "
                         "16 px or more (the chips' tile size is the natural choice)")
    if epochs < 1 or batch_size < 2:
        raise InputError(f"epochs ({epochs}) must be >= 1 and batch_size ({batch_size}) >= 2")
    from urbangeo.learn.device import resolve_device

    opts = _Options(seed=seed, image_size=image_size, epochs=epochs, batch_size=batch_size,
                    device=str(resolve_device(device)))
    if key == "resnet18":
        return ResNet18Features(opts, weights=resnet_weights)
    if key == "urbanvit":
        return UrbanViTFeatures(opts, preset=preset)
    return {"pca": PCAFeatures, "autoencoder": AutoencoderFeatures,
            "tile2vec": Tile2VecFeatures, "pg-simclr": PGSimCLRFeatures}[key](opts)


@dataclass(frozen=True)
class _Options:
    """What every image baseline shares: seed, input size, training schedule, device."""

    seed: int
    image_size: int
    epochs: int
    batch_size: int
    device: str


def _require_cells(data: CellData, label: str) -> None:
    if len(data) < 2:
        raise DataError(f"the {label} baseline needs at least 2 cells with a chip to fit, "
                        f"{data.cells_path} has {len(data)}; use a larger area")


def _batches(n: int, size: int, order: np.ndarray | None = None) -> list[np.ndarray]:
    """``order`` (default 0..n-1) in near-equal batches of at most ``size``: no 1-cell tail,
    which would break batch norm and leave a contrastive batch without negatives."""
    order = np.arange(n) if order is None else order
    return np.array_split(order, math.ceil(n / size)) if n else []


class PCAFeatures:
    """First 10 principal components of the flattened ``image_size`` chip (seeded solver)."""

    key = "pca"
    label = "PCA"

    def __init__(self, opts: _Options) -> None:
        self.opts = opts
        self.pca: PCA | None = None

    def _pixels(self, data: CellData, idx: np.ndarray) -> np.ndarray:
        x = to_model_input(data.images(idx), self.opts.image_size)
        return x.reshape(len(idx), -1).numpy()

    def fit(self, data: CellData, *, progress: Progress = SILENT) -> None:
        from sklearn.decomposition import PCA

        _require_cells(data, self.label)
        progress.start(self.label, None)
        pixels = self._pixels(data, np.arange(len(data)))
        k = min(PCA_COMPONENTS, *pixels.shape)
        self.pca = PCA(n_components=k, random_state=self.opts.seed).fit(pixels)
        progress.finish()

    def transform(self, data: CellData, *, progress: Progress = SILENT) -> np.ndarray:
        if self.pca is None:
            raise ModelError("the PCA baseline is not fitted yet: call fit() first")
        chunks = _batches(len(data), EMBED_BATCH)
        progress.start(f"{self.label} features", len(chunks))
        out = []
        for idx in chunks:
            out.append(self.pca.transform(self._pixels(data, idx)).astype(np.float32))
            progress.advance(1)
        progress.finish()
        return np.concatenate(out)


class _TorchFeatures:
    """A network that embeds chips; subclasses build it and say which output is the feature."""

    key: str
    label: str

    def __init__(self, opts: _Options) -> None:
        self.opts = opts
        self.net: nn.Module | None = None

    def _build(self) -> nn.Module:
        raise NotImplementedError

    def _features(self, net: nn.Module, x01: Tensor) -> Tensor:
        """Chips in [0, 1] at ``image_size`` on the device -> (B, D) features."""
        raise NotImplementedError

    def _new_net(self) -> nn.Module:
        """The network, initialised from the seed without touching the global RNG."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.opts.seed)
            return self._build().to(self.opts.device)

    def _load(self, data: CellData, idx: np.ndarray) -> Tensor:
        return to_model_input(data.images(idx), self.opts.image_size)

    def transform(self, data: CellData, *, progress: Progress = SILENT) -> np.ndarray:
        import torch

        if self.net is None:
            raise ModelError(f"the {self.label} baseline is not fitted yet: call fit() first")
        net = self.net.eval()
        chunks = _batches(len(data), EMBED_BATCH)
        progress.start(f"{self.label} features", len(chunks))
        out = []
        with torch.no_grad():
            for idx in chunks:
                x = self._load(data, idx).to(self.opts.device)
                out.append(self._features(net, x).float().cpu())
                progress.advance(1)
        progress.finish()
        return torch.cat(out).numpy().astype(np.float32, copy=False)


class ResNet18Features(_TorchFeatures):
    """torchvision ResNet-18's 512-d pooled output, transferred without training (as the paper).

    ImageNet weights come from a local file (``resnet_weights``); without one the network is
    randomly initialised from the seed, a "random features" control.
    """

    key = "resnet18"
    label = "ResNet-18"

    def __init__(self, opts: _Options, weights: Path | None = None) -> None:
        super().__init__(opts)
        self.weights = weights

    def _build(self) -> nn.Module:
        from urbangeo.learn.encoders import resnet18_trunk

        return resnet18_trunk(self.weights)

    def _features(self, net: nn.Module, x01: Tensor) -> Tensor:
        from urbangeo.learn.encoders import IMAGENET_MEAN, IMAGENET_STD, normalize

        return net(normalize(x01, IMAGENET_MEAN, IMAGENET_STD))

    def fit(self, data: CellData, *, progress: Progress = SILENT) -> None:
        _require_cells(data, self.label)
        self.net = self._new_net().eval()


class _SelfSupervised(_TorchFeatures):
    """Trains the network with AdamW for ``epochs`` passes of its self-supervised ``_loss``.

    ``history`` holds each epoch's mean loss, for logs and for the tests that it decreases.
    """

    def __init__(self, opts: _Options) -> None:
        super().__init__(opts)
        self.history: list[float] = []

    def _loss(self, net: nn.Module, data: CellData, idx: np.ndarray,
              gen: torch.Generator) -> Tensor:
        raise NotImplementedError

    def _prepare(self, data: CellData) -> None:
        """Per-fit state (neighbour lists) before the first batch."""

    def fit(self, data: CellData, *, progress: Progress = SILENT) -> None:
        import torch

        _require_cells(data, self.label)
        self._prepare(data)
        net = self._new_net().train()
        gen = torch.Generator().manual_seed(self.opts.seed)
        opt = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE, foreach=True)
        n, epochs = len(data), self.opts.epochs
        progress.start(self.label, epochs * len(_batches(n, self.opts.batch_size)))
        self.history = []
        for epoch in range(epochs):
            order = torch.randperm(n, generator=gen).numpy()
            losses = []
            for idx in _batches(n, self.opts.batch_size, order):
                loss = self._loss(net, data, idx, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                progress.advance(1)
            self.history.append(float(np.mean(losses)))
            progress.info(f"{self.label} epoch {epoch + 1}/{epochs}: loss {self.history[-1]:.4f}")
        progress.finish()
        self.net = net.eval()


class AutoencoderFeatures(_SelfSupervised):
    """Conv autoencoder trained to reconstruct chips (MSE); features = pooled bottleneck."""

    key = "autoencoder"
    label = "Autoencoder"

    def _build(self) -> nn.Module:
        from urbangeo.learn.encoders import ConvAutoencoder

        return ConvAutoencoder(ENCODER_WIDTH)

    def _features(self, net: nn.Module, x01: Tensor) -> Tensor:
        return net(_standardise(x01))

    def _loss(self, net: nn.Module, data: CellData, idx: np.ndarray,
              gen: torch.Generator) -> Tensor:
        import torch.nn.functional as F

        x01 = dihedral(self._load(data, idx), gen).to(self.opts.device)
        return F.mse_loss(net.reconstruct(_standardise(x01)), x01)


class _NeighbourSampling(_SelfSupervised):
    """Holds the fit cells' grid neighbours (radius 1) for the spatial baselines."""

    def _prepare(self, data: CellData) -> None:
        self._near = data.neighbours(radius=1)

    def _neighbour_of(self, i: int, gen: torch.Generator) -> int:
        """A random adjacent cell of ``i``, or ``i`` itself when it has none (an isolated cell
        then pairs with an augmented view of itself)."""
        import torch

        near = self._near[i]
        if not len(near):
            return i
        return int(near[int(torch.randint(len(near), (1,), generator=gen))])

    def _build(self) -> nn.Module:
        from urbangeo.learn.encoders import ConvEncoder

        return ConvEncoder(ENCODER_WIDTH)

    def _features(self, net: nn.Module, x01: Tensor) -> Tensor:
        return net(_standardise(x01))


class Tile2VecFeatures(_NeighbourSampling):
    """Tile2Vec: triplet margin loss pulling a cell towards a grid neighbour and away from a
    random non-adjacent cell, plus Tile2Vec's small L2 penalty on the embedding norms."""

    key = "tile2vec"
    label = "Tile2Vec"

    def _distant_of(self, i: int, n: int, gen: torch.Generator) -> int:
        """A random cell that is neither ``i`` nor adjacent to it (any other cell if all are)."""
        import torch

        excluded = set(self._near[i].tolist()) | {i}
        candidates = n - len(excluded)
        if candidates <= 0:
            others = [j for j in range(n) if j != i]
            return others[int(torch.randint(len(others), (1,), generator=gen))]
        # the k-th index not excluded: excluded ones are few (<= 9), so step over them
        k = int(torch.randint(candidates, (1,), generator=gen))
        for j in sorted(excluded):
            if j <= k:
                k += 1
        return k

    def _loss(self, net: nn.Module, data: CellData, idx: np.ndarray,
              gen: torch.Generator) -> Tensor:
        import torch.nn.functional as F

        n, b = len(data), len(idx)
        near = [self._neighbour_of(int(i), gen) for i in idx]
        far = [self._distant_of(int(i), n, gen) for i in idx]
        x = dihedral(self._load(data, np.concatenate([idx, near, far])), gen)
        z = net(_standardise(x.to(self.opts.device)))
        anchor, positive, negative = z[:b], z[b:2 * b], z[2 * b:]
        triplet = F.triplet_margin_loss(anchor, positive, negative, margin=TRIPLET_MARGIN)
        return triplet + TILE2VEC_NORM_PENALTY * z.norm(dim=1).mean()


class PGSimCLRFeatures(_NeighbourSampling):
    """PG-SimCLR's geo-adjacency positives: SimCLR's NT-Xent where a cell's positive is an
    augmented view of a random grid neighbour (itself when isolated).

    As in SimCLR, the loss reads an MLP projection head; the features are the encoder's.
    PG-SimCLR also pairs cells with similar POI (facility) distributions; there are no POIs
    here, so only the geo-adjacency half of its positives is reproduced.
    """

    key = "pg-simclr"
    label = "PG-SimCLR"

    def _build(self) -> nn.Module:
        from urbangeo.learn.encoders import ConvEncoder, ProjectedEncoder

        return ProjectedEncoder(ConvEncoder(ENCODER_WIDTH))

    def _loss(self, net: nn.Module, data: CellData, idx: np.ndarray,
              gen: torch.Generator) -> Tensor:
        near = [self._neighbour_of(int(i), gen) for i in idx]
        x = simclr_view(self._load(data, np.concatenate([idx, near])), gen)
        z = net.project(_standardise(x.to(self.opts.device)))
        return nt_xent(z[:len(idx)], z[len(idx):])


class UrbanViTFeatures(_SelfSupervised):
    """UrbanViT (paper Fig. 4): UrbanCLIP's own image tower trained without any text.

    The paper says only "the same setting as the unimodal visual encoder of UrbanCLIP". We take
    the very same :class:`~urbangeo.model.vit.VisionTransformer` (same preset, pixel
    normalisation and contrastive attentional pooler) and replace the image-text objective by
    the closest text-free one: SimCLR between two augmented views of each chip, on the pooled
    contrastive embedding UrbanCLIP aligns with text. The features are that embedding, so the
    ablation changes the supervision and nothing else.
    """

    key = "urbanvit"
    label = "UrbanViT"

    def __init__(self, opts: _Options, preset: str = "tiny") -> None:
        from urbangeo.model import UrbanCLIPConfig

        super().__init__(opts)
        self.config = UrbanCLIPConfig.from_preset(preset, image_size=opts.image_size)

    def _build(self) -> nn.Module:
        from urbangeo.model.vit import VisionTransformer

        return VisionTransformer(self.config)

    def _features(self, net: nn.Module, x01: Tensor) -> Tensor:
        from urbangeo.learn.encoders import normalize

        return net(normalize(x01, self.config.image_mean, self.config.image_std))[0]

    def _loss(self, net: nn.Module, data: CellData, idx: np.ndarray,
              gen: torch.Generator) -> Tensor:
        import torch

        x = self._load(data, idx)
        views = simclr_view(torch.cat([x, x]), gen).to(self.opts.device)
        z = self._features(net, views)
        return nt_xent(z[:len(idx)], z[len(idx):])


def _standardise(x01: Tensor) -> Tensor:
    """Pixels in [0, 1] -> roughly zero-mean, unit-range input for the conv encoders."""
    return (x01 - 0.5) / 0.25


def dihedral(x: Tensor, gen: torch.Generator) -> Tensor:
    """Each square chip (B, 3, S, S) under a random one of the 8 flips/90-degree rotations."""
    import torch

    k = torch.randint(4, (x.shape[0],), generator=gen)
    flip = torch.randint(2, (x.shape[0],), generator=gen).bool()
    out = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    for turns in (1, 2, 3):
        pick = k == turns
        if pick.any():
            out[pick] = torch.rot90(out[pick], turns, dims=(-2, -1))
    return out


def random_resized_crop(x: Tensor, gen: torch.Generator,
                        scale: tuple[float, float] = CROP_SCALE) -> Tensor:
    """A random square crop of each chip (area fraction in ``scale``), resized back to S px."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(b, generator=gen)
    side = area.sqrt()  # crop side as a fraction of the chip
    shift = (1 - side).unsqueeze(1) * (2 * torch.rand(b, 2, generator=gen) - 1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = side
    theta[:, 1, 1] = side
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def simclr_view(x: Tensor, gen: torch.Generator) -> Tensor:
    """SimCLR's view for overhead imagery: random crop-resize, then a random dihedral turn."""
    return dihedral(random_resized_crop(x, gen), gen)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = NT_XENT_TEMPERATURE) -> Tensor:
    """SimCLR's NT-Xent: row ``i`` of ``z1`` and of ``z2`` are positives, the other 2B - 2
    embeddings of the batch negatives (cosine similarity over ``temperature``)."""
    import torch
    import torch.nn.functional as F

    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(sim, target)
