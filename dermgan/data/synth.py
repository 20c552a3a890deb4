"""Procedural clinical photographs of skin: the embedded (synthetic) dataset of dermgan.

No real dermatology data can be downloaded where this project is developed, so the package draws its own
clinical (not dermoscopic) photographs of a patch of skin carrying one of the eight conditions of
`dermgan.data.conditions`. The renderer is a small physical model followed by a camera model:

* skin colour: a two-layer absorption model (epidermal melanin over a scattering, blood-perfused dermis),
  with the optical coefficients used by S-SYNTH; skin tone is set by the melanin volume fraction, redness by
  the dermal blood fraction. Redness under a lot of melanin is therefore less visible, as in the clinic.
* texture and scene: multi-scale mottling of melanin and blood, pores, skin creases, uneven illumination,
  in part of the images a body outline against a background, optional hair.
* lesions: a shape (regular or irregular, single or multiple) and a "look" that changes the melanin and
  blood maps and adds surface layers (scale, crust, keratin, pearly sheen, blue-grey dermal pigment).
* camera: white balance, blur, noise, JPEG compression.

Every image is drawn from its own random streams seeded by (seed, index), so an image does not depend on which
other images are rendered with it. Scene parameters, lesion parameters and all smooth noise live on grids
whose size does not depend on the image size, so the same (seed, index) gives the same scene at 64 and 256 px;
only pixel-scale details (pores, camera noise) differ. The skin is drawn from streams that do not depend on
the condition: the same (seed, index) with another condition shows the same skin with another lesion.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from dermgan.config import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from dermgan.data.conditions import CONDITION_NAMES, CONDITIONS, condition_index

MIN_SIZE, MAX_SIZE = MIN_IMAGE_SIZE, MAX_IMAGE_SIZE  # one range for the renderer and the profiles
# Bump when the pixels for a given (seed, index, size) change: it is part of the dataset cache key.
RENDERER_VERSION = 1

# ITA bands (degrees) of Del Bino et al. / Chardon et al., read as Fitzpatrick-like types I..VI:
# very light > 55 > light > 41 > intermediate > 28 > tan > 10 > brown > -30 > dark.
ITA_BAND_EDGES = (55.0, 41.0, 28.0, 10.0, -30.0)
# The ITA range each type is drawn from when a type is asked for (inside its band, away from the edges,
# and bounded on the open ends to what real skin shows).
# The rendered skin comes out ~1.5 degrees lighter than the flat colour aimed at (texture, sheen), hence the
# shift.
_ITA_TARGETS = {1: (57.0, 66.0), 2: (43.0, 50.5), 3: (30.0, 36.5), 4: (12.5, 23.0), 5: (-24.0, 3.0),
                6: (-48.0, -35.0)}
# Default share of each type in the dataset: lighter types more common, as in most dermatology collections,
# but every type present in numbers.
FITZPATRICK_SHARES = (0.14, 0.24, 0.22, 0.18, 0.13, 0.09)

# Lesion diameter (fraction of the image width) drawn for each condition; for acne, eczema and psoriasis
# this is
# the diameter of the affected region holding several papules / patches / plaques.
DIAMETER_RANGE = {
    "nevus": (0.10, 0.34),
    "seborrheic_keratosis": (0.14, 0.42),
    "psoriasis": (0.25, 0.65),
    "eczema": (0.30, 0.75),
    "acne": (0.35, 0.85),
    "basal_cell_carcinoma": (0.12, 0.36),
    "squamous_cell_carcinoma": (0.14, 0.40),
    "melanoma": (0.14, 0.44),
}


def check_size(size: int) -> int:
    """The image size as an int; anything outside 32..512 is an error saying so."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ValueError(f"image size must be an integer number of pixels, got {size!r}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"image size {size} px is outside the supported range {MIN_SIZE}..{MAX_SIZE}")
    return int(size)


# ---------------------------------------------------------------------------------------------------------
# Colour science: sRGB <-> linear, CIELAB (D65), ITA, Fitzpatrick bands
# ---------------------------------------------------------------------------------------------------------

_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_D65_WHITE = _SRGB_TO_XYZ.sum(axis=1)  # XYZ of sRGB white, (0.9505, 1.0, 1.0888)


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light (IEC 61966-2-1)."""
    v = np.asarray(values, dtype=np.float64)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] -> sRGB-encoded values (clipped to [0, 1] first)."""
    v = np.clip(values, 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.power(v, 1 / 2.4) - 0.055)


