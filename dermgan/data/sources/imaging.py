"""Decoding, square-cropping and resizing images and lesion masks, and the lesion statistics of a mask.

The same code serves `verify` (decode to find corrupt files, keep nothing) and `load_source` (keep resized
arrays): one pass over the files either way.

Images are read by their mode. 8-bit modes go through PIL's own conversion to RGB: greyscale is repeated in
the three channels, palette images take their palette's colours, 1-bit images are black and white, CMYK uses
PIL's plain formula (R = 255 - C - K, clipped; no colour profile). Greyscale of a higher depth is scaled to
8 bits by its full scale, 8-bit = round(value * 255 / full scale): 16-bit ("I;16", "I;16B", ...) and 32-bit
integers ("I", how some readers open 16-bit files) by 65535, so 32768 becomes 128; floats ("F") by 1.
Values outside 0..full scale, and modes not listed here, are refused with the file and its mode.

Masks are read by the same modes, as one value per pixel (palette masks through their palette, as grey
levels). Lesion = the larger of two values (0/1, 0/255, 0/100, False/True alike); a mask of one value is all
lesion unless it is 0. A mask of more than two values is refused unless a threshold is given (a share of
the full scale: lesion = value >= threshold * full scale).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from dermgan.data.sources.common import Catalogue, Problem, Problems
from dermgan.runtime import progress

_READ_ERRORS = (OSError, SyntaxError, ValueError)
EIGHT_BIT_MODES = frozenset({"1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "LA", "La", "PA", "CMYK", "YCbCr"})
FULL_SCALE = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


class UnsupportedImage(ValueError):
    """A file PIL can decode but whose pixel values dermgan cannot map to 8 bits correctly."""


@dataclass
class Loaded:
    """One record after decoding: arrays when a size was asked for, and the problems met."""

    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    stats: tuple[float, float, float] = (np.nan, np.nan, np.nan)  # lesion_area, centroid_x, centroid_y
    problems: list[Problem] | None = None


def centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centred square, as a PIL crop box."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def square_resize(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    return image.crop(centre_square(*image.size)).resize((size, size), resample)


def check_threshold(threshold) -> float | None:
    """A mask threshold is a share of the full scale in (0, 1], or None (masks must have two values)."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"mask_threshold must be a share of the full scale in (0, 1] (0.5 = at least half "
                         f"bright), got {threshold!r}")
    return float(threshold)


def pixel_values(image: Image.Image) -> tuple[np.ndarray, float]:
    """One value per pixel and the full scale: 8-bit modes as grey levels (palettes through their colours),
    higher depths as they are. Raises UnsupportedImage for other modes and for values off the scale."""
    if image.mode in EIGHT_BIT_MODES:
        return np.asarray(image.convert("L")), 255.0
    if image.mode not in FULL_SCALE:
        raise UnsupportedImage(f"image mode {image.mode!r} is not supported; save it as 8-bit RGB or grey")
    values, full = np.asarray(image, dtype=np.float64), FULL_SCALE[image.mode]
    if values.size and not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= full):
        raise UnsupportedImage(f"mode {image.mode!r} values {values.min():g}..{values.max():g} are outside "
                               f"0..{full:g}, so their brightness is unknown; save it as 8-bit RGB or grey")
    return values, full


def to_rgb(image: Image.Image) -> Image.Image:
    """The image as 8-bit RGB by the rules of the module's docstring."""
    if image.mode in EIGHT_BIT_MODES:
        return image.convert("RGB")
    values, full = pixel_values(image)
    return Image.fromarray(np.round(values * (255 / full)).astype(np.uint8), "L").convert("RGB")


