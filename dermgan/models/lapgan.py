"""Laplacian-pyramid GANs: LAPGAN (Denton et al. 2015) and MelanoGANs' modification of it, "DDGAN".

Pyramid (our choice; Denton et al. blur with a Gaussian): `down` is 2x2 average pooling, `up` bilinear x2.
For an image x with Gaussian levels g_K = x, g_{k-1} = down(g_k), the residuals are h_k = g_k - up(g_{k-1})
and x = up(...up(g_0) + h_1 ...) + h_K exactly, whatever `down` and `up` are (`reconstruct`).

LAPGAN: level 0 is a DCGAN generator from noise z_0 to the coarsest image; level k >= 1 is a conditional
generator that takes up(I_{k-1}) and a noise plane z_k (`noise_channels` channels at the level's size) and
outputs the residual h_k (no output activation: residuals are signed and small), so I_k = up(I_{k-1}) + h_k.
Discriminator k >= 1 sees concat(h_k, up(I_{k-1})), i.e. the residual with its coarse image, as Denton et al.;
discriminator 0 sees the coarsest image. In training every level k >= 1 is conditioned on the *real* coarse
image up(g_{k-1}), so levels do not depend on each other and one joint step trains all of them as independent
per-level GANs (Denton et al. train the levels separately; the joint step gives each level the same gradient
directions, scaled by 1 / levels since the loss is the mean over levels). Sampling chains the
levels from z_0.

DDGAN (MelanoGANs, from a third-party summary, papers.md sec. 2.2, unverified): one noise source z_0 only at
the lowest level; each stage k >= 1 maps the previous stage's *whole image* I_{k-1} to a whole image I_k
through learned up-sampling -- "upsample": bilinear x2 then a 3x3 conv; "deconv": a 4x4 stride-2 transposed
conv -- followed by conv layers and tanh (our choice: the stage passes only its image on, as LAPGAN does); a
discriminator per level judges whole images (real: the Gaussian level g_k); all stages are trained end to end,
the generator loss of the finest level reaching every stage.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dermgan.models.dcgan import DCGANDiscriminator, DCGANGenerator, check_power_of_two, dcgan_init

DDGAN_UPSAMPLES = ("upsample", "deconv")


# ----------------------------------------------------------------------------------------------------------
# Pyramid


def down(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


def up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def gaussian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[g_0 (coarsest), ..., g_{levels-1} = x]."""
    pyramid = [x]
    for _ in range(levels - 1):
        pyramid.insert(0, down(pyramid[0]))
    return pyramid


def laplacian_residuals(pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
    """[h_1, ..., h_K] with h_k = g_k - up(g_{k-1})."""
    return [fine - up(coarse) for coarse, fine in zip(pyramid[:-1], pyramid[1:])]


def reconstruct(coarsest: torch.Tensor, residuals: list[torch.Tensor]) -> torch.Tensor:
    """The finest image from the coarsest one and the residuals (inverse of laplacian_residuals)."""
    image = coarsest
    for residual in residuals:
        image = up(image) + residual
    return image


def level_sizes(image_size: int, levels: int) -> list[int]:
    """Image size of each level, coarsest first; the coarsest must be at least 8 px (a 4x4 DCGAN map + one
    step)."""
    if levels < 2:
        raise ValueError(f"a Laplacian pyramid needs at least 2 levels, got {levels}")
    coarsest = image_size >> (levels - 1)
    if coarsest << (levels - 1) != image_size or coarsest < 8:
        raise ValueError(f"image size {image_size} cannot be split into {levels} pyramid levels whose "
                         f"coarsest is at least 8 px; use fewer levels")
    check_power_of_two(coarsest, 4, "coarsest pyramid level")
    return [coarsest << k for k in range(levels)]


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]


# ----------------------------------------------------------------------------------------------------------
# LAPGAN


class ResidualLevel(nn.Module):
    """concat(up(I_{k-1}), noise plane) -> residual h_k: 3x3 convs (`layers` of them), the last linear."""

    def __init__(self, noise_channels: int, filters: int, layers: int = 3):
        super().__init__()
        if layers < 2:
            raise ValueError(f"a residual level needs at least 2 conv layers, got {layers}")
        blocks = _conv_block(3 + noise_channels, filters)
        for _ in range(layers - 2):
            blocks += _conv_block(filters, filters)
        blocks.append(nn.Conv2d(filters, 3, 3, 1, 1))
        self.net = nn.Sequential(*blocks)
        dcgan_init(self)

    def forward(self, coarse_up: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([coarse_up, noise], 1))


