"""Pix2Pix networks: a U-Net generator and (multi-scale) PatchGAN discriminators.

Layouts follow Isola et al. 2017 (and the layer counts of the widely used PyTorch implementation, so that the
256 px / 64-filter U-Net has 54.41 M parameters and the 3-layer PatchGAN 2.77 M), written from the paper's
description:

- U-Net: `depth` stride-2 4x4 conv blocks down to 1x1 (depth = log2(image size)), filters
  base, 2 base, 4 base, 8 base, 8 base, ...; LeakyReLU(0.2) before each conv except the first, a norm after
  each except the first and the innermost. The decoder mirrors it with ReLU -> up -> norm, concatenating the
  encoder's skip, dropout in the first `n_dropout` decoder blocks, tanh at the end.
  `upsample="transpose"`: 4x4 stride-2 transposed conv (pix2pix; its uneven kernel overlap gives the known
  checkerboard, expected and left as the reference has it). `upsample="resize"`: nearest-neighbour x2 then a
  3x3 conv (DermGAN; no checkerboard). `resize_padding` (decoder) and `encoder_padding` pad the convs with zeros
  (pix2pix) or by reflection. The frame artefact: with zero padding, a border position of every level sees
  zeros where the interior sees skin, so its features differ from the interior's even for a flat map; the skip
  connections carry that difference to the decoder, whose nearest-neighbour x2 upsampling repeats a level-k
  border cell over 2**k pixels, so it shows as a line a few pixels inside the image border. With reflect padding
  in both, a flat map gives an exactly flat image (eval mode; tested).
- PatchGAN: 4x4 convs, `n_layers` stride-2 blocks, then a stride-1 block and a 1-channel stride-1 conv
  (n_layers=3 gives the 70x70 receptive field). It sees concat(map, image).
- Multi-scale D (pix2pixHD style): N PatchGANs, scale k sees the input average-pooled k times.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

NORMS = ("batch", "instance", "none")
UPSAMPLES = ("transpose", "resize", "bilinear")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; use one of {NORMS}")


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """pix2pix init: conv weights N(0, std), biases 0; batch-norm weights N(1, std), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _up(kind: str, c_in: int, c_out: int, bias: bool, padding_mode: str = "zeros") -> nn.Module:
    if kind == "transpose":
        return nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=bias)
    if kind in ("resize", "bilinear"):
        # nearest: Odena et al.'s resize-convolution. bilinear: tried against the 2 px lattice a 3x3 conv leaves on
        # nearest-neighbour 2x2 blocks; it scored a worse Inception KID (benchmarks/results/sweep_dermgan_kid_3000.md)
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest" if kind == "resize" else "bilinear"),
            nn.Conv2d(c_in, c_out, 3, stride=1, padding=1, bias=bias, padding_mode=padding_mode),
        )
    raise ValueError(f"unknown upsample {kind!r}; use one of {UPSAMPLES}")


