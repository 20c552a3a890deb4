"""Differentiable augmentation of what a discriminator sees (Zhao et al. 2020, "Differentiable Augmentation for
Data-Efficient GAN Training"), with the per-image probability p that ADA adapts (Karras et al. 2020, "Training
Generative Adversarial Networks with Limited Data"; the adaptation itself is in `dermgan.critic`).

Why: on a few thousand images the discriminator learns the real images by heart, its feedback to G turns into
noise and the generator gets worse the longer it trains. Augmenting real and generated inputs alike, with
transforms the gradient passes through, keeps D from memorising pixels while G still learns from every image.

Transforms, by policy name, applied in this order, each to each image with probability p:
    colour       brightness + U(-0.5, 0.5), saturation x U(0, 2) around the pixel's grey value, contrast
                 x U(0.5, 1.5) around the image mean (DiffAugment's ranges, on [-1, 1] images); only on the
                 colour channels (see below)
    translation  an integer shift of up to 1/8 of the side in x and in y, zeros shifted in
    cutout       a square of half the side, anywhere (clipped at the border), set to 0
    dihedral     one of the 8 flips / 90-degree rotations. Skin has no up or down, so real images are
                 distributed alike under them: unlike the others this transform cannot leak into G at any p

Params are drawn once per batch (`draw`) as fractions of the side, so that one draw transforms tensors of any
resolution alike (the levels of a Laplacian pyramid) and a real and a generated input of the same item alike
(`apply` twice with the same params: a pix2pix discriminator then compares the two on the same geometry, which
feature matching needs).

Map-conditioned inputs: a pix2pix discriminator sees concat(map, image), so the geometric transforms move map
and image together; the colour transforms touch `colour_channels` only. The map's colours are codes, and its
skin colour is a condition: shifting it would change what the map asks for. Colour augmentation of the image
alone still weakens how exactly D can check that the image's skin matches the map's, which is why the paired
families default to the geometric transforms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dermgan.config import AUGMENT_POLICIES as POLICIES
from dermgan.config import parse_policy

TRANSLATION = 1 / 8  # largest shift, as a fraction of the side (DiffAugment)
CUTOUT = 1 / 2  # side of the cut square, as a fraction of the side (DiffAugment)


@dataclass
class Params:
    """One batch's draw: per image, whether and how each transform applies (fractions of the side)."""

    recolour: torch.Tensor  # (N,) bool, whether the colour transforms apply
    brightness: torch.Tensor  # (N,) additive, 0 where not applied
    saturation: torch.Tensor  # (N,) factor, 1 where not applied
    contrast: torch.Tensor  # (N,) factor, 1 where not applied
    shift: torch.Tensor  # (N, 2) fraction of the side (y, x), 0 where not applied
    cutout: torch.Tensor  # (N, 2) centre as a fraction of the side (y, x)
    cut: torch.Tensor  # (N,) bool, whether the cutout applies
    dihedral: torch.Tensor  # (N,) int in 0..7 (0 = identity): flips left-right (bit 0), up-down (1), diagonal (2)


