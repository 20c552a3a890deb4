"""SSIM and MS-SSIM on uint8 images (torchmetrics), with a configuration that works on 32-64 px images.

Standard MS-SSIM (Wang et al. 2003) uses an 11x11 Gaussian window (sigma 1.5) over 5 scales, which needs images
larger than (11 - 1) * 2^4 = 160 px. Our small-image choice, by the shorter image side:
    >= 176 px: 11 px window, sigma 1.5, 5 scales (standard)
    >=  96 px:  7 px window, sigma 1.0, 4 scales
    >=  48 px:  5 px window, sigma 0.75, 3 scales   (64 px: scales 64, 32, 16)
    >=  16 px:  3 px window, sigma 0.5, 3 scales    (32 px: scales 32, 16, 8)
The scale weights are the first entries of the standard (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), renormalised
to sum 1; sigma shrinks with the window so the window still covers about +-2 sigma. torchmetrics' "relu"
normalisation keeps negative contrast terms at coarse scales from producing NaN.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.image import (multiscale_structural_similarity_index_measure,
                                           structural_similarity_index_measure)

STANDARD_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_SMALL_IMAGE_TABLE = ((176, 11, 1.5, 5), (96, 7, 1.0, 4), (48, 5, 0.75, 3), (16, 3, 0.5, 3))


def msssim_config(size: int) -> dict:
    """torchmetrics MS-SSIM keyword arguments for square-ish images whose shorter side is `size` pixels."""
    for minimum, kernel, sigma, scales in _SMALL_IMAGE_TABLE:
        if size >= minimum:
            betas = np.asarray(STANDARD_BETAS[:scales])
            return {"kernel_size": kernel, "sigma": sigma, "betas": tuple(float(b) for b in betas / betas.sum())}
    raise ValueError(f"MS-SSIM needs images of at least 16 px, got {size} px")


def ssim_config(size: int) -> dict:
    """Single-scale SSIM window for `size`-pixel images: the standard 11 px above 64 px, else 7 px."""
    return {"kernel_size": 11, "sigma": 1.5} if size > 64 else {"kernel_size": 7, "sigma": 1.0}


def _float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()


@torch.no_grad()
def _pairwise(measure, a: np.ndarray, b: np.ndarray, batch: int, **options) -> np.ndarray:
    """`measure` (a torchmetrics functional) of image pairs (a[i], b[i]), in batches: float (N,)."""
    if a.shape != b.shape:
        raise ValueError(f"image pairs need equal shapes, got {a.shape} and {b.shape}")
    values = [measure(_float(a[start:start + batch]), _float(b[start:start + batch]), data_range=255.0,
                      reduction="none", **options)
              for start in range(0, len(a), batch)]
    return torch.cat(values).double().numpy()


def pairwise_msssim(a: np.ndarray, b: np.ndarray, batch: int = 256) -> np.ndarray:
    """MS-SSIM of image pairs (a[i], b[i]) for uint8 (N, H, W, 3) arrays of equal shape: float (N,)."""
    return _pairwise(multiscale_structural_similarity_index_measure, a, b, batch, normalize="relu",
                     **msssim_config(min(a.shape[1:3])))


def pairwise_ssim(a: np.ndarray, b: np.ndarray, batch: int = 256) -> np.ndarray:
    """SSIM of image pairs (a[i], b[i]): float (N,)."""
    return _pairwise(structural_similarity_index_measure, a, b, batch, **ssim_config(min(a.shape[1:3])))