def binarise(values: np.ndarray, full_scale: float, threshold: float | None = None) -> np.ndarray:
    """Lesion pixels of a mask: the larger of two values; with more than two, value >= threshold * full scale.

    Raises ValueError naming the values found when a mask has more than two and no threshold is given.
    """
    found = np.unique(values)
    if len(found) <= 2:
        return values == found[-1] if len(found) == 2 else values > 0
    if threshold is None:
        shown = ", ".join(f"{v:g}" for v in found[:4]) + (f", ..., {found[-1]:g}" if len(found) > 4 else "")
        raise ValueError(f"mask has {len(found)} distinct values ({shown}); a mask must have two (the "
                         "larger is lesion): save it as black and white, or pass mask_threshold (a share of "
                         "the full scale) to load_source / verify")
    return values >= threshold * full_scale


def mask_stats(lesion: np.ndarray) -> tuple[float, float, float]:
    """Lesion share of the pixels and its centroid as column / width, row / height (the convention of
    RECORD_COLUMNS and of the synthetic data); an empty mask has no centroid."""
    area = float(lesion.mean()) if lesion.size else np.nan
    rows, cols = np.nonzero(lesion)
    if len(rows) == 0:
        return area, np.nan, np.nan
    height, width = lesion.shape
    return area, float(cols.mean() / width), float(rows.mean() / height)


def too_large(error: Image.DecompressionBombError) -> str:
    """What PIL's decompression-bomb guard means for a user: a big file, not a broken one."""
    return (f"image too large to decode safely ({error}); downscale the file, or raise "
            f"PIL.Image.MAX_IMAGE_PIXELS (now {Image.MAX_IMAGE_PIXELS}) if you trust it")


def has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def transparency(image: Image.Image) -> float:
    """Share of pixels that are not fully opaque (0 for images without an alpha channel)."""
    if not has_alpha(image):
        return 0.0
    if image.mode in FULL_SCALE:  # high-depth grey: transparency is one key value (PNG tRNS)
        return float((np.asarray(image) == image.info["transparency"]).mean())
    return float((np.asarray(image.convert("RGBA").getchannel("A")) < 255).mean())


def read_image(path: str, size: int | None,
               problems: list[Problem]) -> tuple[np.ndarray | None, tuple | None]:
    """RGB uint8 (size, size, 3) or None when only checking; also the file's own (width, height).

    An alpha channel that is fully opaque is dropped (nothing is lost); an image with transparent pixels is a
    problem: what lies behind them is unknown, and any background painted in would end up in the training
    images as if it were skin."""
    try:
        with Image.open(path) as image:
            full_size = image.size
            if size:
                # JPEG DCT scaling: decode big dermoscopy photos at >= 2x the target, much faster, same result
                image.draft("RGB", (2 * size, 2 * size))
            see_through = transparency(image)
            rgb = to_rgb(image)  # forces the full decode, which is where truncated files fail
    except FileNotFoundError:
        problems.append(Problem(path, "image", "image file not found"))
        return None, None
    except UnsupportedImage as error:
        problems.append(Problem(path, "image", str(error)))
        return None, None
    except Image.DecompressionBombError as error:
        problems.append(Problem(path, "image", too_large(error)))
        return None, None
    except _READ_ERRORS as error:
        problems.append(Problem(path, "image", f"unreadable or corrupt image ({error})"))
        return None, None
    if see_through > 0:
        problems.append(Problem(path, "image", f"{see_through:.1%} of the pixels are transparent (alpha "
                                               "channel); flatten the image onto its real background first"))
        return None, None
    if not size:
        return None, full_size
    return np.asarray(square_resize(rgb, size, Image.Resampling.LANCZOS)), full_size