def rgb_to_lab(rgb) -> np.ndarray:
    """sRGB colours on the 0..255 scale, shape (..., 3) -> CIELAB (L*, a*, b*) under D65, shape (..., 3)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.shape[-1] != 3:
        raise ValueError(f"rgb_to_lab expects a last axis of 3 (R, G, B), got shape {rgb.shape}")
    xyz = srgb_to_linear(rgb / 255.0) @ _SRGB_TO_XYZ.T / _D65_WHITE
    delta = 6.0 / 29.0
    f = np.where(xyz > delta ** 3, np.cbrt(xyz), xyz / (3 * delta ** 2) + 4.0 / 29.0)
    lightness = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1)


def ita_from_rgb(rgb) -> np.ndarray:
    """Individual typology angle in degrees, atan((L* - 50) / b*) * 180 / pi, of sRGB colours (0..255).

    Written with atan2 so that b* <= 0 (never the case for skin) still gives a defined angle; for b* > 0 it is
    exactly the textbook formula.
    """
    lab = rgb_to_lab(rgb)
    return np.degrees(np.arctan2(lab[..., 0] - 50.0, lab[..., 2]))


def fitzpatrick_from_ita(ita) -> np.ndarray:
    """Type 1..6 from the ITA band the angle falls into: > 55 is I, (41, 55] II, ..., <= -30 VI."""
    ita = np.asarray(ita, dtype=np.float64)
    if np.isnan(ita).any():
        raise ValueError("fitzpatrick_from_ita got NaN angles")
    # digitize against the negated (increasing) edges: > 55 -> 0, (41, 55] -> 1, ..., <= -30 -> 5
    return (np.digitize(-ita, -np.asarray(ITA_BAND_EDGES), right=False) + 1).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
# Skin optics: epidermal melanin over a blood-perfused dermis (coefficients as in S-SYNTH)
# ---------------------------------------------------------------------------------------------------------

# Three wavelengths per camera channel (nm), averaged: a crude stand-in for the channel sensitivities.
_BANDS_NM = np.array([[600.0, 630.0, 660.0], [530.0, 550.0, 570.0], [450.0, 470.0, 490.0]])
# HbO2 molar extinction (cm^-1 / M, Prahl's table) at those wavelengths.
_HBO2_EPS = np.array([[3200.0, 610.0, 320.0], [39957.0, 43016.0, 44496.0], [62816.0, 33209.0, 23684.0]])
_MUA_MELANOSOME = 6.6e11 * _BANDS_NM ** -3.33  # cm^-1, pure melanosome
_MUA_BLOOD = 2.303 * _HBO2_EPS * 150.0 / 64500.0  # cm^-1, whole blood at 150 g/L haemoglobin
_MUA_BASELINE = 0.244 + 85.3 * np.exp(-(_BANDS_NM - 154.0) / 66.2)  # cm^-1, bloodless tissue
_MUSP_DERMIS = 45.3 * (_BANDS_NM / 500.0) ** -1.292  # cm^-1, reduced scattering of the dermis
_EPIDERMIS_CM = 0.006  # 60 um
_DIFFUSION_A = 6.0  # R = exp(-A / sqrt(3 (1 + mus'/mua))): diffuse reflectance of a semi-infinite medium
# Epidermal carotenoids (and bilirubin) absorb blue: optical depth per pass, without it skin looks pink-grey.
_CAROTENE_OD = 0.08 * np.array([[0.0, 0.0, 0.0], [0.05, 0.02, 0.0], [1.0, 0.95, 0.75]])
_SURFACE_REFLECTANCE = 0.025  # diffuse part of the air/stratum-corneum reflection, colourless


def skin_reflectance(melanin, blood) -> np.ndarray:
    """Linear RGB diffuse reflectance of skin with melanin and blood volume fractions (arrays, broadcast).

    The light crosses the epidermis twice (Beer-Lambert with the melanin absorption), and the dermis returns
    a diffuse reflectance that falls with its absorption, which the blood dominates in green and blue.
    """
    melanin = np.asarray(melanin, dtype=np.float64)[..., None, None]
    blood = np.asarray(blood, dtype=np.float64)[..., None, None]
    epidermis = np.exp(-2.0 * (melanin * _MUA_MELANOSOME * _EPIDERMIS_CM + _CAROTENE_OD))
    mua = blood * _MUA_BLOOD + (1.0 - blood) * _MUA_BASELINE
    dermis = np.exp(-_DIFFUSION_A / np.sqrt(3.0 * (1.0 + _MUSP_DERMIS / mua)))
    return (epidermis * dermis).mean(axis=-1) + _SURFACE_REFLECTANCE


_MELANIN_GRID = np.geomspace(0.004, 0.75, 400)

# Per-pixel reflectance goes through a table over (log melanin, log blood): 9 exponentials per pixel are the
# renderer's most expensive step otherwise. Bilinear interpolation in log space is accurate to ~1e-4.
_LUT_MELANIN = (np.log(0.002), np.log(0.9), 192)
_LUT_BLOOD = (np.log(0.0005), np.log(0.5), 192)


@lru_cache(maxsize=1)
def _reflectance_table() -> np.ndarray:
    melanin = np.exp(np.linspace(*_LUT_MELANIN))
    blood = np.exp(np.linspace(*_LUT_BLOOD))
    table = skin_reflectance(melanin[:, None], blood[None, :])  # (192, 192, 3)
    table.setflags(write=False)
    return table


def _lut_coordinate(values: np.ndarray, axis) -> tuple[np.ndarray, np.ndarray]:
    lo, hi, n = axis
    pos = (np.log(np.clip(values, math.exp(lo), math.exp(hi))) - lo) * ((n - 1) / (hi - lo))
    index = np.minimum(pos.astype(np.int64), n - 2)
    return index, pos - index


def skin_reflectance_fast(melanin: np.ndarray, blood: np.ndarray) -> np.ndarray:
    """`skin_reflectance` of per-pixel maps (same shape) through the interpolated table; (..., 3)."""
    table = _reflectance_table()
    i, fi = _lut_coordinate(melanin, _LUT_MELANIN)
    j, fj = _lut_coordinate(blood, _LUT_BLOOD)
    fi, fj = fi[..., None], fj[..., None]
    top = table[i, j] * (1 - fj) + table[i, j + 1] * fj
    bottom = table[i + 1, j] * (1 - fj) + table[i + 1, j + 1] * fj
    return top * (1 - fi) + bottom * fi


_ITA_BLOOD = np.geomspace(0.003, 0.025, 10)
_ITA_GAIN = np.linspace(0.75, 1.25, 11)


@lru_cache(maxsize=1)
def _ita_table() -> np.ndarray:
    """ITA of the flat skin colour over (blood, gain, melanin) grids; falls monotonically with melanin."""
    linear = skin_reflectance(_MELANIN_GRID[None, :], _ITA_BLOOD[:, None])  # (blood, melanin, 3)
    linear = linear[:, None] * _ITA_GAIN[None, :, None, None]
    table = ita_from_rgb(linear_to_srgb(linear) * 255.0)
    table.setflags(write=False)
    return table


def melanin_for_ita(ita: float, blood: float, gain: float) -> float:
    """The melanin fraction whose flat skin colour (at this blood fraction and exposure) has this ITA."""
    table = _ita_table()
    # bilinear in (log blood, gain), then invert the falling curve (np.interp wants increasing x)
    bi = np.interp(np.log(blood), np.log(_ITA_BLOOD), np.arange(len(_ITA_BLOOD)))
    gi = np.interp(gain, _ITA_GAIN, np.arange(len(_ITA_GAIN)))
    b0, g0 = min(int(bi), len(_ITA_BLOOD) - 2), min(int(gi), len(_ITA_GAIN) - 2)
    fb, fg = bi - b0, gi - g0
    curve = ((1 - fb) * ((1 - fg) * table[b0, g0] + fg * table[b0, g0 + 1])
             + fb * ((1 - fg) * table[b0 + 1, g0] + fg * table[b0 + 1, g0 + 1]))
    return float(np.exp(np.interp(ita, curve[::-1], np.log(_MELANIN_GRID[::-1]))))


# ---------------------------------------------------------------------------------------------------------
# Smooth noise on fixed grids (resolution independent)
# ---------------------------------------------------------------------------------------------------------

def _bspline3(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1, 2 / 3 - x ** 2 + x ** 3 / 2, np.where(x < 2, (2 - x) ** 3 / 6, 0.0))


@lru_cache(maxsize=128)
def _spline_matrix(size: int, grid: int) -> np.ndarray:
    """(size, grid + 3) cubic B-spline weights: a grid x grid lattice of knots spread over the image."""
    u = (np.arange(size) + 0.5) / size * grid
    knots = np.arange(grid + 3) - 1.0
    weights = _bspline3(u[:, None] - knots[None, :])
    weights.setflags(write=False)
    return weights


def smooth_noise(rng: np.random.Generator, size: int, grid: int) -> np.ndarray:
    """A smooth random field of about unit variance with `grid` bumps across, drawn independent of `size`."""
    knots = rng.standard_normal((grid + 3, grid + 3))
    w = _spline_matrix(size, grid)
    return (w @ knots @ w.T) / 0.48  # 0.48 ~ std of B-spline-smoothed unit white noise


def fractal_noise(rng: np.random.Generator, size: int, grids=(3, 6, 12, 24),
                  decay: float = 0.6) -> np.ndarray:
    """Sum of smooth noise octaves, coarse first, each `decay` times weaker; normalised to unit variance."""
    total = np.zeros((size, size))
    weight_sq = 0.0
    for octave, grid in enumerate(grids):
        weight = decay ** octave
        total += weight * smooth_noise(rng, size, grid)
        weight_sq += weight ** 2
    return total / math.sqrt(weight_sq)


def _smoothstep(edge0, edge1, x):
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in image-width units: x = column, y = row, both in (0, 1). Read-only."""
    c = (np.arange(size) + 0.5) / size
    x, y = np.meshgrid(c, c, indexing="xy")
    x.setflags(write=False), y.setflags(write=False)
    return x, y


