"""Add a lesion to, or remove one from, a photograph of any size with a trained lesion-editing model.

    from dermgan.models.lesion_edit import load_editor
    model = load_editor("runs/cpu/checkpoints/lesion_edit/masked-paired")
    edited = add_lesion(photo, mask, "eczema", model)      # photo uint8 (H, W, 3), mask (H, W)
    healed = remove_lesion(photo, mask, model)

The photograph is resized to the model's square size (the whole frame, so the aspect ratio is not kept inside
the model), edited there, and the edit is resized back; only pixels inside the mask take its output, so
every pixel outside the mask is returned bit-exact.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from dermgan.data.conditions import CONDITION_NAMES, condition_number
from dermgan.models.lesion_edit import edit


def _check_photo(image, mask) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be a uint8 (H, W, 3) RGB array, got {image.dtype} {image.shape}")
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2 or mask.shape != image.shape[:2]:
        raise ValueError(f"mask must be (H, W) = {image.shape[:2]} like the image, got {mask.shape}")
    if mask.dtype != bool and not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must be bool or integer (nonzero = lesion), got {mask.dtype}")
    return image, mask != 0


def _resize(array: np.ndarray, size: tuple[int, int], resample) -> np.ndarray:
    """PIL resize of uint8 (H, W[, 3]) to size = (width, height)."""
    return np.asarray(Image.fromarray(array).resize(size, resample))


def _edit_photo(direction: str, image, mask, model, condition: int | None) -> np.ndarray:
    image, region = _check_photo(image, mask)
    if not region.any():  # nothing to edit: the photograph is its own answer
        return image.copy()
    side, (h, w) = model.image_size, image.shape[:2]
    small = _resize(image, (side, side), Image.BICUBIC)
    # "box" averages the mask over each output pixel, so a lesion smaller than a model pixel still shows
    small_mask = _resize(region.astype(np.uint8) * 255, (side, side), Image.BOX) > 0
    conditions = None if condition is None else np.array([condition])
    output = edit(model, direction, small[None], small_mask[None], conditions)[0]
    back = _resize(output, (w, h), Image.BICUBIC)
    return np.where(region[..., None], back, image)


def add_lesion(image, mask, condition: str | int, model) -> np.ndarray:
    """uint8 (H, W, 3) photograph with a lesion of `condition` (name or class index) inside `mask`."""
    index = condition_number(condition)  # a bool is refused, not taken as class 1
    if index >= model.n_conditions:
        raise ValueError(f"condition {CONDITION_NAMES[index]!r} (index {index}) is beyond the model's "
                         f"{model.n_conditions} conditions")
    return _edit_photo("add", image, mask, model, index)


def remove_lesion(image, mask, model) -> np.ndarray:
    """uint8 (H, W, 3) photograph with the lesion inside `mask` replaced by healed skin."""
    return _edit_photo("remove", image, mask, model, None)


# ----------------------------------------------------------------------------------------------------------
# Judging edits (notebook 04): intensity units [0, 1], mean over the channels and the pixels of a region


def _region_mean(diff: np.ndarray, region: np.ndarray) -> float:
    return float(diff[region].mean()) if region.any() else float("nan")


def edit_errors(edited, source, masks, truth=None, n_boot: int = 0, seed: int = 0) -> dict[str, float]:
    """How an edit of uint8 (N,H,W,3) `source` into `edited` went, over the set (pixel-weighted):

    change_outside: mean |edited - source| outside the masks (0 = healthy skin untouched);
    error_inside / error_outside: mean |edited - truth| inside / outside the masks, when a ground truth exists.
    With n_boot > 0 each also gets <name>_lo / <name>_hi: a 95 % bootstrap interval over the images (resampled
    whole, since the pixels of one image are not independent).
    """
    edited, source = np.asarray(edited, np.float64), np.asarray(source, np.float64)
    inside = np.asarray(masks) > 0
    regions = {"change_outside": (np.abs(edited - source).mean(-1) / 255, ~inside)}
    if truth is not None:
        diff = np.abs(edited - np.asarray(truth, np.float64)).mean(-1) / 255
        regions.update(error_inside=(diff, inside), error_outside=(diff, ~inside))
    out = {name: _region_mean(diff, region) for name, (diff, region) in regions.items()}
    if n_boot:
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(edited), (n_boot, len(edited)))
        for name, (diff, region) in regions.items():
            sums, counts = (diff * region).sum((1, 2)), region.sum((1, 2))  # per image: the mean is sum / count
            with np.errstate(invalid="ignore"):
                means = sums[draws].sum(1) / counts[draws].sum(1)
            out[f"{name}_lo"], out[f"{name}_hi"] = (float(q) for q in np.nanpercentile(means, [2.5, 97.5]))
    return out


def mean_interval(values, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the mean of per-image values (NaN left out), e.g. 0/1 "the classifier
    recognised the added condition" or a per-image lesion contrast."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    draws = np.random.default_rng(seed).integers(0, len(values), (n_boot, len(values)))
    low, high = np.percentile(values[draws].mean(1), [2.5, 97.5])
    return float(low), float(high)


def lesion_contrast(images, masks, ring: int = 3) -> np.ndarray:
    """Per image: distance between the mean RGB inside the mask and in a ring `ring` px wide around it (0-1
    units). A removal without ground truth should lower it towards the contrast of skin with itself."""
    from scipy import ndimage

    out = np.full(len(images), np.nan)
    for k, (image, mask) in enumerate(zip(images, masks)):
        inside = np.asarray(mask) > 0
        around = ndimage.binary_dilation(inside, iterations=ring) & ~inside
        if inside.any() and around.any():
            pixels = np.asarray(image, np.float64) / 255
            out[k] = np.linalg.norm(pixels[inside].mean(0) - pixels[around].mean(0))
    return out