def read_mask(path: str, size: int | None, expected: tuple | None, problems: list[Problem],
              threshold: float | None = None) -> Loaded:
    """Binary mask (see `binarise`) resized with nearest neighbour; statistics from the full-resolution centre
    square."""
    try:
        with Image.open(path) as image:
            values, full_scale = pixel_values(image)
    except FileNotFoundError:
        problems.append(Problem(path, "mask", "mask file not found"))
        return Loaded()
    except UnsupportedImage as error:
        problems.append(Problem(path, "mask", str(error)))
        return Loaded()
    except Image.DecompressionBombError as error:
        problems.append(Problem(path, "mask", too_large(error)))
        return Loaded()
    except _READ_ERRORS as error:
        problems.append(Problem(path, "mask", f"unreadable or corrupt mask ({error})"))
        return Loaded()
    height, width = values.shape
    if expected is not None and (width, height) != tuple(expected):
        problems.append(Problem(path, "mask", f"mask is {width}x{height} but its image is "
                                              f"{expected[0]}x{expected[1]} (width x height)"))
        return Loaded()
    try:
        lesion = binarise(values, full_scale, threshold)
    except ValueError as error:
        problems.append(Problem(path, "mask", str(error)))
        return Loaded()
    left, top, right, bottom = centre_square(width, height)
    lesion = lesion[top:bottom, left:right]
    out = Loaded(stats=mask_stats(lesion))
    if size:
        small = Image.fromarray(lesion.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
        out.mask = (np.asarray(small) > 0).astype(np.uint8)
    return out


def load_record(image_path: str, mask_path: str | None, size: int | None,
                mask_threshold: float | None = None) -> Loaded:
    problems: list[Problem] = []
    image, full_size = read_image(image_path, size, problems)
    loaded = Loaded(image=image, problems=problems)
    if mask_path is not None:
        # The size check needs the image's size; without it (image unreadable) the mask is still decoded.
        from_mask = read_mask(mask_path, size, full_size, problems, mask_threshold)
        loaded.mask, loaded.stats = from_mask.mask, from_mask.stats
    return loaded


def header_side(paths) -> int | None:
    """The smallest side among the images at `paths`, read from their headers (no pixel is decoded): the side of
    the largest centre square every one of them holds. Files that cannot be opened are left to `verify` and
    `load_source`, which report them; None when none can."""
    sides = []
    for path in paths:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except (*_READ_ERRORS, Image.DecompressionBombError):
            continue
    return min(sides) if sides else None


def resize_pixels(pixels: np.ndarray, size: int) -> np.ndarray:
    """In-memory images (already square for DermaMNIST) to size x size."""
    if pixels.shape[1:3] == (size, size):
        return pixels.copy()
    return np.stack([np.asarray(square_resize(Image.fromarray(p), size, Image.Resampling.LANCZOS))
                     for p in pixels])


def materialise(catalogue: Catalogue, size: int | None, problems: Problems):
    """Decode every file once. Returns (images, masks) when `size` is given, else (None, None).

    Fills lesion_area / centroid_x / centroid_y of `catalogue.table` from the masks.
    """
    table = catalogue.table
    if catalogue.pixels is not None:
        return (resize_pixels(catalogue.pixels, size), None) if size else (None, None)
    masks = [None] * len(table)
    if catalogue.has_masks:
        masks = [None if pd.isna(m) else m for m in table["mask_path"]]
    jobs = list(zip(table["image_path"].tolist(), masks))
    # PIL releases the GIL while decoding, so threads give real parallelism on the machine's cores.
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        decoded = pool.map(lambda job: load_record(job[0], job[1], size, catalogue.mask_threshold), jobs)
        loaded = list(progress(decoded, total=len(jobs), desc="reading images", leave=False))
    for item in loaded:
        problems.extend(item.problems)
    if catalogue.has_masks:
        stats = np.asarray([item.stats for item in loaded], dtype=float).reshape(-1, 3)
        table["lesion_area"], table["centroid_x"], table["centroid_y"] = stats.T
    if not size or len(problems):
        return None, None
    images = np.stack([item.image for item in loaded]) if loaded else np.zeros((0, size, size, 3), np.uint8)
    if not catalogue.has_masks:
        return images, None
    masks = np.stack([item.mask for item in loaded]) if loaded else np.zeros((0, size, size), np.uint8)
    return images, masks