# ---------------------------------------------------------------------------------------------------------
# Curves (hair, vessels): rasterised by splatting densely sampled points
# ---------------------------------------------------------------------------------------------------------

def _draw_curves(size: int, starts: np.ndarray, angles: np.ndarray, lengths: np.ndarray, bends: np.ndarray,
                 widths: np.ndarray) -> np.ndarray:
    """Coverage in [0, 1] of curved strokes (arcs of constant bend), all geometry in image-width units."""
    if len(starts) == 0:
        return np.zeros((size, size))
    n_points = int(math.ceil(lengths.max() * size * 2)) + 2
    t = np.linspace(0.0, 1.0, n_points)[None, :] * lengths[:, None]  # arc length along each stroke
    theta = angles[:, None] + bends[:, None] * t
    step = lengths[:, None] / (n_points - 1)
    x = starts[:, 0:1] + np.cumsum(np.cos(theta) * step, axis=1)
    y = starts[:, 1:2] + np.cumsum(np.sin(theta) * step, axis=1)
    col, row = np.floor(x * size).astype(np.int64), np.floor(y * size).astype(np.int64)
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    # each sample covers (step * width) of area, in pixels^2
    area = np.broadcast_to(step * widths[:, None] * size * size, x.shape)
    density = np.bincount((row * size + col)[inside], weights=area[inside], minlength=size * size)
    density = ndimage.gaussian_filter(density.reshape(size, size), sigma=0.7, mode="constant")
    return 1.0 - np.exp(-1.6 * density)


# ---------------------------------------------------------------------------------------------------------
# Lesion shapes
# ---------------------------------------------------------------------------------------------------------

@dataclass
class _Blob:
    cx: float
    cy: float
    radius: float  # image-width units
    aspect: float
    angle: float
    harmonics: np.ndarray  # (k, 2): amplitude, phase for k = 2..
    rough: float  # amplitude of the fine border noise


@dataclass
class LesionShape:
    """A lesion's footprint: `field` > 0 inside (1 = centre-like), `alpha` the soft coverage, `mask` uint8."""

    field: np.ndarray
    alpha: np.ndarray
    mask: np.ndarray
    centre: tuple[float, float]
    diameter: float
    blobs: list = field(default_factory=list)


# Per condition: (irregularity, border roughness, edge softness, number of components (lo, hi), component size
# relative to the region). Irregularity scales the angular harmonics of the border; softness is the fraction
# of
# the radius over which the lesion fades in from its border (ill-defined lesions fade in slowly).
_SHAPE_STYLE = {
    "nevus": (0.04, 0.03, (0.08, 0.3), (1, 1), 1.0),
    "seborrheic_keratosis": (0.08, 0.05, (0.04, 0.15), (1, 1), 1.0),
    "psoriasis": (0.12, 0.08, (0.08, 0.3), (1, 4), 0.55),
    "eczema": (0.22, 0.12, (0.5, 1.0), (1, 3), 0.6),
    "acne": (0.05, 0.0, (0.4, 0.8), (4, 22), 0.09),
    "basal_cell_carcinoma": (0.07, 0.04, (0.1, 0.3), (1, 1), 1.0),
    "squamous_cell_carcinoma": (0.12, 0.08, (0.1, 0.35), (1, 1), 1.0),
    "melanoma": (0.22, 0.12, (0.08, 0.4), (1, 1), 1.0),
}


def _draw_blobs(rng: np.random.Generator, condition: str, centre, diameter: float) -> list[_Blob]:
    irregular, rough, _, (lo, hi), rel = _SHAPE_STYLE[condition]
    if condition == "melanoma":
        irregular *= rng.uniform(0.35, 1.3)  # some melanomas are nearly symmetric: overlap with nevi
    elif condition == "nevus" and rng.random() < 0.15:
        irregular *= 3.0  # atypical (dysplastic) nevi: overlap with melanoma
    n = int(rng.integers(lo, hi + 1))
    region = diameter / 2
    blobs = []
    for i in range(n):
        if n == 1:
            cx, cy, radius = centre[0], centre[1], region
        else:
            # components scattered over the region, the first one at the centre
            if i == 0:
                r, a = 0.0, 0.0
            else:
                r, a = region * math.sqrt(rng.uniform(0.05, 1.0)), rng.uniform(0, 2 * np.pi)
            cx, cy = centre[0] + r * math.cos(a), centre[1] + r * math.sin(a)
            radius = region * rel * rng.uniform(0.6, 1.5)
        k = np.arange(2, 8)
        amps = irregular * rng.standard_normal(len(k)) / k ** 0.8
        phases = rng.uniform(0, 2 * np.pi, len(k))
        blobs.append(_Blob(cx, cy, radius, float(rng.uniform(0.75, 1.0)), float(rng.uniform(0, np.pi)),
                           np.stack([amps, phases], axis=1), rough))
    return blobs


def _blob_field(blob: _Blob, x: np.ndarray, y: np.ndarray, border_noise: np.ndarray) -> np.ndarray:
    """1 - (distance / border radius in that direction): 1 at the centre, 0 on the border, < 0 outside.

    Only the blob's bounding box is computed (acne has up to two dozen small blobs); elsewhere it is -1.
    """
    size = x.shape[0]
    amps, phases = blob.harmonics[:, 0], blob.harmonics[:, 1]
    extent = blob.radius * (1 + np.abs(amps).sum() + 4 * blob.rough) / blob.aspect + 2.0 / size
    c0, c1 = (max(int((c - extent) * size), 0) for c in (blob.cx, blob.cy))
    e0, e1 = (min(int((c + extent) * size) + 2, size) for c in (blob.cx, blob.cy))
    out = np.full((size, size), -1.0)
    if c0 >= e0 or c1 >= e1:
        return out
    box = (slice(c1, e1), slice(c0, e0))
    dx, dy = x[box] - blob.cx, y[box] - blob.cy
    ca, sa = math.cos(blob.angle), math.sin(blob.angle)
    u, v = (dx * ca + dy * sa) / blob.aspect, (-dx * sa + dy * ca) * blob.aspect
    rho = np.hypot(u, v)
    # cos(k theta + phase) = Re(z^k e^{i phase}) with z = e^{i theta}: no trigonometry per pixel and harmonic
    z = np.where(rho > 0, (u + 1j * v) / np.where(rho > 0, rho, 1.0), 1.0)
    zk = z * z
    wobble = np.zeros_like(rho)
    for amp, phase in zip(amps, phases):
        wobble += amp * (zk * complex(math.cos(phase), math.sin(phase))).real
        zk = zk * z
    border = blob.radius * np.maximum(1.0 + wobble + blob.rough * border_noise[box], 0.2)
    out[box] = np.maximum(1.0 - rho / border, -1.0)
    return out


