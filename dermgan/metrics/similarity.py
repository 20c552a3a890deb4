"""SSIM and MS-SSIM on uint8 images, computed here so that the window used is the window documented.

SSIM (Wang et al. 2004) per colour channel, averaged over R, G, B: local means, variances and the covariance come
from a Gaussian window of `kernel_size` taps and standard deviation `sigma` (population moments, K1 = 0.01,
K2 = 0.03, data range 255). Border handling: the SSIM map is averaged over the positions where the whole window
lies inside the image ("valid" filtering; no padding), so a 64 px image with a 7 px window gives a 58 x 58 map.
This is the convention of Wang et al.'s code, scikit-image (which crops the border of a padded map) and
pytorch-msssim; tests check both libraries.

MS-SSIM (Wang et al. 2003): at each scale j < M the contrast-structure term cs_j, at the coarsest scale M the full
SSIM, each averaged over the valid positions and clipped at 0 (a negative term under a fractional exponent has no
real value); MS-SSIM = prod_j cs_j^beta_j * SSIM_M^beta_M per channel, then the mean over channels. Between scales
the images are averaged over 2 x 2 blocks (odd sizes padded by one, as pytorch-msssim does).

Standard MS-SSIM uses an 11 px window (sigma 1.5) over 5 scales and needs images larger than (11 - 1) * 2^4 =
160 px. Our small-image choice, by the shorter image side (the window always fits the coarsest scale):
    >= 176 px: 11 px window, sigma 1.5, 5 scales (standard)
    >=  96 px:  7 px window, sigma 1.0, 4 scales   (128 px: scales 128, 64, 32, 16)
    >=  48 px:  5 px window, sigma 0.75, 3 scales  (64 px: scales 64, 32, 16)
    >=  16 px:  3 px window, sigma 0.5, 3 scales   (32 px: scales 32, 16, 8)
The scale weights are the first entries of the standard (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), renormalised
to sum 1. Single-scale SSIM: the standard 11 px / sigma 1.5 window above 64 px, else 7 px / sigma 1.0.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

STANDARD_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_SMALL_IMAGE_TABLE = ((176, 11, 1.5, 5), (96, 7, 1.0, 4), (48, 5, 0.75, 3), (16, 3, 0.5, 3))
K1, K2, DATA_RANGE = 0.01, 0.03, 255.0


def msssim_config(size: int) -> dict:
    """MS-SSIM window and scale weights for images whose shorter side is `size` pixels."""
    for minimum, kernel, sigma, scales in _SMALL_IMAGE_TABLE:
        if size >= minimum:
            betas = np.asarray(STANDARD_BETAS[:scales])
            return {"kernel_size": kernel, "sigma": sigma, "betas": tuple(float(b) for b in betas / betas.sum())}
    raise ValueError(f"MS-SSIM needs images of at least 16 px, got {size} px")


def ssim_config(size: int) -> dict:
    """Single-scale SSIM window for `size`-pixel images: the standard 11 px above 64 px, else 7 px."""
    return {"kernel_size": 11, "sigma": 1.5} if size > 64 else {"kernel_size": 7, "sigma": 1.0}


def gaussian_window(kernel_size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, float64 (kernel_size,), centred on the middle tap."""
    if kernel_size < 1 or kernel_size % 2 == 0 or sigma <= 0:
        raise ValueError(f"the SSIM window needs an odd kernel_size >= 1 and sigma > 0, got {kernel_size} and {sigma}")
    offsets = torch.arange(kernel_size, dtype=torch.float64) - kernel_size // 2
    taps = torch.exp(-offsets ** 2 / (2.0 * sigma ** 2))
    return taps / taps.sum()


def _filter(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filtering of (N, C, H, W), valid positions only."""
    channels, k = x.shape[1], len(taps)
    x = F.conv2d(x, taps.view(1, 1, 1, k).expand(channels, 1, 1, k), groups=channels)
    return F.conv2d(x, taps.view(1, 1, k, 1).expand(channels, 1, k, 1), groups=channels)


def ssim_terms(x: torch.Tensor, y: torch.Tensor, taps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(SSIM, cs) per image and channel, (N, C) each: the maps averaged over valid window positions.

    float32, with the moments taken about each image's own channel means: variances are then differences of
    squares of deviations rather than of raw levels (up to 255^2), which keeps float32 within a few 1e-6 of a
    float64 computation at a tenth of its cost. Moments about any constant give the same variances.
    """
    if min(x.shape[-2:]) < len(taps):
        raise ValueError(f"SSIM: a {len(taps)} px window does not fit {tuple(x.shape[-2:])} px images")
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    x, y = x.double(), y.double()
    shift_x, shift_y = x.mean(dim=(2, 3), keepdim=True), y.mean(dim=(2, 3), keepdim=True)
    x, y = (x - shift_x).float(), (y - shift_y).float()
    moments = _filter(torch.cat([x, y, x * x, y * y, x * y], dim=1), taps.float())
    mu_x, mu_y, xx, yy, xy = moments.double().chunk(5, dim=1)
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    mu_x, mu_y = mu_x + shift_x, mu_y + shift_y
    cs_map = (2.0 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2.0 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1) * cs_map
    return ssim_map.mean(dim=(2, 3)), cs_map.mean(dim=(2, 3))


def _as_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()


def ssim(a: torch.Tensor, b: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """SSIM of float (N, C, H, W) images on a 0-255 scale: (N,), mean over channels."""
    return ssim_terms(a, b, gaussian_window(kernel_size, sigma))[0].mean(dim=1)


def msssim(a: torch.Tensor, b: torch.Tensor, kernel_size: int, sigma: float, betas) -> torch.Tensor:
    """MS-SSIM of float (N, C, H, W) images on a 0-255 scale: (N,), mean over channels."""
    taps = gaussian_window(kernel_size, sigma)
    factors = []
    for scale, beta in enumerate(betas):
        whole, cs = ssim_terms(a, b, taps)
        last = scale == len(betas) - 1
        factors.append(torch.clamp(whole if last else cs, min=0.0) ** beta)
        if not last:
            padding = [size % 2 for size in a.shape[2:]]
            a, b = F.avg_pool2d(a, 2, padding=padding), F.avg_pool2d(b, 2, padding=padding)
    return torch.stack(factors).prod(dim=0).mean(dim=1)


@torch.no_grad()
def _pairwise(measure, a: np.ndarray, b: np.ndarray, batch: int, **options) -> np.ndarray:
    """`measure` of image pairs (a[i], b[i]), in batches: float (N,)."""
    if a.shape != b.shape:
        raise ValueError(f"image pairs need equal shapes, got {a.shape} and {b.shape}")
    values = [measure(_as_float(a[start:start + batch]), _as_float(b[start:start + batch]), **options)
              for start in range(0, len(a), batch)]
    return torch.cat(values).numpy() if values else np.empty(0)


def pairwise_msssim(a: np.ndarray, b: np.ndarray, batch: int = 256) -> np.ndarray:
    """MS-SSIM of image pairs (a[i], b[i]) for uint8 (N, H, W, 3) arrays of equal shape: float (N,)."""
    return _pairwise(msssim, a, b, batch, **msssim_config(min(a.shape[1:3])))


def pairwise_ssim(a: np.ndarray, b: np.ndarray, batch: int = 256) -> np.ndarray:
    """SSIM of image pairs (a[i], b[i]) with the window of ssim_config: float (N,)."""
    return _pairwise(ssim, a, b, batch, **ssim_config(min(a.shape[1:3])))
