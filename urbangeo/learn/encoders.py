"""Convolutional networks of the image baselines, sized so a demo city trains in seconds on a CPU.

Tile2Vec, PG-SimCLR and the autoencoder share one small ResNet-style encoder, so Table 2 compares
their *objectives* rather than their capacity. ResNet-18 is torchvision's, transferred as is.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from urbangeo.errors import ModelError
from urbangeo.model.io import check_state_dict

#: ImageNet pixel statistics, which torchvision's pretrained ResNet-18 expects.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The encoder downsamples by this factor (patchify stem /4, then two /2 stages).
ENCODER_STRIDE = 16


def normalize(images: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """RGB in [0, 1] (B, 3, H, W) -> per-channel standardised pixels."""
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - m) / s


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with a (projected when the shape changes) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ConvEncoder(nn.Module):
    """Patchify stem (/4) and three residual stages (widths w, 2w, 4w; /1, /2, /2).

    The 4x4 stride-4 stem keeps a 64 px chip's cost near a 16 px image's, which is what makes
    the trained baselines affordable on two CPU cores; ``forward`` global-average-pools the
    last feature map into a ``dim = 4 * width`` vector.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dim = 4 * width
        self.stem = nn.Sequential(nn.Conv2d(3, width, 4, stride=4, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(ResidualBlock(width, width, 1),
                                    ResidualBlock(width, 2 * width, 2),
                                    ResidualBlock(2 * width, 4 * width, 2))

    def feature_map(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) standardised pixels -> (B, dim, H/16, W/16)."""
        return self.stages(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.feature_map(x).mean(dim=(2, 3))


class ConvAutoencoder(nn.Module):
    """:class:`ConvEncoder` plus a transposed-conv decoder back to pixels in [0, 1].

    The decoder reads the encoder's spatial bottleneck (a 16x smaller map, 1024 numbers for a
    64 px chip against 12288 pixels), so reconstruction forces the code to keep the layout;
    the feature vector is that bottleneck global-average-pooled, like the other encoders'.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.encoder = ConvEncoder(width)
        self.dim = self.encoder.dim
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * width, width, 2, stride=2), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, 3, 4, stride=4), nn.Sigmoid())

    def reconstruct(self, x: Tensor) -> Tensor:
        """Standardised pixels -> reconstructed RGB in [0, 1] at the input size."""
        out = self.decoder(self.encoder.feature_map(x))
        if out.shape[-2:] != x.shape[-2:]:  # sizes that are not a multiple of ENCODER_STRIDE
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class ProjectedEncoder(nn.Module):
    """An encoder plus SimCLR's MLP projection head: the loss sees ``project``, the features
    are the encoder output before the head (SimCLR's finding: the head absorbs the
    augmentation invariances, the representation below it transfers better)."""

    def __init__(self, encoder: ConvEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.dim = encoder.dim
        self.head = nn.Sequential(nn.Linear(encoder.dim, encoder.dim), nn.ReLU(inplace=True),
                                  nn.Linear(encoder.dim, encoder.dim))

    def project(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


def resnet18_trunk(weights: Path | None = None) -> nn.Module:
    """torchvision ResNet-18 without its classifier: images -> 512-d pooled features.

    ``weights`` is a local ImageNet state dict (safetensors, or a torch file read with
    ``weights_only=True``); nothing is ever downloaded. Without it the init is random (the
    caller seeds it). The ``fc`` classifier keys of a full ImageNet checkpoint are ignored.
    """
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    net.fc = nn.Identity()
    if weights is not None:
        state = _read_state_dict(Path(weights))
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            check_state_dict(net, state, str(weights))
        except ModelError as exc:
            raise ModelError(f"{weights} is not a torchvision ResNet-18 state dict: {exc}") \
                from exc
        net.load_state_dict(state)
    return net


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """A flat name -> tensor mapping from a safetensors or torch file; ModelError otherwise."""
    if not path.is_file():
        raise ModelError(f"ResNet-18 weights file {path} does not exist: pass a local "
                         "torchvision resnet18 state dict (.safetensors or .pth)")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, pickle.UnpicklingError, RuntimeError, EOFError,
            ValueError) as exc:
        raise ModelError(f"cannot read ResNet-18 weights {path} ({exc}); pass a torchvision "
                         "resnet18 state dict saved as .safetensors or with torch.save") from exc
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelError(f"{path} holds no flat state dict of tensors; save "
                         "`resnet18().state_dict()` into it")
    return state
