"""DermGAN's input: a semantic map that sets a lesion's condition, size, location and the skin colour.

A map is kept as an integer *label image* plus one skin colour, and encoded into model input on demand:

    label -1  background (not skin)        -> black / zeros
    label  0  healthy skin                 -> the image's mean healthy-skin colour
    label c+1 lesion of condition c        -> its condition's fixed colour ("colour") / channel ("onehot")

Encodings (both float32 NCHW in [-1, 1], CONVENTIONS.md):
- "colour" (DermGAN paper, 3 channels): an RGB picture, background black, skin in the skin colour, lesions in
  `conditions.CONDITIONS[c].map_colour`.
- "onehot" (3 + n_conditions + 1 channels): the skin colour on all skin pixels (lesions included: it is the
  colour of the skin *under* the lesion), then one {0, 1} channel per condition, then a healthy-skin channel.
  The last n_conditions + 1 channels are one-hot on skin (they sum to 1 there) and all zero off skin; their
  sum is the skin mask. Off skin every channel is 0.

Editing goes through `SemanticMap` (immutable: every edit returns a new map), so a notebook can place lesions
of a chosen condition, size (area fraction of the image) and position on skin of a chosen RGB colour or
Fitzpatrick type, several lesions per map, and re-tone an existing map.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from dermgan.data.conditions import CONDITION_NAMES, CONDITIONS, N_CONDITIONS, condition_number
from dermgan.imageops import to_model

ENCODINGS = ("colour", "onehot")
BACKGROUND, HEALTHY = -1, 0

# Representative healthy-skin colours per Fitzpatrick type I..VI (RGB 0..255), light to dark. Used only when
# the dataset renderer (dermgan.data.synth) does not provide its own; see `fitzpatrick_colour`.
_FALLBACK_FITZPATRICK_RGB = {
    1: (244, 214, 194),
    2: (230, 190, 160),
    3: (208, 160, 124),
    4: (172, 122, 88),
    5: (128, 84, 58),
    6: (84, 56, 40),
}

PALETTE = np.array([c.map_colour for c in CONDITIONS], dtype=np.float32)  # (n_conditions, 3)


def class_palette(n_conditions: int) -> np.ndarray:
    """Lesion colours (n_conditions, 3) float 0..255 of the colour-coded map, for any number of classes.

    The catalogue's colours come first, so synthetic maps and real datasets of up to 8 classes look as
    before. Further classes (Fitzpatrick17k has 114) get saturated colours (skin is not saturated) from an
    RGB grid, then from finer grids once a grid is used up, so a class keeps its colour whatever the class
    count. Grid points stay at least 2 units apart, which `decode_maps` needs.
    """
    if isinstance(n_conditions, bool) or not isinstance(n_conditions, (int, np.integer)) or n_conditions < 1:
        raise ValueError(f"the number of classes must be a positive integer, got {n_conditions!r}")
    colours = [tuple(c) for c in PALETTE.astype(int)]
    levels = 5
    while len(colours) < n_conditions:
        grid = np.round(np.stack(np.meshgrid(*[np.linspace(0, 255, levels)] * 3, indexing="ij"), -1))
        grid = grid.reshape(-1, 3).astype(int)
        spread = grid.max(axis=1) - grid.min(axis=1)
        order = np.lexsort((grid[:, 2], grid[:, 1], grid[:, 0], -spread))  # most saturated first
        taken = set(colours)
        colours += [tuple(c) for c in grid[order] if c.max() - c.min() >= 128 and tuple(c) not in taken]
        levels = 2 * levels - 1  # a finer grid through the old points
    return np.asarray(colours[:n_conditions], np.float32)


def _check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown semantic-map encoding {encoding!r}; use one of {ENCODINGS}")


def n_channels(encoding: str, n_conditions: int = N_CONDITIONS) -> int:
    """Channels of a map in the given encoding."""
    _check_encoding(encoding)
    return 3 if encoding == "colour" else 3 + n_conditions + 1


def fitzpatrick_colour(fitzpatrick: int) -> np.ndarray:
    """A representative healthy-skin RGB colour (float 0..255) for Fitzpatrick type 1..6.

    Prefers the dataset renderer's own colour per type (so edited maps look like the training maps) and falls
    back to a fixed table while that renderer does not exist or exposes no such function.
    """
    if not 1 <= int(fitzpatrick) <= 6:
        raise ValueError(f"Fitzpatrick type must be 1..6, got {fitzpatrick!r}")
    try:
        from dermgan.data import synth  # written by the data engineer; optional here

        colour_fn = getattr(synth, "fitzpatrick_rgb", None) or getattr(synth, "skin_colour", None)
        if callable(colour_fn):
            return np.asarray(colour_fn(int(fitzpatrick)), dtype=np.float32).reshape(3)
    except ImportError:
        pass
    return np.asarray(_FALLBACK_FITZPATRICK_RGB[int(fitzpatrick)], dtype=np.float32)


def fitzpatrick_palette(table: pd.DataFrame) -> dict[int, np.ndarray]:
    """Median healthy-skin colour (RGB float 0..255) per Fitzpatrick type present in a record table.

    Preferred over the fixed table when a dataset is at hand: edited maps then carry colours the generator saw
    in training.
    """
    known = table.dropna(subset=["fitzpatrick", "skin_r", "skin_g", "skin_b"])
    if known.empty:
        raise ValueError("the table has no row with both a Fitzpatrick type and skin_r/g/b")
    palette = {}
    for fitz, rows in known.groupby(known["fitzpatrick"].astype(int)):
        palette[int(fitz)] = rows[["skin_r", "skin_g", "skin_b"]].astype(float).median().to_numpy(np.float32)
    return palette


def _skin_rgb(skin) -> np.ndarray:
    """An RGB colour (3 floats 0..255) or a Fitzpatrick type (int 1..6) -> float32 (3,)."""
    if np.ndim(skin) == 0:
        return fitzpatrick_colour(int(skin))
    colour = np.asarray(skin, dtype=np.float32).reshape(-1)
    if colour.shape != (3,) or not np.all((colour >= 0) & (colour <= 255)):
        raise ValueError(f"skin colour must be 3 values in 0..255 or a Fitzpatrick type 1..6, got {skin!r}")
    return colour


# ----------------------------------------------------------------------------------------------------------
# Vectorised encoding of label images


def encode_labels(
    labels: np.ndarray, skin_colours: np.ndarray, encoding: str = "colour", n_conditions: int = N_CONDITIONS
) -> np.ndarray:
    """Label images (N,H,W) int + skin colours (N,3) 0..255 -> float32 maps (N,C,H,W) in [-1, 1]."""
    _check_encoding(encoding)
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be (N,H,W), got shape {labels.shape}")
    skin_colours = np.asarray(skin_colours, dtype=np.float32).reshape(len(labels), 3)
    if labels.min(initial=0) < BACKGROUND or labels.max(initial=0) > n_conditions:
        raise ValueError(f"labels must lie in -1..{n_conditions}, got {labels.min()}..{labels.max()}")
    skin = labels >= HEALTHY
    colour_model = skin_colours / 127.5 - 1.0  # (N,3) in [-1, 1]
    if encoding == "colour":
        palette = np.concatenate([np.zeros((1, 3), np.float32), class_palette(n_conditions)]) / 127.5 - 1.0
        rgb = palette[np.clip(labels, 0, None)]  # lesion colours; label 0 rows are overwritten below
        rgb = np.where((labels == HEALTHY)[..., None], colour_model[:, None, None, :], rgb)
        rgb = np.where(skin[..., None], rgb, -1.0)  # black background
        return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2), dtype=np.float32)
    n, h, w = labels.shape
    out = np.zeros((n, 3 + n_conditions + 1, h, w), np.float32)
    out[:, :3] = np.where(skin[:, None], colour_model[:, :, None, None], 0.0)
    for c in range(n_conditions):
        out[:, 3 + c] = labels == c + 1
    out[:, -1] = labels == HEALTHY
    return out


def decode_maps(
    maps: torch.Tensor | np.ndarray, encoding: str = "colour", n_conditions: int = N_CONDITIONS
) -> tuple[np.ndarray, np.ndarray]:
    """Maps (N,C,H,W) in [-1,1] -> (labels (N,H,W) int16, skin colours (N,3) float 0..255).

    The inverse of `encode_labels` for maps it produced (a colour map is read by exact colour matching, which
    works because condition colours are far from every skin tone and from black).
    """
    _check_encoding(encoding)
    x = torch.as_tensor(maps).detach().float().cpu().numpy()
    if x.ndim != 4 or x.shape[1] != n_channels(encoding, n_conditions):
        raise ValueError(
            f"{encoding} maps must be (N,{n_channels(encoding, n_conditions)},H,W), got {x.shape}"
        )
    n = len(x)
    labels = np.full(x.shape[:1] + x.shape[2:], HEALTHY, np.int16)
    if encoding == "colour":
        rgb = (x + 1.0) * 127.5
        tol = 1.0  # 0..255 units
        labels[np.all(np.abs(rgb) < tol, axis=1)] = BACKGROUND
        for c, colour in enumerate(class_palette(n_conditions)):
            labels[np.all(np.abs(rgb - colour[None, :, None, None]) < tol, axis=1)] = c + 1
    else:
        onehot = x[:, 3:]
        labels[onehot.sum(axis=1) < 0.5] = BACKGROUND
        lesion = onehot[:, :n_conditions].argmax(axis=1) + 1
        is_lesion = onehot[:, :n_conditions].max(axis=1) > 0.5
        labels[is_lesion] = lesion[is_lesion]
        rgb = (x[:, :3] + 1.0) * 127.5
    colours = np.zeros((n, 3), np.float32)
    for i in range(n):
        where = labels[i] == HEALTHY if encoding == "colour" else labels[i] >= HEALTHY
        if where.any():
            colours[i] = rgb[i][:, where].mean(axis=1)
    return labels, colours


def render_maps(
    maps: torch.Tensor | np.ndarray, encoding: str = "colour", n_conditions: int = N_CONDITIONS
) -> np.ndarray:
    """Any map (N,C,H,W) in [-1,1] -> uint8 RGB (N,H,W,3) for figures: the colour-coded picture."""
    labels, colours = decode_maps(maps, encoding, n_conditions)
    return colour_picture(labels, colours, n_conditions)


def colour_picture(labels: np.ndarray, colours: np.ndarray, n_conditions: int = N_CONDITIONS) -> np.ndarray:
    """Label images + skin colours -> uint8 (N,H,W,3) colour-coded maps."""
    coloured = encode_labels(labels, colours, "colour", n_conditions)
    return np.clip(np.round((coloured.transpose(0, 2, 3, 1) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def change_tone(
    maps: torch.Tensor, skin, encoding: str = "colour", n_conditions: int = N_CONDITIONS
) -> torch.Tensor:
    """The same maps with every skin pixel re-coloured to `skin` (RGB 0..255 or Fitzpatrick 1..6); lesions,
    their conditions and the background are kept."""
    labels, _ = decode_maps(maps, encoding, n_conditions)
    colours = np.tile(_skin_rgb(skin), (len(labels), 1))
    encoded = encode_labels(labels, colours, encoding, n_conditions)
    return torch.from_numpy(encoded).to(torch.as_tensor(maps).device)


# ----------------------------------------------------------------------------------------------------------
# Lesion shapes


def _rasterise_blob(h: int, w: int, cx: float, cy: float, radius: float, harmonics: np.ndarray) -> np.ndarray:
    """Pixel centres inside the polar blob r(theta) = radius (1 + sum_k a_k cos(k theta + phi_k))."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    dx, dy = xx - cx, yy - cy
    theta, dist = np.arctan2(dy, dx), np.hypot(dx, dy)
    wobble = np.ones_like(theta)
    for k, (amp, phase) in enumerate(harmonics, start=2):
        wobble += amp * np.cos(k * theta + phase)
    return dist <= radius * wobble