class DiffAugment:
    """The transforms of `policy`, each applied per image with probability p (a float or a 0-d tensor, which
    `dermgan.critic` adapts on the device without a host synchronisation)."""

    def __init__(self, policy: str):
        self.policy = parse_policy(policy)

    def __bool__(self) -> bool:
        return bool(self.policy)

    def draw(self, n: int, p, device) -> Params:
        """Params for n images; every random draw is made whether or not a transform is in the policy, so
        the random stream does not depend on the policy's order."""
        p = torch.as_tensor(p, dtype=torch.float32, device=device)

        def applies(name):
            chosen = torch.rand(n, device=device) < p
            return chosen if name in self.policy else torch.zeros_like(chosen)

        on = {name: applies(name) for name in POLICIES}
        uniform = torch.rand(n, 3, device=device)
        shift = (torch.rand(n, 2, device=device) * 2 - 1) * TRANSLATION
        centre = torch.rand(n, 2, device=device)
        turn = torch.randint(0, 8, (n,), device=device)
        colour = on["colour"]
        return Params(
            recolour=colour,
            brightness=torch.where(colour, uniform[:, 0] - 0.5, torch.zeros_like(uniform[:, 0])),
            saturation=torch.where(colour, uniform[:, 1] * 2, torch.ones_like(uniform[:, 1])),
            contrast=torch.where(colour, uniform[:, 2] + 0.5, torch.ones_like(uniform[:, 2])),
            shift=torch.where(on["translation"][:, None], shift, torch.zeros_like(shift)),
            cutout=centre, cut=on["cutout"],
            dihedral=torch.where(on["dihedral"], turn, torch.zeros_like(turn)),
        )

    def apply(self, x: torch.Tensor, params: Params, colour_channels: slice | None = None) -> torch.Tensor:
        """x (N, C, H, W) transformed by `params` (drawn for N images); colour only on `colour_channels`
        (None: all channels)."""
        if not self.policy:
            return x
        if "colour" in self.policy:
            x = _colour(x, params, colour_channels)
        if "translation" in self.policy:
            x = _translate(x, params.shift)
        if "cutout" in self.policy:
            x = _cutout(x, params.cutout, params.cut)
        if "dihedral" in self.policy:
            x = _dihedral(x, params.dihedral)
        return x


def _colour(x: torch.Tensor, params: Params, channels: slice | None) -> torch.Tensor:
    part = original = x if channels is None else x[:, channels]

    def per_image(v):
        return v.to(x.dtype)[:, None, None, None]

    part = part + per_image(params.brightness)
    grey = part.mean(dim=1, keepdim=True)
    part = (part - grey) * per_image(params.saturation) + grey
    mean = part.mean(dim=(1, 2, 3), keepdim=True)
    part = (part - mean) * per_image(params.contrast) + mean
    part = torch.where(params.recolour[:, None, None, None], part, original)  # untouched images stay exact
    if channels is None:
        return part
    index = torch.arange(x.shape[1], device=x.device)[channels]
    return x.index_copy(1, index, part)  # out of place: gradients reach both the map and the image


def _translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """out[i, :, r, c] = x[i, :, r - dy_i, c - dx_i], zero outside: one gather, so gradients reach x."""
    n, _, h, w = x.shape
    dy = torch.round(shift[:, 0] * h).long()
    dx = torch.round(shift[:, 1] * w).long()
    pad = int(max(h, w) * TRANSLATION) + 1
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = torch.arange(h, device=x.device)[None] + pad - dy[:, None]  # (N, H)
    cols = torch.arange(w, device=x.device)[None] + pad - dx[:, None]  # (N, W)
    images = torch.arange(n, device=x.device)[:, None, None]
    return padded[images, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (N,H,W,C) -> NCHW


def _cutout(x: torch.Tensor, centre: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
    n, _, h, w = x.shape
    half_h, half_w = int(h * CUTOUT) // 2, int(w * CUTOUT) // 2
    cy = torch.round(centre[:, 0] * h).long()[:, None]
    cx = torch.round(centre[:, 1] * w).long()[:, None]
    rows = torch.arange(h, device=x.device)[None]
    cols = torch.arange(w, device=x.device)[None]
    inside_rows = (rows >= cy - half_h) & (rows < cy + half_h)  # (N, H)
    inside_cols = (cols >= cx - half_w) & (cols < cx + half_w)  # (N, W)
    hole = inside_rows[:, :, None] & inside_cols[:, None, :] & cut[:, None, None]
    return x * (~hole)[:, None].to(x.dtype)


def _dihedral(x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Each image by its own element of the dihedral group: bits 0, 1 and 2 of `code` flip it left-right,
    up-down and about the diagonal, which together make all 8. Each choice is a `where` over both branches (cheap
    memory moves), so nothing is read on the host."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"dihedral augmentation needs square inputs, got {tuple(x.shape[-2:])}")
    for bit, move in ((1, lambda t: t.flip(-1)), (2, lambda t: t.flip(-2)), (4, lambda t: t.transpose(-1, -2))):
        chosen = (code & bit).bool()[:, None, None, None]
        x = torch.where(chosen, move(x), x)
    return x
