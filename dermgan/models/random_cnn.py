"""A randomly initialised CNN: features that no training has shaped.

Two uses: the "random" backbone of the projected discriminator (dermgan.models.projected; smoke runs and
tests, where no pretrained weights are wanted) and, with a fixed seed of its own, the "random-cnn" feature
space of the metrics (dermgan.metrics.features): Naeem et al. (ICML 2020, "Reliable Fidelity and Diversity
Metrics for Generative Models") found the embeddings of randomly initialised networks to rank fidelity and
diversity sensibly, and such a space is one no discriminator was trained on or with.

Stages of (3x3 conv, stride 2) + ReLU + (3x3 conv) + ReLU, He-normal weights (variance kept through the ReLUs,
so deep stages neither vanish nor explode) and zero biases; no normalisation, so an image's features do not
depend on the other images of its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


class RandomCNN(nn.Module):
    """float (N, 3, S, S) in [-1, 1] -> `features`: per stage k a map S / 2**(k + 1) px, channels[k] deep."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256)):
        super().__init__()
        self.channels = tuple(int(w) for w in widths)
        stages, c_in = [], 3
        for width in self.channels:
            stages.append(nn.Sequential(nn.Conv2d(c_in, width, 3, stride=2, padding=1), nn.ReLU(),
                                        nn.Conv2d(width, width, 3, padding=1), nn.ReLU()))
            c_in = width
        self.stages = nn.ModuleList(stages)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out