def blob_mask(
    h: int,
    w: int,
    area: float,
    x: float,
    y: float,
    seed: int = 0,
    irregularity: float = 0.15,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """A lesion-like blob (bool (H,W)) covering `area` of the image, centred on (x, y) in [0, 1] image units.

    The shape is a circle with a few random low harmonics (k >= 2, so the wobble does not move the centre).
    Radius and centre are corrected once after rasterising, so the pixel area and the centroid match the
    request closely even for small blobs, as long as the blob fits on the image (and on `allowed`, which
    clips it, e.g. the skin mask).
    """
    if not 0.0 < area < 1.0:
        raise ValueError(f"lesion size is an area fraction in (0, 1), got {area!r}")
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ValueError(f"lesion position (x, y) must lie in [0, 1], got ({x!r}, {y!r})")
    rng = np.random.default_rng(seed)
    harmonics = np.stack([rng.uniform(0, irregularity, 3) / np.arange(1, 4), rng.uniform(0, 2 * np.pi, 3)], 1)
    target_px, cx, cy = area * h * w, x * w, y * h
    # Area of the polar blob is pi r^2 (1 + sum a_k^2 / 2); start from that and correct on pixels.
    radius = np.sqrt(target_px / (np.pi * (1 + 0.5 * np.sum(harmonics[:, 0] ** 2))))
    ccx, ccy = cx, cy
    for _ in range(3):
        mask = _rasterise_blob(h, w, ccx, ccy, radius, harmonics)
        if allowed is not None:
            mask &= allowed.astype(bool)
        got = mask.sum()
        if got == 0:
            radius *= 1.5
            continue
        yy, xx = np.nonzero(mask)
        ccx += cx - (xx.mean() + 0.5)
        ccy += cy - (yy.mean() + 0.5)
        radius *= np.sqrt(target_px / got)
    mask = _rasterise_blob(h, w, ccx, ccy, radius, harmonics)
    if allowed is not None:
        mask &= allowed.astype(bool)
    if not mask.any():
        raise ValueError(f"a lesion of area {area} at ({x}, {y}) covers no skin pixel")
    return mask


def lesion_shape(
    h: int,
    w: int,
    area: float,
    x: float,
    y: float,
    condition: int | str = 0,
    seed: int = 0,
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """A lesion mask (bool (H,W)) of `area` (fraction of the image) centred on (x, y) for the editing API.

    Uses the dataset renderer's shape generator (`dermgan.data.synth.lesion_shape`, with the condition's shape
    style: irregular melanoma, scattered acne papules, ...) when it is available and the image is square;
    its size parameter is a diameter, so the diameter is rescaled and the centre shifted until the pixel area
    and the centroid match the request. Falls back to `blob_mask` otherwise.
    """
    if not 0.0 < area < 1.0:
        raise ValueError(f"lesion size is an area fraction in (0, 1), got {area!r}")
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ValueError(f"lesion position (x, y) must lie in [0, 1], got ({x!r}, {y!r})")
    try:
        from dermgan.data import synth

        shape_fn = getattr(synth, "lesion_shape", None)
    except ImportError:
        shape_fn = None
    if shape_fn is None or h != w or h < getattr(synth, "MIN_SIZE", 0):
        return blob_mask(h, w, area, x, y, seed=seed, allowed=allowed)
    diameter, centre = float(np.sqrt(4 * area / np.pi)), np.array([x, y], dtype=np.float64)
    target = area * h * w
    mask = None
    for _ in range(6):
        # Same seed each time: the same shape, only scaled and shifted.
        mask = np.asarray(
            shape_fn(
                np.random.default_rng(seed),
                h,
                condition,
                diameter=min(diameter, 1.5),
                centre=tuple(centre),
                skin_mask=allowed,
            ),
            dtype=bool,
        )
        got = mask.sum()
        if got == 0:
            diameter *= 1.5
            continue
        yy, xx = np.nonzero(mask)
        centre += np.array([x - (xx.mean() + 0.5) / w, y - (yy.mean() + 0.5) / h])
        centre = np.clip(centre, -0.5, 1.5)
        diameter *= float(np.sqrt(target / got))
    if mask is None or not mask.any():
        raise ValueError(f"a lesion of area {area} at ({x}, {y}) covers no skin pixel")
    if abs(mask.mean() - area) > 0.15 * area:
        # Scattered conditions (acne papules) or lesions clipped by the border / skin cannot cover any area.
        warnings.warn(
            f"lesion of condition {condition!r} at ({x}, {y}) covers {mask.mean():.3f} of the image, "
            f"not the requested {area:.3f} (shape style, image border or skin mask limit it)"
        )
    return mask


# ----------------------------------------------------------------------------------------------------------
# One editable map


@dataclass(frozen=True)
class SemanticMap:
    """One semantic map: a label image (H,W) (-1 background, 0 healthy skin, c+1 lesion of condition c), the
    skin colour (RGB float 0..255) and the class list the generator was trained on (default: the synthetic
    catalogue; a real dataset's `SkinData.classes` for a generator trained on it). Edits return new maps."""

    labels: np.ndarray
    skin_colour: np.ndarray
    classes: tuple[str, ...] = CONDITION_NAMES

    def __post_init__(self):
        labels = np.asarray(self.labels, dtype=np.int16)
        if labels.ndim != 2:
            raise ValueError(f"labels must be (H,W), got shape {labels.shape}")
        classes = tuple(str(c) for c in self.classes)
        if not classes:
            raise ValueError("a semantic map needs at least one class")
        if labels.min(initial=0) < BACKGROUND or labels.max(initial=0) > len(classes):
            raise ValueError(f"labels must lie in -1..{len(classes)} for {len(classes)} classes, "
                             f"got {labels.min()}..{labels.max()}")
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "skin_colour", _skin_rgb(self.skin_colour))
        object.__setattr__(self, "classes", classes)

    @classmethod
    def blank(
        cls, size: int | tuple[int, int], skin=3, skin_mask: np.ndarray | None = None,
        classes: tuple[str, ...] = CONDITION_NAMES,
    ) -> "SemanticMap":
        """Lesion-free skin: everywhere, or on `skin_mask`; `skin` = RGB 0..255 or Fitzpatrick type 1..6."""
        h, w = (size, size) if np.ndim(size) == 0 else size
        labels = np.zeros((h, w), np.int16)
        if skin_mask is not None:
            labels[~np.asarray(skin_mask, dtype=bool)] = BACKGROUND
        return cls(labels, _skin_rgb(skin), classes)

    @classmethod
    def from_masks(
        cls, lesion_mask: np.ndarray, condition: int | str, skin_mask: np.ndarray | None, skin,
        classes: tuple[str, ...] = CONDITION_NAMES,
    ) -> "SemanticMap":
        """From a dataset image's masks: lesion pixels (on skin) get `condition`."""
        lesion = np.asarray(lesion_mask, dtype=bool)
        skin_mask = np.ones_like(lesion) if skin_mask is None else np.asarray(skin_mask, dtype=bool)
        labels = np.where(skin_mask | lesion, HEALTHY, BACKGROUND).astype(np.int16)
        labels[lesion] = condition_number(condition, tuple(classes)) + 1
        return cls(labels, _skin_rgb(skin), classes)

    @property
    def size(self) -> tuple[int, int]:
        return self.labels.shape

    def skin_mask(self) -> np.ndarray:
        return self.labels >= HEALTHY

    def lesion_mask(self, condition: int | str | None = None) -> np.ndarray:
        """Pixels of any lesion, or of lesions of one condition."""
        if condition is None:
            return self.labels > HEALTHY
        return self.labels == condition_number(condition, self.classes) + 1

    def add_lesion(
        self, condition: int | str, size: float, x: float = 0.5, y: float = 0.5, seed: int = 0
    ) -> "SemanticMap":
        """Place a lesion of `condition` covering `size` (fraction of the image area) centred at (x, y)
        (fractions of width and height); it is clipped to the skin and painted over earlier lesions.

        Synthetic-catalogue classes get their condition's shape style; a real dataset's classes have none, so
        their lesions are plain irregular blobs (`blob_mask`)."""
        c = condition_number(condition, self.classes)
        h, w = self.size
        if self.classes == CONDITION_NAMES:
            mask = lesion_shape(h, w, size, x, y, condition=c, seed=seed, allowed=self.skin_mask())
        else:
            mask = blob_mask(h, w, size, x, y, seed=seed, allowed=self.skin_mask())
        labels = self.labels.copy()
        labels[mask] = c + 1
        return SemanticMap(labels, self.skin_colour, self.classes)

    def with_skin(self, skin) -> "SemanticMap":
        """The same map on skin of another RGB colour or Fitzpatrick type."""
        return SemanticMap(self.labels, _skin_rgb(skin), self.classes)

    def without_lesions(self) -> "SemanticMap":
        return SemanticMap(np.where(self.labels > HEALTHY, HEALTHY, self.labels), self.skin_colour, self.classes)

    def encode(self, encoding: str = "colour") -> torch.Tensor:
        """float32 (C,H,W) in [-1, 1]."""
        encoded = encode_labels(self.labels[None], self.skin_colour[None], encoding, len(self.classes))
        return torch.from_numpy(encoded[0])

    def render(self) -> np.ndarray:
        """uint8 (H,W,3) colour-coded picture."""
        return colour_picture(self.labels[None], self.skin_colour[None], len(self.classes))[0]


def encode_maps(maps: list[SemanticMap], encoding: str = "colour") -> torch.Tensor:
    """A batch (N,C,H,W) of SemanticMaps, which must share one class list (the generator's)."""
    if not maps:
        raise ValueError("encode_maps needs at least one map")
    if len({m.classes for m in maps}) > 1:
        raise ValueError("the maps of one batch have different class lists; a generator knows one")
    labels = np.stack([m.labels for m in maps])
    colours = np.stack([m.skin_colour for m in maps])
    return torch.from_numpy(encode_labels(labels, colours, encoding, len(maps[0].classes)))


# ----------------------------------------------------------------------------------------------------------
# Dataset of (map, image, lesion mask, condition)


# Skin colour of a map when the table does not give it. Real images have no skin mask and their lesion masks
# can cover the whole frame (six HAM10000 masks do), so the colour is measured by a chain of fallbacks, and
# each image's table row records which one gave its colour (column `skin_source`):
SKIN_SOURCES = ("table", "healthy pixels", "border ring", "dataset median")
# Darker than this in every channel: a dermatoscope's black vignette or a dark background, not skin.
DARK_LEVEL = 30
# Fewest usable pixels (share of the image) for a measurement to count.
MIN_SKIN_SHARE = 0.005
# Width of the border ring (share of the image side): the part of a photo least likely to be lesion.
RING_SHARE = 1 / 16


def border_ring(h: int, w: int) -> np.ndarray:
    """bool (H,W): the outer band of the image, RING_SHARE of the shorter side wide (at least 1 pixel)."""
    width = max(1, int(round(RING_SHARE * min(h, w))))
    ring = np.ones((h, w), bool)
    ring[width:h - width, width:w - width] = False
    return ring


def measure_skin_colours(images, lesion_masks=None, skin_masks=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean skin colour (N,3) float 0..255 of each image, and how it was measured (N,) str.

    1. "healthy pixels": skin (the skin mask, else every pixel) outside the lesion, not dark;
    2. "border ring": where too few of those remain (a lesion mask covering the image), the non-dark pixels
       of the image's border ring, lesion or not;
    3. NaN and "" where neither has MIN_SKIN_SHARE of the image: the caller decides (see skin_colours_of).
    """
    images = np.asarray(images)
    n, h, w = images.shape[:3]
    least = max(1, int(np.ceil(MIN_SKIN_SHARE * h * w)))
    ring = border_ring(h, w)
    colours = np.full((n, 3), np.nan)
    sources = np.full(n, "", dtype=object)
    for i in range(n):
        image = np.asarray(images[i])
        usable = image.max(axis=2) >= DARK_LEVEL
        healthy = usable.copy()
        if skin_masks is not None:
            healthy &= np.asarray(skin_masks[i]).astype(bool)
        if lesion_masks is not None:
            healthy &= ~np.asarray(lesion_masks[i]).astype(bool)
        for where, source in ((healthy, "healthy pixels"), (usable & ring, "border ring")):
            if where.sum() >= least:
                colours[i], sources[i] = image[where].mean(axis=0), source
                break
    return colours, sources


def skin_colours_and_sources(data) -> tuple[np.ndarray, np.ndarray]:
    """Skin colour per image (N,3) float32 and its source (N,) str, one of SKIN_SOURCES.

    The table's skin_r/g/b where filled (its `skin_source` column, if any, says how they were obtained), else
    `measure_skin_colours`, else the median colour of the other images ("dataset median"). A dataset where no
    image gives a colour is an error naming what is missing.
    """
    table = data.table
    colours = (
        table[["skin_r", "skin_g", "skin_b"]].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
    )
    known = ~np.isnan(colours).any(axis=1)
    sources = np.full(len(table), "table", dtype=object)
    if "skin_source" in table.columns:
        recorded = table["skin_source"].astype(object).to_numpy()
        sources = np.where(pd.isna(recorded), "table", recorded).astype(object)
    todo = np.flatnonzero(~known)
    if len(todo):
        def take(array):
            return None if array is None else array[todo]

        measured, how = measure_skin_colours(data.images[todo], take(data.lesion_masks), take(data.skin_masks))
        colours[todo], sources[todo] = measured, how
    if not fill_with_median(colours, sources):
        raise ValueError(
            f"{data.name}: no image has skin_r/g/b in its table or {MIN_SKIN_SHARE:.1%} of usable skin "
            f"pixels (outside the lesion or on the border ring, brighter than {DARK_LEVEL}): the semantic "
            "maps have no skin colour to use; fill skin_r/g/b in the table"
        )
    return colours.astype(np.float32), sources


def fill_with_median(colours: np.ndarray, sources: np.ndarray) -> bool:
    """In place: rows of `colours` that are NaN get the median of the others ("dataset median"). False when
    no row is known (nothing to take a median of; the rows stay NaN)."""
    missing = np.isnan(colours).any(axis=1)
    if missing.all() and len(colours):
        return False
    if missing.any():
        colours[missing] = np.median(colours[~missing], axis=0)
        sources[missing] = "dataset median"
    return True


def skin_colours_of(data) -> np.ndarray:
    """Skin colour per image (N,3) float32 0..255 for the maps: see `skin_colours_and_sources`."""
    return skin_colours_and_sources(data)[0]


def labels_of(data) -> np.ndarray:
    """Label images (N,H,W) int8 of a SkinData: needs lesion masks; without skin masks all pixels are skin."""
    if data.lesion_masks is None:
        raise ValueError(f"{data.name}: semantic maps need lesion masks (SkinData.lesion_masks is None)")
    lesion = data.lesion_masks.astype(bool)
    skin = np.ones_like(lesion) if data.skin_masks is None else data.skin_masks.astype(bool) | lesion
    labels = np.where(skin, HEALTHY, BACKGROUND).astype(np.int8)
    condition = data.table["label"].to_numpy(dtype=np.int64)
    n_classes = len(data.classes)
    if condition.min(initial=0) < 0 or condition.max(initial=0) >= n_classes:
        raise ValueError(f"{data.name}: table column 'label' must lie in 0..{n_classes - 1}")
    labels[lesion] = np.broadcast_to((condition + 1)[:, None, None].astype(np.int8), lesion.shape)[lesion]
    return labels


class MapDataset(torch.utils.data.Dataset):
    """(map, image, lesion_mask, condition) tensors for one SkinData (typically one split).

    map float32 (C,H,W) in [-1,1]; image float32 (3,H,W) in [-1,1]; lesion_mask float32 (1,H,W) in {0,1};
    condition int64. Maps are encoded per item from compact label images, which keeps memory small.
    """

    def __init__(self, data, encoding: str = "colour"):
        _check_encoding(encoding)
        self.data, self.encoding = data, encoding
        self.n_conditions = len(data.classes)
        self.labels = labels_of(data)
        self.colours = skin_colours_of(data)
        self.condition = data.table["label"].to_numpy(dtype=np.int64)
        fitz = pd.array(data.table["fitzpatrick"], dtype="Int64")
        self.fitzpatrick = fitz.to_numpy(dtype=np.int64, na_value=0)  # 0 = unknown

    @property
    def channels(self) -> int:
        return n_channels(self.encoding, self.n_conditions)

    def __len__(self) -> int:
        return len(self.labels)

    def maps(self, index) -> torch.Tensor:
        """Maps of several items at once (N,C,H,W)."""
        index = np.atleast_1d(np.asarray(index))
        return torch.from_numpy(
            encode_labels(self.labels[index], self.colours[index], self.encoding, self.n_conditions)
        )

    def __getitem__(self, i: int):
        semantic = self.maps([i])[0]
        image = to_model(np.array(self.data.images[i]))[0]  # a copy: cached arrays are read-only memmaps
        lesion = torch.from_numpy(self.labels[i] > HEALTHY).float()[None]
        return semantic, image, lesion, torch.tensor(self.condition[i])
