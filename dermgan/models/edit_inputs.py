"""What the lesion editors' generators and discriminators see: image, mask and condition planes, concatenated
(shared by the mask-guided recipe in `lesion_edit` and the CycleGAN recipe in `cyclegan`), and the module that
holds one network per direction or domain."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def add_channels(n_conditions: int, use_mask: bool = True) -> int:
    return 3 + int(use_mask) + n_conditions


def remove_channels(use_mask: bool = True) -> int:
    return 3 + int(use_mask)


def condition_planes(condition: torch.Tensor, n_conditions: int, like: torch.Tensor) -> torch.Tensor:
    """One constant one-hot plane per condition: (N,) int -> (N, n_conditions, H, W) like `like`."""
    onehot = F.one_hot(condition.long(), n_conditions).to(like.dtype)
    return onehot[:, :, None, None].expand(-1, -1, *like.shape[2:])


def add_input(image, mask, condition, n_conditions: int, use_mask: bool = True) -> torch.Tensor:
    """concat(image, [mask], condition planes): what G["add"] and D["lesion"] see."""
    parts = [image, mask] if use_mask else [image]
    return torch.cat(parts + [condition_planes(condition, n_conditions, image)], 1)


def remove_input(image, mask, use_mask: bool = True) -> torch.Tensor:
    """concat(image, [mask]): what G["remove"] and D["healthy"] see."""
    return torch.cat([image, mask], 1) if use_mask else image


class EditorPair(nn.Module):
    """Named networks called as module(name, x), so the training loop (and DDP) sees one module."""

    def __init__(self, networks: dict[str, nn.Module]):
        super().__init__()
        self.nets = nn.ModuleDict(networks)

    def forward(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.nets[name](x)

    def __contains__(self, name: str) -> bool:
        return name in self.nets