class UNetGenerator(nn.Module):
    """Map (N, in_channels, S, S) -> image (N, out_channels, S, S) in [-1, 1]; S divisible by 2**depth."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        image_size: int = 256,
        base: int = 64,
        depth: int | None = None,
        norm: str = "batch",
        upsample: str = "transpose",
        dropout: float = 0.5,
        n_dropout: int = 3,
        resize_padding: str = "zeros",
        encoder_padding: str = "zeros",
    ):
        super().__init__()
        if depth is None:
            depth = int(round(math.log2(image_size)))
            if 2**depth != image_size:
                raise ValueError(
                    f"image_size must be a power of two when depth is not given, got {image_size}"
                )
        if depth < 2 or image_size % 2**depth:
            raise ValueError(
                f"image_size {image_size} must be divisible by 2**depth = {2**depth} (depth >= 2)"
            )
        if upsample not in UPSAMPLES:
            raise ValueError(f"unknown upsample {upsample!r}; use one of {UPSAMPLES}")
        for what, mode in (("resize_padding", resize_padding), ("encoder_padding", encoder_padding)):
            if mode not in ("zeros", "reflect", "replicate"):
                raise ValueError(f"{what} must be 'zeros', 'reflect' or 'replicate', got {mode!r}")
        self.depth, self.image_size = depth, image_size
        # Batch norm has its own shift, so the convs before it need no bias (as in pix2pix).
        bias = norm != "batch"
        widths = [base * min(2**i, 8) for i in range(depth)]
        self.down = nn.ModuleList()
        for i, width in enumerate(widths):
            c_in = in_channels if i == 0 else widths[i - 1]
            layers = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(c_in, width, 4, stride=2, padding=1, bias=bias, padding_mode=encoder_padding))
            if 0 < i < depth - 1:  # no norm on the raw input, none on the 1x1 bottleneck
                layers.append(_norm(norm, width))
            self.down.append(nn.Sequential(*layers))
        self.up = nn.ModuleList()
        for j in range(depth):  # j = 0 is the innermost decoder block
            i = depth - 1 - j  # the encoder level it mirrors
            c_in = widths[i] if j == 0 else 2 * widths[i]  # innermost has no skip yet
            outermost = i == 0
            c_out = out_channels if outermost else widths[i - 1]
            layers = [nn.ReLU(), _up(upsample, c_in, c_out, True if outermost else bias, resize_padding)]
            if outermost:
                layers.append(nn.Tanh())
            else:
                layers.append(_norm(norm, c_out))
                if j < n_dropout and dropout > 0:
                    layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = skips.pop()  # the bottleneck feeds the innermost decoder block directly
        for j, block in enumerate(self.up):
            x = block(x)
            if skips:
                x = torch.cat([x, skips.pop()], dim=1)
        return x


class PatchDiscriminator(nn.Module):
    """PatchGAN on (N, in_channels, H, W) -> logits (N, 1, h, w); `features(x)` also gives the activations
    after every block (the last entry is the logits), for feature matching."""

    def __init__(self, in_channels: int = 6, base: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        bias = norm != "batch"
        blocks = [nn.Sequential(nn.Conv2d(in_channels, base, 4, stride=2, padding=1), nn.LeakyReLU(0.2))]
        width = base
        for n in range(1, n_layers + 1):
            prev, width = width, base * min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last block keeps the resolution
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(prev, width, 4, stride=stride, padding=1, bias=bias),
                    _norm(norm, width),
                    nn.LeakyReLU(0.2),
                )
            )
        blocks.append(nn.Sequential(nn.Conv2d(width, 1, 4, stride=1, padding=1)))
        self.blocks = nn.ModuleList(blocks)
        self.n_layers = n_layers
        init_weights(self)

    @staticmethod
    def min_input_size(n_layers: int) -> int:
        """Smallest input side with a non-empty output: n_layers stride-2 convs, then two k4 s1 p1 convs."""
        return 3 * 2**n_layers

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[-1]


class MultiScaleDiscriminator(nn.Module):
    """N PatchGANs; scale k sees the input average-pooled k times (3x3, stride 2). forward -> one feature list
    per scale (last entry = logits). A scale whose input is too small for `n_layers` uses fewer layers."""

    def __init__(
        self,
        in_channels: int = 6,
        base: int = 64,
        n_layers: int = 3,
        norm: str = "batch",
        n_scales: int = 2,
        image_size: int = 256,
    ):
        super().__init__()
        if n_scales < 1:
            raise ValueError(f"n_scales must be >= 1, got {n_scales}")
        self.scales = nn.ModuleList()
        for k in range(n_scales):
            side = math.ceil(image_size / 2**k)
            layers = n_layers
            while layers > 1 and side < PatchDiscriminator.min_input_size(layers):
                layers -= 1
            if side < PatchDiscriminator.min_input_size(layers):
                raise ValueError(
                    f"image size {image_size} is too small for {n_scales} discriminator scales "
                    f"(scale {k} sees {side} px; a PatchGAN needs >= "
                    f"{PatchDiscriminator.min_input_size(1)} px)"
                )
            self.scales.append(PatchDiscriminator(in_channels, base, layers, norm))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        outputs = []
        for k, d in enumerate(self.scales):
            if k:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(d.features(x))
        return outputs