def lesion_shape_full(rng: np.random.Generator, size: int, condition: str | int,
                      diameter: float | None = None, centre: tuple[float, float] | None = None,
                      skin_mask: np.ndarray | None = None, softness: float | None = None) -> LesionShape:
    """Footprint of a lesion of `condition`: field, soft alpha and mask (see `lesion_shape`)."""
    size = check_size(size)
    name = CONDITION_NAMES[condition_index(condition)]
    if diameter is None:
        diameter = float(rng.uniform(*DIAMETER_RANGE[name]))
    if not 0.0 < diameter <= 1.5:
        raise ValueError(f"lesion diameter {diameter} must be in (0, 1.5] image widths")
    if centre is None:
        centre = tuple(0.5 + rng.uniform(-0.15, 0.15, 2))
    centre = (float(centre[0]), float(centre[1]))
    if not all(-0.5 <= c <= 1.5 for c in centre):
        raise ValueError(f"lesion centre {centre} must lie near the image (x, y in image widths, 0..1)")
    blobs = _draw_blobs(rng, name, centre, diameter)
    if softness is None:
        softness = float(rng.uniform(*_SHAPE_STYLE[name][2]))
    x, y = _grid(size)
    border_noise = smooth_noise(rng, size, 20)
    # the smallest components must still cover a pixel or two at 32 px
    min_radius = 1.1 / size
    total = np.full((size, size), -np.inf)
    for blob in blobs:
        blob.radius = max(blob.radius, min_radius)
        total = np.maximum(total, _blob_field(blob, x, y, border_noise))
    alpha = _smoothstep(0.0, softness, total)
    mask = total > 0
    if skin_mask is not None:
        mask &= skin_mask.astype(bool)
    if not mask.any():  # a lesion is at least the pixel at its centre
        row = min(max(int(centre[1] * size), 0), size - 1)
        col = min(max(int(centre[0] * size), 0), size - 1)
        mask[row, col] = True
        alpha[row, col] = max(alpha[row, col], 0.5)
    alpha = np.where(mask, alpha, 0.0)
    return LesionShape(total, alpha, mask.astype(np.uint8), centre, diameter, blobs)


def lesion_shape(rng: np.random.Generator, size: int, condition: str | int, diameter: float | None = None,
                 centre: tuple[float, float] | None = None,
                 skin_mask: np.ndarray | None = None) -> np.ndarray:
    """A lesion mask (uint8 (size, size) in {0, 1}) with the shape style of `condition`.

    diameter: of the lesion (or of the region holding a multi-component lesion), in image widths; drawn from
    the condition's range when None. centre: (x, y) in image widths, (0.5, 0.5) = image centre. skin_mask: if
    given, the lesion is clipped to it. The same rng state gives the same shape at any size.
    """
    return lesion_shape_full(rng, size, condition, diameter, centre, skin_mask).mask


# ---------------------------------------------------------------------------------------------------------
# Lesion looks: how each condition changes melanin, blood and the surface
# ---------------------------------------------------------------------------------------------------------

@dataclass
class _Look:
    melanin_add: np.ndarray  # added melanin volume fraction
    blood_gain: np.ndarray  # multiplies the dermal blood fraction
    height: np.ndarray  # surface height (image widths), for shading
    gloss: float = 0.0  # specular strength of the lesion surface
    layers: list = field(default_factory=list)  # [(linear RGB (3,), alpha (H, W))], composited in order


def _spots(rng, size, grid, threshold):
    """Random blotches in [0, 1]: where smooth noise of `grid` exceeds `threshold` (soft)."""
    return _smoothstep(threshold, threshold + 0.6, smooth_noise(rng, size, grid))