class LaplacianGenerator(nn.Module):
    """LAPGAN generator. forward(noises, conditions) -> [coarsest image, h_1, ..., h_K] (training: level k is
    conditioned on conditions[k-1] = up(real g_{k-1})); synthesise(noises) chains the levels from z_0."""

    def __init__(self, image_size: int, levels: int, noise_dim: int = 64, base: int = 64,
                 max_filters: int = 1024, level_filters: int = 64, noise_channels: int = 1,
                 level_layers: int = 3):
        super().__init__()
        self.sizes = level_sizes(image_size, levels)
        self.noise_dim, self.noise_channels = noise_dim, noise_channels
        self.coarse = DCGANGenerator(self.sizes[0], noise_dim, base, max_filters, width_size=image_size)
        self.levels = nn.ModuleList(ResidualLevel(noise_channels, level_filters, level_layers)
                                    for _ in self.sizes[1:])

    def noise_shapes(self) -> list[tuple[int, ...]]:
        return [(self.noise_dim,)] + [(self.noise_channels, s, s) for s in self.sizes[1:]]

    def forward(self, noises: list[torch.Tensor], conditions: list[torch.Tensor]) -> list[torch.Tensor]:
        residuals = [level(c, z) for level, c, z in zip(self.levels, conditions, noises[1:])]
        return [self.coarse(noises[0]), *residuals]

    def synthesise(self, noises: list[torch.Tensor]) -> torch.Tensor:
        image = self.coarse(noises[0])
        for level, z in zip(self.levels, noises[1:]):
            coarse_up = up(image)
            image = coarse_up + level(coarse_up, z)
        return image


class LaplacianDiscriminator(nn.Module):
    """forward([coarsest image, concat(h_1, up(g_0)), ...]) -> one logit tensor (N,) per level."""

    def __init__(self, image_size: int, levels: int, base: int = 64, max_filters: int = 1024):
        super().__init__()
        sizes = level_sizes(image_size, levels)
        self.levels = nn.ModuleList(
            [DCGANDiscriminator(sizes[0], base, max_filters, width_size=image_size)]
            + [DCGANDiscriminator(s, base, max_filters, in_channels=6, width_size=image_size)
               for s in sizes[1:]])

    def forward(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [d(x) for d, x in zip(self.levels, inputs)]


# ----------------------------------------------------------------------------------------------------------
# DDGAN


class RefineStage(nn.Module):
    """I_{k-1} (3, s, s) -> I_k (3, 2s, 2s): learned up-sampling, 3x3 convs, tanh."""

    def __init__(self, upsample: str, filters: int, layers: int = 3):
        super().__init__()
        if upsample == "deconv":
            first: list[nn.Module] = [nn.ConvTranspose2d(3, filters, 4, 2, 1, bias=False)]
        elif upsample == "upsample":
            first = [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                     nn.Conv2d(3, filters, 3, 1, 1, bias=False)]
        else:
            raise ValueError(f"unknown DDGAN up-sampling {upsample!r}; use one of {DDGAN_UPSAMPLES}")
        if layers < 2:
            raise ValueError(f"a refinement stage needs at least 2 layers, got {layers}")
        blocks = first + [nn.BatchNorm2d(filters), nn.ReLU(True)]
        for _ in range(layers - 2):
            blocks += _conv_block(filters, filters)
        blocks += [nn.Conv2d(filters, 3, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*blocks)
        dcgan_init(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


class DDGANGenerator(nn.Module):
    """forward([z_0]) -> [I_0, ..., I_K], every level a whole image in [-1, 1]; synthesise -> I_K."""

    def __init__(self, image_size: int, levels: int, upsample: str, noise_dim: int = 64, base: int = 64,
                 max_filters: int = 1024, level_filters: int = 64, level_layers: int = 3):
        super().__init__()
        self.sizes = level_sizes(image_size, levels)
        self.noise_dim = noise_dim
        self.coarse = DCGANGenerator(self.sizes[0], noise_dim, base, max_filters, width_size=image_size)
        self.stages = nn.ModuleList(RefineStage(upsample, level_filters, level_layers)
                                    for _ in self.sizes[1:])

    def noise_shapes(self) -> list[tuple[int, ...]]:
        return [(self.noise_dim,)]

    def forward(self, noises: list[torch.Tensor]) -> list[torch.Tensor]:
        images = [self.coarse(noises[0])]
        for stage in self.stages:
            images.append(stage(images[-1]))
        return images

    def synthesise(self, noises: list[torch.Tensor]) -> torch.Tensor:
        return self.forward(noises)[-1]


class MultiLevelDiscriminator(nn.Module):
    """DDGAN: one DCGAN discriminator per level, each judging whole images of its size."""

    def __init__(self, image_size: int, levels: int, base: int = 64, max_filters: int = 1024):
        super().__init__()
        self.levels = nn.ModuleList(DCGANDiscriminator(s, base, max_filters, width_size=image_size)
                                    for s in level_sizes(image_size, levels))

    def forward(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        return [d(x) for d, x in zip(self.levels, images)]
