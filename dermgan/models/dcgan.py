"""Noise-to-image networks in the DCGAN family: the DCGAN of Radford et al. 2016 (MelanoGANs' first baseline)
and Furger et al.'s unconditional skin generator with its two-scale discriminator.

DCGAN, as in the paper and the widely used PyTorch example (so that the 64 px, 100-d noise, 64-filter networks
have the example's 3,576,704 / 2,765,568 parameters): every conv is 4x4 without a bias.
- G: z (nz,) seen as a 1x1 map -> transposed conv (4x4, stride 1) to a 4x4 map -> transposed convs (stride 2)
  doubling the size and halving the channels up to `image_size`, batch norm + ReLU after each but the last,
  tanh at the end. Channels at resolution r: `base * image_size / (2 r)`, capped at `max_filters`.
- D: the mirror: stride-2 convs with LeakyReLU(0.2) and batch norm (none after the first) down to 4x4, then a
  4x4 conv to one logit per image (no sigmoid: the loss decides; LSGAN in MelanoGANs, BCE by default here).
- `width_size`: the image size the channel rule refers to (default: the network's own). The pyramid models
  build their coarse nets with the *final* image size here, so a map of a given resolution has the same width
  in every model.

Furger et al. (papers.md sec. 3.3, from their code; TF/Keras semantics ported):
- G: z (100) -> dense to 8x8x64 (no bias) -> batch norm -> ReLU -> transposed convs 5x5 stride 2 (no bias) +
  batch norm + LeakyReLU(0.2), channels halving from `filters` (512 in their 128/256 px models), up to
  `image_size` -> 5x5 conv to 3 channels -> tanh.
- D: two sub-discriminators, on the image and on its nearest-neighbour half-size copy; each is conv 4x4
  stride 2 + batch norm + LeakyReLU(0.2) + dropout 0.3, channels doubling from `filters` (32 in their code),
  down to 8x8 at full scale; flatten; dense to one logit (no bias). The output is the mean of the two logits.
- Keras batch norm (momentum 0.99, eps 1e-3) is PyTorch momentum 0.01, eps 1e-3; Keras' Glorot-uniform init.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def check_power_of_two(size: int, smallest: int, what: str) -> int:
    """log2(size / smallest), after checking that size is smallest * 2**k with k >= 1."""
    ratio = size / smallest
    if size < 2 * smallest or ratio != 2 ** round(math.log2(ratio)):
        raise ValueError(f"{what}: image size {size} must be {smallest} px times a power of two "
                         f"(>= {2 * smallest})")
    return int(round(math.log2(ratio)))


def dcgan_channels(image_size: int, resolution: int, base: int, max_filters: int) -> int:
    """Channels of the DCGAN map at `resolution`: `base` at half the image size, doubling per halving,
    capped."""
    return min(max_filters, base * image_size // (2 * resolution))


def dcgan_init(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02); batch-norm weights N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """z (N, nz) -> image (N, out_channels, S, S) in [-1, 1]; S = 4 * 2**k, k >= 1."""

    def __init__(self, image_size: int, noise_dim: int = 64, base: int = 64, max_filters: int = 1024,
                 out_channels: int = 3, width_size: int | None = None):
        super().__init__()
        n_up = check_power_of_two(image_size, 4, "DCGAN generator")
        self.noise_dim, self.image_size = noise_dim, image_size
        width_size = width_size or image_size
        channels = dcgan_channels(width_size, 4, base, max_filters)
        layers: list[nn.Module] = [nn.ConvTranspose2d(noise_dim, channels, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(channels), nn.ReLU(True)]
        resolution = 4
        for i in range(n_up):
            resolution *= 2
            last = i == n_up - 1
            out = out_channels if last else dcgan_channels(width_size, resolution, base, max_filters)
            layers.append(nn.ConvTranspose2d(channels, out, 4, 2, 1, bias=False))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(out), nn.ReLU(True)]
            channels = out
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def noise_shapes(self) -> list[tuple[int, ...]]:
        return [(self.noise_dim,)]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.reshape(len(z), self.noise_dim, 1, 1))

    def synthesise(self, noises: list[torch.Tensor]) -> torch.Tensor:
        return self(noises[0])


class DCGANDiscriminator(nn.Module):
    """Image (N, in_channels, S, S) -> one logit per image (N,)."""

    def __init__(self, image_size: int, base: int = 64, max_filters: int = 1024, in_channels: int = 3,
                 width_size: int | None = None):
        super().__init__()
        n_down = check_power_of_two(image_size, 4, "DCGAN discriminator")
        width_size = width_size or image_size
        layers: list[nn.Module] = []
        channels, resolution = in_channels, image_size
        for i in range(n_down):
            resolution //= 2
            out = dcgan_channels(width_size, resolution, base, max_filters)
            layers.append(nn.Conv2d(channels, out, 4, 2, 1, bias=False))
            if i > 0:  # no norm on the input layer (DCGAN)
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.LeakyReLU(0.2, True))
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, 1, 0, bias=False))
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


# ----------------------------------------------------------------------------------------------------------
# Furger et al.

FURGER_SEED_SIZE = 8  # their generators start from an 8x8x64 map
FURGER_SEED_CHANNELS = 64


def _keras_batch_norm(channels: int, dims: int = 2) -> nn.Module:
    cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return cls(channels, eps=1e-3, momentum=0.01)


def glorot_init(module: nn.Module) -> None:
    """Keras defaults: Glorot-uniform weights, zero biases (batch norm keeps 1 / 0)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class FurgerGenerator(nn.Module):
    """z (N, nz) -> image (N, 3, S, S) in [-1, 1]; S = 8 * 2**k, k >= 1."""

    def __init__(self, image_size: int, noise_dim: int = 100, filters: int = 512):
        super().__init__()
        n_up = check_power_of_two(image_size, FURGER_SEED_SIZE, "Furger generator")
        self.noise_dim, self.image_size = noise_dim, image_size
        seed = FURGER_SEED_CHANNELS * FURGER_SEED_SIZE**2
        self.project = nn.Sequential(nn.Linear(noise_dim, seed, bias=False), _keras_batch_norm(seed, 1),
                                     nn.ReLU())
        layers: list[nn.Module] = []
        channels = FURGER_SEED_CHANNELS
        for i in range(n_up):
            out = max(1, filters >> i)
            # TF "same" padding for a 5x5 stride-2 transposed conv: pad 2, output_padding 1 (exact doubling)
            layers += [nn.ConvTranspose2d(channels, out, 5, 2, 2, output_padding=1, bias=False),
                       _keras_batch_norm(out), nn.LeakyReLU(0.2)]
            channels = out
        layers += [nn.Conv2d(channels, 3, 5, 1, 2, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        glorot_init(self)

    def noise_shapes(self) -> list[tuple[int, ...]]:
        return [(self.noise_dim,)]

    def synthesise(self, noises: list[torch.Tensor]) -> torch.Tensor:
        return self(noises[0])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        seed = self.project(z).reshape(len(z), FURGER_SEED_CHANNELS, FURGER_SEED_SIZE, FURGER_SEED_SIZE)
        return self.net(seed)


class _FurgerSubDiscriminator(nn.Module):
    def __init__(self, input_size: int, n_blocks: int, filters: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for i in range(n_blocks):
            out = filters << i
            layers += [nn.Conv2d(channels, out, 4, 2, 1, bias=False), _keras_batch_norm(out),
                       nn.LeakyReLU(0.2), nn.Dropout(dropout)]
            channels = out
        self.features = nn.Sequential(*layers)
        final = input_size >> n_blocks
        self.logit = nn.Linear(channels * final * final, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(self.features(x).flatten(1)).flatten()


class FurgerDiscriminator(nn.Module):
    """Image (N, 3, S, S) -> mean of the full- and half-scale sub-discriminators' logits (N,)."""

    def __init__(self, image_size: int, filters: int = 32, dropout: float = 0.3):
        super().__init__()
        n_blocks = check_power_of_two(image_size, FURGER_SEED_SIZE, "Furger discriminator")
        self.full_scale = _FurgerSubDiscriminator(image_size, n_blocks, filters, dropout)
        # the half-scale branch has the same blocks, so it ends at 4x4 instead of 8x8
        self.half_scale = _FurgerSubDiscriminator(image_size // 2, n_blocks, filters, dropout)
        glorot_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = F.interpolate(x, scale_factor=0.5, mode="nearest")
        return 0.5 * (self.full_scale(x) + self.half_scale(half))
