"""A small CNN for skin-condition classification: the difficulty check, domain features and augmentation."""

from __future__ import annotations

import torch
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
