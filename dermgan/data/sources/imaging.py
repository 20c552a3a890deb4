"""Decoding, square-cropping and resizing images and lesion masks, and the lesion statistics of a mask.

The same code serves `verify` (decode to find corrupt files, keep nothing) and `load_source` (keep resized
arrays): one pass over the files either way.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from dermgan.data.sources.common import Catalogue, Problem, Problems

_READ_ERRORS = (OSError, SyntaxError, ValueError)


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


def binarise(mask: np.ndarray) -> np.ndarray:
    """Lesion = bright pixels. ISIC masks are 0/255; user masks may be 0/1, so a 0/1 mask is taken as is."""
    return (mask >= 128) if mask.max(initial=0) > 1 else (mask > 0)


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
            rgb = image.convert("RGB")  # forces the full decode, which is where truncated files fail
    except FileNotFoundError:
        problems.append(Problem(path, "image", "image file not found"))
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


def read_mask(path: str, size: int | None, expected: tuple | None, problems: list[Problem]) -> Loaded:
    """Binary mask resized with nearest neighbour; statistics from the full-resolution centre square."""
    try:
        with Image.open(path) as image:
            grey = np.asarray(image.convert("L"))
    except FileNotFoundError:
        problems.append(Problem(path, "mask", "mask file not found"))
        return Loaded()
    except Image.DecompressionBombError as error:
        problems.append(Problem(path, "mask", too_large(error)))
        return Loaded()
    except _READ_ERRORS as error:
        problems.append(Problem(path, "mask", f"unreadable or corrupt mask ({error})"))
        return Loaded()
    height, width = grey.shape
    if expected is not None and (width, height) != tuple(expected):
        problems.append(Problem(path, "mask", f"mask is {width}x{height} but its image is "
                                              f"{expected[0]}x{expected[1]} (width x height)"))
        return Loaded()
    left, top, right, bottom = centre_square(width, height)
    lesion = binarise(grey[top:bottom, left:right])
    out = Loaded(stats=mask_stats(lesion))
    if size:
        small = Image.fromarray(lesion.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
        out.mask = (np.asarray(small) > 0).astype(np.uint8)
    return out


def load_record(image_path: str, mask_path: str | None, size: int | None) -> Loaded:
    problems: list[Problem] = []
    image, full_size = read_image(image_path, size, problems)
    loaded = Loaded(image=image, problems=problems)
    if mask_path is not None:
        # The size check needs the image's size; without it (image unreadable) the mask is still decoded.
        from_mask = read_mask(mask_path, size, full_size, problems)
        loaded.mask, loaded.stats = from_mask.mask, from_mask.stats
    return loaded


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
        loaded = list(pool.map(lambda job: load_record(job[0], job[1], size), jobs))
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
