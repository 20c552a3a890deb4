"""Skin-condition classifiers: a small CNN trained from scratch (the difficulty check, domain features, the
second row of augmentation) and an ImageNet-pretrained EfficientNet-Lite0 (notebook 07's default)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SkinClassifier(nn.Module):
    """A strided stem (w/2) and conv stages at widths w, 2w, 4w, each halving the resolution -> global average
    pool -> dropout -> linear.

    The stem convolution has stride 2: full-resolution feature maps cost most of the time on a CPU and add
    little at 64 px. Works at any input size >= 32 (global pooling). `features` returns the pooled (N, 4w)
    embedding that the classification head reads; metrics use it as a domain-specific feature extractor.
    """

    def __init__(self, n_classes: int, width: int = 32, in_channels: int = 3, dropout: float = 0.2):
        super().__init__()
        if n_classes < 2 or width < 2:
            raise ValueError(f"SkinClassifier needs n_classes >= 2 and width >= 2, got {n_classes}, {width}")
        half = max(width // 2, 1)
        self.body = nn.Sequential(
            _block(in_channels, half, stride=2),
            _block(half, width), nn.MaxPool2d(2),
            _block(width, 2 * width), nn.MaxPool2d(2),
            _block(2 * width, 4 * width), _block(4 * width, 4 * width),
        )
        self.feature_dim = 4 * width
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.feature_dim, n_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """float (N, 3, H, W) in [-1, 1] -> (N, feature_dim) embedding (after global average pooling)."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class PretrainedClassifier(nn.Module):
    """EfficientNet-Lite0 with its ImageNet weights (dermgan.models.efficientnet_lite) for skin classes.

    Images (float NCHW in [-1, 1], any size) are resized bilinearly to `input_size`. The stages before
    `train_from` form the *trunk*: frozen (no gradients) and always in eval mode, so their batch norm keeps
    the ImageNet statistics and the trunk is a fixed function of the image, whose outputs may be computed once
    and cached (dermgan.classify.TrunkCache). Stages from `train_from` on, the 1280-channel head convolution
    and a new linear layer (dropout before it) are trained. train_from=0 fine-tunes the whole network.

    `features(x)` is the pooled (N, 1280) embedding the linear layer reads; `features(x, stages=...)` the maps
    of the stages asked for (numbers, strides and channels in dermgan.models.efficientnet_lite).
    """

    def __init__(self, n_classes: int, input_size: int = 96, train_from: int = 6, dropout: float = 0.2,
                 weights=None):
        from dermgan.models import efficientnet_lite as el

        super().__init__()
        if n_classes < 2 or not 0 <= train_from <= el.HEAD_STAGE or input_size < 32:
            raise ValueError(f"PretrainedClassifier needs n_classes >= 2, train_from in 0..{el.HEAD_STAGE} "
                             f"and input_size >= 32, got {n_classes}, {train_from}, {input_size}")
        self.input_size, self.train_from = int(input_size), int(train_from)
        self.net = el.pretrained(weights)
        self.net._dropout = nn.Dropout(dropout)
        self.net._fc = nn.Linear(el.HEAD_CHANNELS, n_classes)  # random init: seed before building
        self.feature_dim = el.HEAD_CHANNELS
        for module in self.frozen_modules():
            module.requires_grad_(False)
            module.eval()

    def frozen_modules(self) -> list[nn.Module]:
        return [m for stage in range(self.train_from) for m in self.net.stage_modules(stage)]

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.frozen_modules():  # the frozen stages keep ImageNet's batch-norm statistics
            module.eval()
        return self

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == self.input_size and x.shape[-2] == self.input_size:
            return x
        down = x.shape[-1] > self.input_size
        return F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                             antialias=down)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen stages' output for images x (the resized image itself when nothing is frozen)."""
        x = self.resize(x)
        if self.train_from == 0:
            return x
        with torch.no_grad():
            return self.net.run_stages(x, 0, self.train_from - 1)

    def top(self, z: torch.Tensor) -> torch.Tensor:
        """Logits from the trunk's output z (the trained part)."""
        from dermgan.models.efficientnet_lite import HEAD_STAGE

        pooled = self.net.run_stages(z, self.train_from, HEAD_STAGE).mean(dim=(2, 3))
        return self.net._fc(self.net._dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.trunk(x))

    def features(self, x: torch.Tensor, stages=None):
        return self.net.features(self.resize(x), stages)

    def trunk_identity(self) -> str:
        """What the trunk's outputs depend on besides the image: its weights, the input size and the cut."""
        import hashlib

        digest = hashlib.sha1(f"effnet-lite0|{self.input_size}|{self.train_from}".encode())
        for i, module in enumerate(self.frozen_modules()):
            for key, value in module.state_dict().items():
                digest.update(f"{i}.{key}".encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        return f"effl0-trunk{self.train_from}-{self.input_size}px-{digest.hexdigest()[:12]}"
