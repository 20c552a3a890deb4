"""Joint augmentation of DermGAN training pairs: the semantic map, the image and the lesion mask of an item get
the SAME random geometric transform, so the map still describes the image and the mask still marks its lesion.

Transforms (pix2pix's, in its order): resize the item to `round(jitter * size)` and crop a random `size` window
("resize-and-crop jitter"; 286 -> 256 in pix2pix, i.e. jitter 1.117), then a random horizontal and a random
vertical flip (skin has no up or down). Maps and masks are resized with centred nearest-neighbour sampling, so
they keep their exact values (colour codes, one-hot channels, {0, 1}); images bilinearly.

Randomness and exact resume: `AugmentedPairs` shows the training loop `copies` x n items; item j is base item
j mod n under a transform drawn from a generator seeded with (seed, j), a pure function of the index. The loop
draws its batches from a seeded permutation per epoch, so with `copies` large enough that one such epoch covers
the whole run (`copies_for`), every visit of an image gets its own transform, a resumed run sees exactly what
an uninterrupted one sees, data-loader workers need no RNG state, and DDP ranks (which slice the same global
batch) see what one process sees. Copy 0 is never transformed, so `dataset[0..k]` (the loop's fixed sample
grid) shows the data as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Transform:
    """One item's transform: resize to load_size, crop (top, left) of the original size, then flips."""

    load_size: int
    top: int
    left: int
    flip_h: bool
    flip_v: bool


def identity(size: int) -> Transform:
    return Transform(size, 0, 0, False, False)


def draw(size: int, generator: torch.Generator, flip: bool = True, jitter: float = 1.0) -> Transform:
    """A random transform for `size` px items; `jitter` >= 1 is the resize factor before the crop."""
    if jitter < 1.0:
        raise ValueError(f"augment jitter is the resize factor before a crop and must be >= 1, got {jitter}")
    load = max(size, int(round(size * jitter)))
    top, left = (int(v) for v in torch.randint(0, load - size + 1, (2,), generator=generator))
    flips = torch.rand(2, generator=generator) < 0.5
    return Transform(load, top, left, bool(flips[0]) and flip, bool(flips[1]) and flip)


def _resize_crop(x: torch.Tensor, t: Transform, mode: str) -> torch.Tensor:
    size = x.shape[-1]
    if t.load_size != size:
        kwargs = {"align_corners": False} if mode == "bilinear" else {}
        x = F.interpolate(x[None], size=(t.load_size, t.load_size), mode=mode, **kwargs)[0]
    return x[..., t.top : t.top + size, t.left : t.left + size]


def _flip(x: torch.Tensor, t: Transform) -> torch.Tensor:
    dims = [d for d, on in ((-1, t.flip_h), (-2, t.flip_v)) if on]
    return x.flip(dims) if dims else x


def apply(t: Transform, semantic: torch.Tensor, image: torch.Tensor, mask: torch.Tensor):
    """(map, image, mask) CHW tensors of one item under transform `t`, the same geometry for all three."""
    if not (semantic.shape[-2:] == image.shape[-2:] == mask.shape[-2:]) or semantic.shape[-1] != semantic.shape[-2]:
        raise ValueError(
            f"augment: map {tuple(semantic.shape)}, image {tuple(image.shape)} and mask {tuple(mask.shape)} must "
            "be square and of one size"
        )
    # "nearest-exact" samples pixel centres as bilinear does, so map, mask and image stay aligned.
    semantic = _flip(_resize_crop(semantic, t, "nearest-exact"), t)
    image = _flip(_resize_crop(image, t, "bilinear"), t)
    mask = _flip(_resize_crop(mask, t, "nearest-exact"), t)
    return semantic, image, mask


def copies_for(steps: int, batch_size: int, n: int) -> int:
    """Copies of an n-item dataset such that `steps` batches fit in one pass (no transform is seen twice)."""
    return max(1, math.ceil(steps * batch_size / n))


class AugmentedPairs(torch.utils.data.Dataset):
    """`base` (items (map, image, mask, ...)) seen `copies` times, each copy after copy 0 transformed."""

    def __init__(self, base, copies: int, seed: int, flip: bool = True, jitter: float = 1.0):
        if copies < 1:
            raise ValueError(f"copies must be >= 1, got {copies}")
        if jitter < 1.0:
            raise ValueError(f"augment jitter is the resize factor before a crop and must be >= 1, got {jitter}")
        self.base, self.copies, self.seed, self.flip, self.jitter = base, copies, seed, flip, jitter

    def __len__(self) -> int:
        return len(self.base) * self.copies

    def transform(self, index: int, size: int) -> Transform:
        copy = index // len(self.base)
        if copy == 0 or not (self.flip or self.jitter > 1.0):
            return identity(size)
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + index) % 2**63)
        return draw(size, generator, self.flip, self.jitter)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} of an augmented dataset of {len(self)}")
        semantic, image, mask, *rest = self.base[index % len(self.base)]
        t = self.transform(index, image.shape[-1])
        return (*apply(t, semantic, image, mask), *rest)