def _look(name: str, rng: np.random.Generator, shape: LesionShape, size: int, melanin: float) -> _Look:
    """The look of one lesion; `melanin` is the patient's melanin fraction (dark skin changes some looks)."""
    a = shape.alpha
    x, y = _grid(size)
    zeros = np.zeros((size, size))
    dark = _smoothstep(0.08, 0.3, melanin)  # 0 on light skin, 1 on dark skin
    mottle = smooth_noise(rng, size, 14)
    dome = np.sqrt(np.clip(shape.field, 0, 1)) * (shape.mask > 0)
    r = shape.diameter / 2

    if name == "nevus":
        # relative to the skin's own melanin (a nevus is darker than its surroundings on every skin)
        # plus a bit
        pigment = melanin * rng.uniform(0.5, 2.0) + rng.uniform(0.03, 0.2)
        if rng.random() < 0.15:  # intradermal nevus: raised, little pigment (overlap with BCC)
            pigment *= 0.25
            height = dome * r * 0.4
        else:
            height = dome * r * rng.uniform(0.0, 0.15)
        centre_weight = 1 + rng.uniform(-0.3, 0.3) * shape.field  # darker or lighter centre
        return _Look(a * pigment * centre_weight * (1 + 0.12 * mottle), 1 + a * rng.uniform(0.0, 0.5), height,
                     gloss=0.1)

    if name == "seborrheic_keratosis":
        pigment = rng.uniform(0.03, 0.45)
        verruca = smooth_noise(rng, size, 44)
        height = (dome * 0.5 + 0.5) * a * r * (0.12 + 0.05 * verruca)
        cysts = _spots(rng, size, 40, 1.4) * a  # horn pseudocysts: small pale dots
        crypts = _spots(rng, size, 36, 1.2) * a  # dark keratin plugs
        # greasy brown keratin and pale horn cysts; both darker on dark skin, where SK is dark brown to black
        tone = 1 - 0.8 * dark
        layers = [(np.array([0.42, 0.30, 0.16]) * tone, a * rng.uniform(0.1, 0.45)),
                  (np.array([0.75, 0.68, 0.52]) * (1 - 0.5 * dark), cysts * 0.6)]
        return _Look(a * pigment * (1 + 0.35 * mottle + 0.8 * crypts), 1 + 0.2 * a, height, gloss=0.45,
                     layers=layers)

    if name == "psoriasis":
        scale = (_spots(rng, size, 40, rng.uniform(-0.6, 0.8)) * (0.6 + 0.4 * _spots(rng, size, 12, -0.3))
                 * _smoothstep(0.0, 0.5, shape.field))
        return _Look(a * dark * rng.uniform(0.0, 0.12), 1 + a * rng.uniform(1.5, 5.0) * (1 + 0.2 * mottle),
                     a * r * 0.06, gloss=0.0,
                     layers=[(np.array([0.80, 0.80, 0.82]), scale * rng.uniform(0.25, 0.75))])

    if name == "eczema":
        patchy = np.clip(0.6 + 0.5 * mottle, 0, 1)
        crust = _spots(rng, size, 30, rng.uniform(0.8, 1.8)) * a
        scale = _spots(rng, size, 34, 1.0) * a
        return _Look(a * dark * rng.uniform(0.02, 0.15), 1 + a * patchy * rng.uniform(0.8, 3.2), a * r * 0.02,
                     layers=[(np.array([0.78, 0.76, 0.74]), scale * rng.uniform(0.0, 0.4)),
                             (np.array([0.55, 0.36, 0.12]), crust * rng.uniform(0.2, 0.8))])

    if name == "acne":
        gain = 1 + a * rng.uniform(1.5, 5.0)
        layers = []
        pus = np.zeros((size, size))
        for blob in shape.blobs:  # about a third of the papules are pustules with a yellow-white head
            if rng.random() < 0.35:
                d = np.hypot(x - blob.cx, y - blob.cy)
                pus = np.maximum(pus, _smoothstep(blob.radius * 0.5, blob.radius * 0.15, d))
        layers.append((np.array([0.82, 0.76, 0.52]), pus * (shape.mask > 0) * 0.8))
        pih = a * dark * rng.uniform(0.0, 0.15)  # post-inflammatory hyperpigmentation on dark skin
        return _Look(pih, gain, dome * 0.025, gloss=0.35, layers=layers)

    if name == "basal_cell_carcinoma":
        pale = -melanin * rng.uniform(0.1, 0.5) * a
        rim = a * _smoothstep(0.55, 0.15, shape.field)  # rolled, pearly border
        vessels = _vessels(rng, shape, size)
        pigmented = rng.random() < 0.15  # pigmented BCC: grey-brown dots (overlap with melanoma)
        melanin_add = pale + (_spots(rng, size, 22, 0.5) * a * rng.uniform(0.1, 0.4) if pigmented else 0.0)
        layers = [(np.array([0.74, 0.58, 0.58]), (0.1 + 0.3 * rim) * a * rng.uniform(0.3, 0.9))]
        if rng.random() < 0.3:  # central ulcer with a dark red crust
            layers.append((np.array([0.22, 0.06, 0.04]), _smoothstep(0.5, 0.8, shape.field) * 0.9))
        return _Look(melanin_add, 1 + a * rng.uniform(0.4, 2.0) + vessels * rng.uniform(4, 10),
                     dome * r * rng.uniform(0.2, 0.5), gloss=0.8, layers=layers)

    if name == "squamous_cell_carcinoma":
        keratin = _spots(rng, size, 18, rng.uniform(-0.8, 0.5)) * _smoothstep(0.1, 0.5, shape.field)
        blood_crust = _spots(rng, size, 22, 1.2) * a
        rough = smooth_noise(rng, size, 36)
        return _Look(a * dark * rng.uniform(0.0, 0.1), 1 + a * rng.uniform(1.0, 4.0),
                     dome * r * rng.uniform(0.2, 0.5) * (1 + 0.2 * rough), gloss=0.2,
                     layers=[(np.array([0.72, 0.62, 0.45]), keratin * rng.uniform(0.4, 0.95)),
                             (np.array([0.25, 0.08, 0.05]), blood_crust * rng.uniform(0.3, 0.9))])

    if name == "melanoma":
        if rng.random() < 0.1:  # amelanotic melanoma: pink, little pigment (overlap with BCC/SCC)
            return _Look(a * rng.uniform(0.0, 0.05), 1 + a * rng.uniform(1.0, 3.0), dome * r * 0.2, gloss=0.3)
        tilt = rng.uniform(-1, 1, 2)  # pigment piles up on one side: asymmetry of colour
        asym = 1 + 0.6 * ((x - shape.centre[0]) * tilt[0] + (y - shape.centre[1]) * tilt[1]) / max(r, 1e-3)
        base = rng.uniform(0.06, 0.3) * np.clip(asym, 0.3, 2.0) * (1 + 0.45 * mottle)
        black = _spots(rng, size, 12, rng.uniform(0.0, 1.0)) * a * rng.uniform(0.2, 0.6)
        blue = _spots(rng, size, 10, rng.uniform(0.0, 1.2)) * a * rng.uniform(0.2, 0.65)
        red = _spots(rng, size, 10, 0.8) * a
        white = _spots(rng, size, 12, 1.4) * a * rng.uniform(0.0, 0.5)  # regression
        return _Look(a * base + black, 1 + red * rng.uniform(0.5, 2.5), dome * r * rng.uniform(0.0, 0.2),
                     gloss=0.15,
                     layers=[(np.array([0.05, 0.07, 0.11]), blue), (np.array([0.62, 0.58, 0.56]), white)])

    raise ValueError(f"no look for condition {name!r}")


def _vessels(rng, shape: LesionShape, size: int) -> np.ndarray:
    """Telangiectasia: a few thin branching red lines over the lesion (coverage in [0, 1])."""
    n = int(rng.integers(2, 7))
    r = shape.diameter / 2
    angles = rng.uniform(0, 2 * np.pi, n)
    starts = np.array(shape.centre)[None, :] + (r * rng.uniform(-0.7, 0.7, (n, 2)))
    lengths, bends = r * rng.uniform(0.4, 1.0, n), rng.normal(0, 8 / max(r, 0.05), n)
    lines = _draw_curves(size, starts, angles, lengths, bends, np.full(n, 0.004))
    return lines * shape.alpha


# ---------------------------------------------------------------------------------------------------------
# Scene: illumination, body outline, background, texture, hair
# ---------------------------------------------------------------------------------------------------------

_BACKGROUNDS = np.array([[0.10, 0.22, 0.35], [0.12, 0.30, 0.22], [0.35, 0.35, 0.35], [0.60, 0.55, 0.45],
                         [0.02, 0.02, 0.025], [0.75, 0.75, 0.78]])  # drapes, grey, beige, black, white
_HAIR_COLOURS = np.array([[0.012, 0.010, 0.009], [0.035, 0.022, 0.014], [0.10, 0.06, 0.03],
                          [0.40, 0.29, 0.15], [0.30, 0.30, 0.30]])  # black, dark brown, brown, blond, grey


@dataclass
class _Scene:
    """Everything about the photograph except the lesion, drawn from (seed, index) only."""

    fitzpatrick_target: int
    ita_target: float
    melanin: float
    blood: float
    exposure: float
    white_balance: np.ndarray
    light_dir: np.ndarray
    centre: tuple[float, float]
    keep_out: float  # the body outline stays at least this far (image widths) from `centre`
    outline: dict | None
    hair: dict | None
    blur: float  # gaussian sigma in pixels at 64 px (scaled with the size)
    noise: float  # camera noise std, 8-bit levels
    jpeg_quality: int | None


