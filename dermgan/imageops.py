"""The one pair of conversions between images on disk (uint8 NHWC) and images in models (float NCHW, [-1, 1])."""

from __future__ import annotations

import numpy as np
import torch


def to_model(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N,H,W,C) or (H,W,C) -> float32 (N,C,H,W) in [-1, 1]."""
    tensor = torch.as_tensor(images)
    if tensor.dtype != torch.uint8:
        raise TypeError(f"to_model expects uint8 images, got {tensor.dtype}")
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4:
        raise ValueError(f"to_model expects (N,H,W,C) or (H,W,C), got shape {tuple(tensor.shape)}")
    return tensor.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N,C,H,W) in [-1, 1] -> uint8 (N,H,W,C), rounding to nearest and clipping out-of-range values."""
    if images.ndim != 4:
        raise ValueError(f"to_uint8 expects (N,C,H,W), got shape {tuple(images.shape)}")
    scaled = (images.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