def _draw_scene(rng: np.random.Generator, fitzpatrick: int | None) -> _Scene:
    if fitzpatrick is None:
        fitzpatrick = int(rng.choice(6, p=FITZPATRICK_SHARES)) + 1
    elif fitzpatrick not in range(1, 7):
        raise ValueError(f"Fitzpatrick type must be 1..6, got {fitzpatrick!r}")
    else:
        rng.choice(6, p=FITZPATRICK_SHARES)  # keep the stream aligned with the unconstrained case
    ita = float(rng.uniform(*_ITA_TARGETS[fitzpatrick]))
    blood = float(np.exp(rng.uniform(np.log(0.004), np.log(0.02))))
    exposure = float(rng.uniform(0.85, 1.15))
    white_balance = 1 + rng.uniform(-0.04, 0.04, 3)
    white_balance /= white_balance.mean()
    melanin = melanin_for_ita(ita, blood, exposure * 0.97)
    light = rng.normal(size=2)
    light_dir = light / max(np.linalg.norm(light), 1e-6)
    centre = tuple(0.5 + rng.uniform(-0.15, 0.15, 2))
    keep_out = float(rng.uniform(0.2, 0.4))
    outline = None
    if rng.random() < 0.35:
        outline = {"normal_angle": float(rng.uniform(0, 2 * np.pi)), "bend": float(rng.uniform(-2.5, 2.5)),
                   "background": int(rng.integers(len(_BACKGROUNDS))), "wobble": float(rng.uniform(0, 0.03))}
    hair = None
    hair_chance = 0.6 if fitzpatrick >= 5 else 0.45
    if rng.random() < hair_chance:
        colour_p = [0.5, 0.3, 0.1, 0.0, 0.1] if fitzpatrick >= 4 else [0.2, 0.3, 0.25, 0.15, 0.1]
        hair = {"count": int(rng.integers(3, 60)), "colour": int(rng.choice(len(_HAIR_COLOURS), p=colour_p)),
                "flow": float(rng.uniform(0, 2 * np.pi))}
    blur = float(rng.uniform(0.0, 0.7))
    noise = float(rng.uniform(0.8, 4.0))
    jpeg_quality = int(rng.integers(55, 96)) if rng.random() < 0.75 else None
    return _Scene(fitzpatrick, ita, melanin, blood, exposure, white_balance, light_dir, centre, keep_out,
                  outline, hair, blur, noise, jpeg_quality)


def _body(scene: _Scene, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(skin coverage in [0, 1], depth below the body edge in image widths); all skin without an outline."""
    wobble = smooth_noise(rng, size, 4)  # drawn always: keeps the stream the same with or without outline
    if scene.outline is None:
        return np.ones((size, size)), np.full((size, size), 1.0)
    x, y = _grid(size)
    o = scene.outline
    nx, ny = math.cos(o["normal_angle"]), math.sin(o["normal_angle"])
    dx, dy = x - scene.centre[0], y - scene.centre[1]
    along = -dx * ny + dy * nx
    # signed depth inside the body: the edge passes `keep_out` from the lesion centre, bent into an arc
    depth = dx * nx + dy * ny + scene.keep_out - 0.5 * o["bend"] * along ** 2 + o["wobble"] * wobble
    coverage = _smoothstep(-0.6 / size, 0.6 / size, depth)
    return coverage, depth


def _illumination(scene: _Scene, size: int, depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure x smooth gradient x soft light blob x darkening towards the body edge (a curved surface)."""
    x, y = _grid(size)
    g = rng.uniform(-0.25, 0.25, 2)
    blob_at = rng.uniform(0.1, 0.9, 2)
    blob = rng.uniform(0.0, 0.25) * np.exp(-((x - blob_at[0]) ** 2 + (y - blob_at[1]) ** 2) / 0.15)
    low = 0.08 * smooth_noise(rng, size, 2)
    gain = (1 + g[0] * (x - 0.5) + g[1] * (y - 0.5)) * (1 + blob) * (1 + low)
    edge = 1.0 - 0.45 * np.exp(-np.maximum(depth, 0) / 0.08) if scene.outline is not None else 1.0
    return scene.exposure * gain * edge


def _texture(scene: _Scene, size: int, rng: np.random.Generator):
    """Melanin and blood maps of the healthy skin, and a multiplicative surface relief (pores, creases)."""
    melanin = scene.melanin * np.exp(0.12 * fractal_noise(rng, size))
    if scene.fitzpatrick_target <= 2 and rng.random() < 0.4:  # freckles on light skin
        freckles = _spots(rng, size, 30, 1.6) * rng.uniform(0.01, 0.04)
    else:
        freckles = 0.0 * smooth_noise(rng, size, 30)
    melanin = melanin + freckles
    blood = scene.blood * np.exp(0.22 * fractal_noise(rng, size, grids=(4, 8, 16)))
    # creases: two families of thin lines, warped by smooth noise (the rhomboid pattern of skin lines)
    x, y = _grid(size)
    relief = np.ones((size, size))
    for _ in range(2):
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(0.05, 0.14)
        strength = rng.uniform(0.02, 0.09)
        warp = smooth_noise(rng, size, 5)
        phase = (x * math.cos(angle) + y * math.sin(angle)) / period + 0.6 * warp
        line = np.clip((np.cos(2 * np.pi * phase) - 0.8) / 0.2, 0, 1) ** 2
        relief *= 1 - strength * line
    # pores: ~1600 per image area whatever the resolution; sub-pixel ones only add a faint mottling
    lam = 1600.0 / size ** 2
    pores = ndimage.gaussian_filter(rng.poisson(lam, (size, size)).astype(np.float64), max(0.5, 0.002 * size))
    relief *= 1 - np.minimum(0.3, pores * 0.025 / lam)
    return melanin, blood, relief


def _hair(scene: _Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    if scene.hair is None:
        return np.zeros((size, size))
    n = scene.hair["count"]
    starts = rng.uniform(-0.2, 1.2, (n, 2))
    angles = scene.hair["flow"] + rng.normal(0, 0.5, n)
    lengths = rng.uniform(0.15, 0.7, n)
    bends = rng.normal(0, 2.5, n)
    widths = rng.uniform(0.003, 0.009, n)
    return _draw_curves(size, starts, angles, lengths, bends, widths)


def _shading(height: np.ndarray, light_dir: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Lambert-like shading factor and a specular term from a height map (image widths)."""
    gy, gx = np.gradient(height * size)  # slope in (width units / width units)
    slope = gx * light_dir[0] + gy * light_dir[1]  # > 0: the surface tilts away from the light
    shade = np.clip(1 - 1.5 * slope, 0.4, 1.6)
    specular = np.clip(-slope, 0, None) ** 1.5
    return shade, specular


# ---------------------------------------------------------------------------------------------------------
# Camera and the whole image
# ---------------------------------------------------------------------------------------------------------

def _camera(linear: np.ndarray, scene: _Scene, size: int, noise: np.ndarray) -> np.ndarray:
    """Linear RGB -> the uint8 photo: gamma, defocus blur, sensor noise, quantisation, JPEG round trip."""
    srgb = linear_to_srgb(linear)
    sigma = scene.blur * size / 64
    if sigma > 0.05:
        srgb = ndimage.gaussian_filter(srgb, sigma=(sigma, sigma, 0), mode="reflect", truncate=4.0)
    out = np.clip(np.rint(srgb * 255.0 + noise), 0, 255).astype(np.uint8)
    if scene.jpeg_quality is not None:
        buffer = io.BytesIO()
        # 4:4:4 (no chroma subsampling): every 8x8 block is coded on its own, so the lesion changes no pixel
        # further than a block from it and the healthy twin stays identical away from the lesion
        Image.fromarray(out).save(buffer, format="JPEG", quality=scene.jpeg_quality, subsampling=0)
        buffer.seek(0)
        out = np.array(Image.open(buffer).convert("RGB"))
    return out


def blur_radius(scene_blur: float, size: int) -> int:
    """How far (px) the defocus blur spreads a pixel at this size (gaussian truncated at 4 sigma)."""
    sigma = scene_blur * size / 64
    return int(4.0 * sigma + 0.5) if sigma > 0.05 else 0


@dataclass
class SynthSample:
    """One rendered photograph and what is known about it."""

    image: np.ndarray  # uint8 (H, W, 3)
    healthy: np.ndarray  # uint8 (H, W, 3): the same photo without the lesion
    lesion_mask: np.ndarray  # uint8 (H, W) in {0, 1}
    skin_mask: np.ndarray  # uint8 (H, W) in {0, 1}
    record: dict  # table fields (RECORD_COLUMNS except image_id/split/patient/lesion ids) + render details


def render_sample(condition: str | int, fitzpatrick: int | None = None, size: int = 64, seed: int = 0,
                  index: int = 0, diameter: float | None = None, centre: tuple[float, float] | None = None,
                  hair: bool | None = None, outline: bool | None = None) -> SynthSample:
    """Render one photograph with chosen properties; None means "drawn as in the dataset".

    condition: name or class index. fitzpatrick: 1..6; the recorded type is always the band the rendered
    skin's ITA falls into, and where texture and light pushed it over a band edge the melanin is re-aimed (up
    to three times) until it is the requested one. diameter: lesion size
    in image widths. centre: (x, y) in image widths. hair / outline: force hair / a body outline on or off.
    The skin depends only on (seed, index, fitzpatrick, hair, outline): another condition gives the same skin.
    """
    size = check_size(size)
    if isinstance(condition, np.integer):
        condition = int(condition)
    name = CONDITION_NAMES[condition_index(condition)]
    scene = _draw_scene(np.random.default_rng([seed, index, 0]), fitzpatrick)
    if centre is not None:
        scene.centre = (float(centre[0]), float(centre[1]))
    if hair is False:
        scene.hair = None
    elif hair is True and scene.hair is None:
        scene.hair = {"count": 30, "colour": 1, "flow": 0.7}
    if outline is False:
        scene.outline = None
    elif outline is True and scene.outline is None:
        scene.outline = {"normal_angle": 0.8, "bend": 1.0, "background": 0, "wobble": 0.01}
    sample = _render(scene, name, size, seed, index, diameter)
    # a requested type is honoured: where texture and light pushed the skin over a band edge, aim again
    for _ in range(3):
        if fitzpatrick is None or sample.record["fitzpatrick"] == fitzpatrick:
            break
        lo, hi = _ITA_TARGETS[fitzpatrick]
        scene.ita_target += (lo + hi) / 2 - sample.record["ita"]
        scene.melanin = melanin_for_ita(scene.ita_target, scene.blood, scene.exposure * 0.97)
        sample = _render(scene, name, size, seed, index, diameter)
    return sample


def _render(scene: _Scene, name: str, size: int, seed: int, index: int,
            diameter: float | None) -> SynthSample:
    skin_rng = np.random.default_rng([seed, index, 1])
    lesion_rng = np.random.default_rng([seed, index, 2])

    # healthy skin and scene
    coverage, depth = _body(scene, size, skin_rng)
    skin_mask = coverage > 0.5
    gain = _illumination(scene, size, depth, skin_rng)
    melanin, blood, relief = _texture(scene, size, skin_rng)
    hair_alpha = _hair(scene, size, skin_rng) * coverage  # hair grows on the body, not on the drape behind it
    x, y = _grid(size)
    background = np.zeros((size, size, 3))
    if scene.outline is not None:
        colour = _BACKGROUNDS[scene.outline["background"]]
        background = colour * (0.8 + 0.2 * smooth_noise(skin_rng, size, 3)[..., None] * 0.5
                               + 0.15 * (y[..., None] - 0.5))
    light_x, light_y = 0.5 + 0.3 * scene.light_dir[0], 0.5 + 0.3 * scene.light_dir[1]
    sheen = 0.04 * np.exp(-((x - light_x) ** 2 + (y - light_y) ** 2) / 0.1) \
        * (0.6 + 0.4 * smooth_noise(skin_rng, size, 8))
    camera_noise = scene.noise * (0.7 * skin_rng.standard_normal((size, size, 1))
                                  + 0.5 * skin_rng.standard_normal((size, size, 3)))

    # light falling on each pixel, and what the surface adds regardless of its colour (sheen); flattened
    # so that
    # the lesion twin is recomputed only on its own pixels
    n_pix = size * size
    light = (gain[..., None] * scene.white_balance).reshape(n_pix, 3)
    sheen_light = (sheen * gain).reshape(n_pix, 1)
    cover = coverage.reshape(n_pix, 1)
    behind = (1 - cover) * (background * scene.white_balance).reshape(n_pix, 3)
    hair_a = hair_alpha.reshape(n_pix, 1)
    hair_colour = _HAIR_COLOURS[scene.hair["colour"]] if scene.hair is not None else np.zeros(3)

    def finish(skin_linear, pixels, extra=0.0):
        """Skin reflectance of `pixels` (flat indices) -> linear camera RGB with background and hair."""
        rgb = skin_linear * light[pixels] + sheen_light[pixels] + extra
        rgb = cover[pixels] * rgb + behind[pixels]
        return (1 - hair_a[pixels]) * rgb + hair_a[pixels] * hair_colour * light[pixels]

    everywhere = slice(None)
    healthy_linear = (skin_reflectance_fast(melanin, blood) * relief[..., None]).reshape(n_pix, 3)
    healthy_rgb = finish(healthy_linear, everywhere)
    healthy = _camera(healthy_rgb.reshape(size, size, 3), scene, size, camera_noise)

    # lesion
    if diameter is None:
        diameter = float(lesion_rng.uniform(*DIAMETER_RANGE[name]))
    else:
        lesion_rng.uniform()  # keep the stream aligned
    if scene.outline is not None:
        diameter = min(diameter, 2 * scene.keep_out * 0.9)  # the lesion stays on the body
    shape = lesion_shape_full(lesion_rng, size, name, diameter, scene.centre, skin_mask)
    look = _look(name, lesion_rng, shape, size, scene.melanin)
    pixels = np.flatnonzero(shape.mask)
    shade_full, specular_full = _shading(look.height, scene.light_dir, size)
    shade = shade_full.reshape(-1)[pixels, None]
    lesion_melanin = np.maximum(melanin.reshape(-1)[pixels] + np.broadcast_to(look.melanin_add, melanin.shape)
                                .reshape(-1)[pixels], 0.002)
    lesion_blood = np.clip(blood.reshape(-1)[pixels] * np.broadcast_to(look.blood_gain, blood.shape)
                           .reshape(-1)[pixels], 0, 0.5)
    lesion_linear = skin_reflectance_fast(lesion_melanin, lesion_blood) * relief.reshape(-1)[pixels, None]
    lesion_linear = lesion_linear * shade
    for colour, alpha in look.layers:
        alpha = np.clip(np.broadcast_to(alpha, melanin.shape).reshape(-1)[pixels], 0, 1)[:, None]
        lesion_linear = (1 - alpha) * lesion_linear + alpha * colour * shade
    specular = (look.gloss * 0.25 * specular_full * shape.alpha).reshape(-1)[pixels, None]
    image_rgb = healthy_rgb.copy()
    image_rgb[pixels] = finish(lesion_linear, pixels, specular * gain.reshape(-1)[pixels, None])
    image = _camera(image_rgb.reshape(size, size, 3), scene, size, camera_noise)

    return SynthSample(image, healthy, shape.mask, skin_mask.astype(np.uint8),
                       _record(name, scene, shape, healthy, skin_mask, hair_alpha, size, diameter))


def _record(name, scene, shape, healthy, skin_mask, hair_alpha, size, diameter) -> dict:
    """Table fields: the skin colour is the mean of the healthy photo over hairless skin."""
    clean = skin_mask & (hair_alpha < 0.05)
    if clean.sum() < 0.1 * skin_mask.sum():
        clean = skin_mask
    skin_rgb = healthy[clean].astype(np.float64).mean(axis=0)
    ita = float(ita_from_rgb(skin_rgb))
    rows, cols = np.nonzero(shape.mask)
    condition = CONDITIONS[condition_index(name)]
    return {
        "condition": name,
        "label": condition_index(name),
        "malignant": condition.malignant,
        "fitzpatrick": int(fitzpatrick_from_ita(ita)),
        "ita": ita,
        "lesion_area": float(shape.mask.mean()),
        "centroid_x": float(cols.mean() / size),
        "centroid_y": float(rows.mean() / size),
        "skin_r": float(skin_rgb[0]), "skin_g": float(skin_rgb[1]), "skin_b": float(skin_rgb[2]),
        # render details (extra columns)
        "fitzpatrick_target": scene.fitzpatrick_target,
        "melanin_fraction": scene.melanin,
        "blood_fraction": scene.blood,
        "diameter": float(diameter),
        "has_hair": scene.hair is not None,
        "has_outline": scene.outline is not None,
        "blur_px": blur_radius(scene.blur, size),
        "jpeg_quality": scene.jpeg_quality if scene.jpeg_quality is not None else 0,
    }


# ---------------------------------------------------------------------------------------------------------
# Many images
# ---------------------------------------------------------------------------------------------------------

def class_counts(n_images: int, prevalences=None) -> np.ndarray:
    """Images per condition for a dataset of n_images: largest-remainder rounding of the prevalences."""
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 1:
        raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
    shares = np.asarray(prevalences if prevalences is not None else [c.prevalence for c in CONDITIONS], float)
    shares = shares / shares.sum()
    exact = shares * n_images
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n_images - counts.sum()]] += 1
    return counts


def dataset_conditions(n_images: int, seed: int) -> np.ndarray:
    """Class index of every image of the synthetic dataset: counts from `class_counts`, shuffled by seed."""
    labels = np.repeat(np.arange(len(CONDITIONS)), class_counts(n_images))
    return np.random.default_rng([seed, 2**31 - 1]).permutation(labels)


def _render_chunk(args) -> dict:
    indices, conditions, size, seed = args
    return render_images(indices, conditions, size, seed, workers=1)


def render_images(indices, conditions, size: int = 64, seed: int = 0, workers: int | None = None,
                  progress=None) -> dict:
    """Render images `indices` (ints) with the given conditions (names or indices), as stacked arrays.

    Returns {"images", "healthy": uint8 (N,H,W,3), "lesion_masks", "skin_masks": uint8 (N,H,W),
    "records": list}.
    Image i depends only on (seed, indices[i], conditions[i], size), so splitting the work over `workers`
    processes (default: up to 2 for 256 images or more) gives the same bytes. `progress` wraps the iteration
    (a tqdm-like callable; over the images, or over the workers' chunks with total=).
    """
    size = check_size(size)
    indices = [int(i) for i in indices]
    # numpy integers are class indices too (conditions.condition_index only takes int or str)
    conditions = [int(c) if isinstance(c, np.integer) else c for c in conditions]
    if len(indices) != len(conditions):
        raise ValueError(f"{len(indices)} indices but {len(conditions)} conditions")
    n = len(indices)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if n >= 256 else 1
    out = {"images": np.empty((n, size, size, 3), np.uint8),
           "healthy": np.empty((n, size, size, 3), np.uint8),
           "lesion_masks": np.empty((n, size, size), np.uint8),
           "skin_masks": np.empty((n, size, size), np.uint8), "records": []}
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork where there is one: children only run numpy/scipy/PIL code
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        bounds = np.linspace(0, n, workers * 4 + 1).astype(int)
        chunks = [(indices[a:b], conditions[a:b], size, seed)
                  for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
            done = 0
            parts = pool.map(_render_chunk, chunks)
            for part in parts if progress is None else progress(parts, total=len(chunks)):
                m = len(part["records"])
                for key in ("images", "healthy", "lesion_masks", "skin_masks"):
                    out[key][done:done + m] = part[key]
                out["records"].extend(part["records"])
                done += m
        return out
    iterator = range(n) if progress is None else progress(range(n))
    for k in iterator:
        sample = render_sample(conditions[k], size=size, seed=seed, index=indices[k])
        out["images"][k], out["healthy"][k] = sample.image, sample.healthy
        out["lesion_masks"][k], out["skin_masks"][k] = sample.lesion_mask, sample.skin_mask
        out["records"].append(sample.record)
    return out


def records_frame(records: list[dict]) -> pd.DataFrame:
    """The records of `render_images` as a typed table."""
    table = pd.DataFrame.from_records(records)
    table["fitzpatrick"] = table["fitzpatrick"].astype("Int64")
    return table
