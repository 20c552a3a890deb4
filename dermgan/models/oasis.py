"""The map-conditioned family "oasis": a SPADE generator judged by a per-pixel segmentation discriminator.

Written from the papers: SPADE (Park et al., CVPR 2019, "Semantic Image Synthesis with Spatially-Adaptive
Normalization") and OASIS (Schönfeld et al., ICLR 2021, "You Only Need Adversarial Supervision for Semantic
Image Synthesis").

Generator (SPADE): the map (and 3-D noise) is area-pooled to image_size / 2**g_upsamples and convolved; then
one residual block per resolution, x2 nearest-neighbour up-sampling between them, and a 3x3 conv + tanh. In
every block a parameter-free norm (batch norm, as OASIS, or instance norm) is modulated per pixel by the map:
norm(x) * (1 + gamma(m)) + beta(m), gamma and beta 3x3 convs of a shared 3x3 conv + ReLU embedding of the map
m pooled to the block's resolution. The map is area-pooled, not sampled (SPADE samples the nearest pixel), so
a lesion smaller than a coarse cell still reaches that level. 3-D noise (OASIS): `noise_dim` channels of one
N(0, 1) vector per image, spread over every pixel and concatenated to the map, so one map gives several
images. In training the noise is drawn from the torch RNG; in eval mode it is 0 (its mean) unless given, so
that an image depends only on its own map (`dermgan.models.dermgan.generate`); `noise_for` draws seeded noise
for variations. With batch norm the generator is local: the image at a pixel depends on the map within
`influence_radius` px.

Discriminator (OASIS): a U-Net of residual blocks with spectral norm that classifies every pixel of an image
as one of the map's classes (background, healthy skin, each condition) or as "fake": N + 1 classes. Loss
(dermgan.losses.segmentation_adversarial): D wants real pixels in their map class, weighted per class by
inverse pixel frequency (lesions are small), and generated pixels "fake"; G wants its pixels in their map
class, with the same weights. LabelMix (optional): D's logits on an image mixed by class regions from a real
and a generated image must equal the same mix of its logits on the two.

Skin colour. The map also asks for a skin colour (a condition), which a label map does not carry. The
generator reads the map in the repository's encodings (dermgan.data.semantic): "onehot" (class planes plus the
skin colour on every skin pixel, the default) or "colour" (the paper's colour-coded picture, skin colour on
the healthy skin). The segmentation D's targets are the map's classes, decoded from the map (`class_planes`);
the skin colour reaches D as three constant planes beside the image (`skin_colour`), so that D can call a
pixel fake for having the wrong skin colour as well as for looking generated.

What D sees, through the loop's critic (dermgan.critic): concat(image, skin colour planes, class planes). D
reads the first six channels and hands the class planes back with its logits as its targets, so that an
augmentation that moves the image (translation, cutout, flips) moves its targets alike; colour augmentation
recolours the image channels only. D's per-pixel "real" logit, log sum_c p(class c) - log p(fake), is the last
entry of its output, which is what the critic reads for ADA, R1, LeCam and its accuracy probes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from dermgan import losses
from dermgan.config import OASISConfig
from dermgan.data.conditions import N_CONDITIONS
from dermgan.data.semantic import class_palette, n_channels, render_maps
from dermgan.imageops import to_uint8
from dermgan.models.pix2pix import count_parameters

NAME = "oasis"
COLOUR_TOLERANCE = 1 / 127.5  # one intensity level: how far a colour-coded map pixel may be from its code
IMAGE_AND_SKIN = 6  # the channels D reads: the image and the skin colour planes


# ----------------------------------------------------------------------------------------------------------
# What the map says, as tensors


def class_planes(maps: torch.Tensor, encoding: str, n_conditions: int) -> torch.Tensor:
    """One-hot classes (N, 2 + n_conditions, H, W) of maps in either encoding: background, healthy skin, then
    one plane per condition. A colour-coded map is read by its exact colours, as `decode_maps` reads it."""
    if encoding == "onehot":
        lesions, healthy = maps[:, 3:3 + n_conditions], maps[:, -1:]
        background = (1 - lesions.sum(1, keepdim=True) - healthy).clamp(0, 1)
        return torch.cat([background, healthy, lesions], 1)
    rgb = maps[:, :3]
    codes = torch.as_tensor(class_palette(n_conditions) / 127.5 - 1.0, dtype=rgb.dtype, device=rgb.device)
    lesions = torch.stack([(rgb - code[:, None, None]).abs().amax(1) < COLOUR_TOLERANCE for code in codes], 1)
    background = ((rgb + 1).abs().amax(1) < COLOUR_TOLERANCE)[:, None]
    healthy = ~(background | lesions.any(1, keepdim=True))
    return torch.cat([background, healthy, lesions], 1).to(maps.dtype)


def skin_colour(maps: torch.Tensor, planes: torch.Tensor, encoding: str) -> torch.Tensor:
    """The skin colour (N, 3) in [-1, 1] each map asks for: the mean of its colour channels over the pixels
    that carry it (every skin pixel in "onehot", the healthy skin in "colour"); 0 where no pixel does."""
    carriers = (1 - planes[:, 0]) if encoding == "onehot" else planes[:, 1]
    total = (maps[:, :3] * carriers[:, None]).sum(dim=(2, 3))
    return total / carriers.sum(dim=(1, 2))[:, None].clamp(min=1.0)


def judged_conditions(maps: torch.Tensor, encoding: str, n_conditions: int) -> torch.Tensor:
    """concat(skin colour planes, class planes) (N, 3 + 2 + n_conditions, H, W): what the segmentation D is
    handed beside an image, concat(image, these)."""
    planes = class_planes(maps, encoding, n_conditions)
    colour = skin_colour(maps, planes, encoding)[:, :, None, None].expand(-1, -1, *maps.shape[-2:])
    return torch.cat([colour, planes], 1)


# ----------------------------------------------------------------------------------------------------------
# Generator


def _conv3(c_in: int, c_out: int) -> nn.Conv2d:
    # reflection padding: zero padding makes every border pixel differ from the interior (a frame; pix2pix.py)
    return nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="reflect")


class SPADE(nn.Module):
    """norm(x) * (1 + gamma) + beta, gamma and beta a 3x3 conv of the block's embedding of the map: a
    parameter-free norm modulated per pixel by the map."""

    def __init__(self, channels: int, hidden: int, norm: str):
        super().__init__()
        self.norm = (nn.BatchNorm2d(channels, affine=False) if norm == "batch"
                     else nn.InstanceNorm2d(channels, affine=False))
        self.gamma_beta = _conv3(hidden, 2 * channels)

    def forward(self, x: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.gamma_beta(embedded).chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class SPADEBlock(nn.Module):
    """SPADE's residual block: (SPADE, LeakyReLU, 3x3 conv) twice; a SPADE + 1x1 conv shortcut when the width
    changes. Its SPADE layers share one embedding of the map (3x3 conv + ReLU; SPADE gives each layer its
    own), which saves two of the three convolutions of the map at each resolution."""

    def __init__(self, c_in: int, c_out: int, map_channels: int, hidden: int, norm: str):
        super().__init__()
        middle = min(c_in, c_out)
        self.embed = nn.Sequential(_conv3(map_channels, hidden), nn.ReLU())
        self.norm1, self.conv1 = SPADE(c_in, hidden, norm), _conv3(c_in, middle)
        self.norm2, self.conv2 = SPADE(middle, hidden, norm), _conv3(middle, c_out)
        self.shortcut = None
        if c_in != c_out:
            self.shortcut_norm = SPADE(c_in, hidden, norm)
            self.shortcut = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        embedded = self.embed(semantic)
        h = self.conv1(F.leaky_relu(self.norm1(x, embedded), 0.2))
        h = self.conv2(F.leaky_relu(self.norm2(h, embedded), 0.2))
        skip = x if self.shortcut is None else self.shortcut(self.shortcut_norm(x, embedded))
        return skip + h


class OASISGenerator(nn.Module):
    """Map (N, map_channels, S, S) in [-1, 1] [+ noise (N, noise_dim)] -> image (N, 3, S, S) in [-1, 1]."""

    def __init__(self, map_channels: int, image_size: int, base: int = 16, upsamples: int = 3,
                 noise_dim: int = 16, spade_hidden: int = 32, norm: str = "batch"):
        super().__init__()
        if image_size % 2**upsamples:
            raise ValueError(f"image_size {image_size} must be divisible by 2**g_upsamples = {2**upsamples}")
        self.image_size, self.upsamples, self.noise_dim, self.norm = image_size, upsamples, noise_dim, norm
        self.start = image_size // 2**upsamples
        widths = [base * min(2 ** (upsamples - i), 8) for i in range(upsamples + 1)]  # coarse to fine
        condition = map_channels + noise_dim
        self.head = _conv3(condition, widths[0])
        self.blocks = nn.ModuleList(
            SPADEBlock(widths[i], widths[min(i + 1, upsamples)], condition, spade_hidden, norm)
            for i in range(upsamples + 1))
        self.to_image = _conv3(widths[-1], 3)

    def condition(self, semantic: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """The map with the noise spread over every pixel; z None: drawn in training, 0 in eval mode."""
        if not self.noise_dim:
            return semantic
        n, _, h, w = semantic.shape
        if z is None:
            z = (torch.randn(n, self.noise_dim, device=semantic.device) if self.training
                 else torch.zeros(n, self.noise_dim, device=semantic.device))
        if z.shape != (n, self.noise_dim):
            raise ValueError(f"noise must be ({n}, {self.noise_dim}) for {n} maps, got {tuple(z.shape)}")
        return torch.cat([semantic, z.to(semantic.dtype)[:, :, None, None].expand(-1, -1, h, w)], 1)

    def forward(self, semantic: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if semantic.shape[-1] != self.image_size or semantic.shape[-2] != self.image_size:
            raise ValueError(f"maps must be {self.image_size} px square, got {tuple(semantic.shape[-2:])}")
        condition = self.condition(semantic, z)
        side = self.start
        x = self.head(F.interpolate(condition, size=side, mode="area"))
        for i, block in enumerate(self.blocks):
            pooled = F.interpolate(condition, size=side, mode="area") if side < self.image_size else condition
            x = block(x, pooled)
            if i < self.upsamples:
                x, side = F.interpolate(x, scale_factor=2, mode="nearest"), 2 * side
        return torch.tanh(self.to_image(F.leaky_relu(x, 0.2)))

    def influence_radius(self) -> float:
        """How far (px, in x or in y) a change of the map can move the image in eval mode: a bound added up
        layer by layer (area pooling to cells of s px: s; a 3x3 conv at cell size s: s; x2 up-sampling: s;
        SPADE's two 3x3 convs of the pooled map: 3 s). Infinite with instance norm, whose statistics span the
        image."""
        if self.norm != "batch":
            return math.inf
        cell = self.image_size // self.start
        radius = 2 * cell  # head: area pooling + 3x3 conv
        for i in range(self.upsamples + 1):
            radius = max(radius, 3 * cell) + 2 * cell  # SPADE, conv, SPADE, conv (the shortcut reaches less)
            if i < self.upsamples:
                radius += cell
                cell //= 2
        return radius + 1  # the last 3x3 conv, at 1 px


def noise_for(n: int, noise_dim: int, seed: int) -> torch.Tensor:
    """Seeded noise (n, noise_dim) for several images of one map (row i the same whatever n)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, noise_dim, generator=generator)


# ----------------------------------------------------------------------------------------------------------
# Discriminator


class SegmentationOutput(NamedTuple):
    """One judgement of the segmentation D. `realness` comes last: the critic reads the last entry."""

    logits: torch.Tensor  # (N, 1 + K, H, W): channel 0 "fake", 1 + k the map's class k
    targets: torch.Tensor  # (N, K, H, W): the map's classes as they reached D (augmented like the image)
    realness: torch.Tensor  # (N, 1, H, W): log sum_k p(class k) - log p(fake)


class _DBlock(nn.Module):
    """OASIS's discriminator block: (LeakyReLU, 3x3 conv) twice + a 1x1 conv shortcut, spectral norm on every
    conv; average-pooled after ("down") or nearest-neighbour up-sampled before ("up")."""

    def __init__(self, c_in: int, c_out: int, resample: str, first: bool = False):
        super().__init__()
        self.resample, self.first = resample, first
        self.conv1 = spectral_norm(nn.Conv2d(c_in, c_out, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.shortcut = spectral_norm(nn.Conv2d(c_in, c_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv1(x if self.first else F.leaky_relu(x, 0.2))
        out = self.shortcut(x) + self.conv2(F.leaky_relu(h, 0.2))
        return F.avg_pool2d(out, 2) if self.resample == "down" else out


class OASISDiscriminator(nn.Module):
    """concat(image, skin colour planes, class planes) -> [SegmentationOutput]: a U-Net (`levels` down, as
    many up, skips concatenated) reads the image and skin planes and gives each pixel 1 + n_classes logits."""

    def __init__(self, n_classes: int, base: int = 16, levels: int = 3):
        super().__init__()
        self.n_classes, self.levels = n_classes, levels
        widths = [base * min(2**i, 8) for i in range(levels)]
        self.down = nn.ModuleList(
            _DBlock(IMAGE_AND_SKIN if i == 0 else widths[i - 1], widths[i], "down", first=i == 0)
            for i in range(levels))
        self.up = nn.ModuleList()
        for j in range(levels):  # j = 0 is the innermost
            i = levels - 1 - j
            c_in = widths[i] if j == 0 else 2 * widths[i]  # the innermost has no skip yet
            self.up.append(_DBlock(c_in, widths[i - 1] if i else base, "up"))
        self.classify = spectral_norm(nn.Conv2d(base, 1 + n_classes, 1))

    def forward(self, x: torch.Tensor) -> list[SegmentationOutput]:
        if x.shape[1] != IMAGE_AND_SKIN + self.n_classes:
            raise ValueError(f"the segmentation D takes {IMAGE_AND_SKIN} image and skin channels and "
                             f"{self.n_classes} class planes, got {x.shape[1]} channels")
        if x.shape[-1] % 2**self.levels or x.shape[-2] % 2**self.levels:
            raise ValueError(f"the segmentation D needs sides divisible by 2**d_levels = {2**self.levels}, "
                             f"got {tuple(x.shape[-2:])}")
        h, skips = x[:, :IMAGE_AND_SKIN], []
        for block in self.down:
            h = block(h)
            skips.append(h)
        h = skips.pop()
        for block in self.up:
            h = block(h)
            if skips:
                h = torch.cat([h, skips.pop()], 1)
        logits = self.classify(F.leaky_relu(h, 0.2))
        realness = torch.logsumexp(logits[:, 1:], 1, keepdim=True) - logits[:, :1]
        return [SegmentationOutput(logits, x[:, IMAGE_AND_SKIN:], realness)]


# ----------------------------------------------------------------------------------------------------------
# The recipe


@dataclass(frozen=True)
class MapModel:
    """What notebooks read from a map-conditioned model's metadata: its name and the map encoding it reads."""

    name: str
    encoding: str


def class_mask(planes: torch.Tensor, coins: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W): 1 on the pixels of the classes whose coin (N, K) is 1, else 0 (unlabelled pixels too)."""
    return (planes * coins[:, :, None, None].to(planes.dtype)).sum(1, keepdim=True)


class OASISRecipe:
    """Batches are (map, image, lesion_mask, condition) from `dermgan.data.semantic.MapDataset`."""

    d_colour_channels = slice(0, 3)  # the image; the skin planes are a condition, the class planes codes
    d_threshold = 0.0  # the realness logit

    def __init__(self, cfg: OASISConfig, image_size: int, n_conditions: int = N_CONDITIONS):
        self.cfg, self.image_size, self.n_conditions = cfg, image_size, n_conditions
        self.variant = MapModel(NAME, cfg.encoding)
        self.generator = OASISGenerator(n_channels(cfg.encoding, n_conditions), image_size, cfg.base_filters,
                                        cfg.g_upsamples, cfg.noise_dim, cfg.spade_hidden, cfg.g_norm)
        self.discriminator = OASISDiscriminator(2 + n_conditions, cfg.d_base, cfg.d_levels)

    def _conditions(self, semantic: torch.Tensor) -> torch.Tensor:
        return judged_conditions(semantic, self.cfg.encoding, self.n_conditions)

    # -- what the training loop calls
    def generate(self, G: nn.Module, batch):
        return G(batch[0])

    def d_loss(self, critic, batch, fake):
        semantic, real = batch[0], batch[1]
        conditions = self._conditions(semantic).to(real.dtype)
        (real_out,), (fake_out,) = critic.pair(torch.cat([real, conditions], 1),
                                               torch.cat([fake, conditions], 1))
        balance = self.cfg.class_balance
        loss_real = losses.segmentation_adversarial(real_out.logits, real_out.targets, True, balance)
        loss_fake = losses.segmentation_adversarial(fake_out.logits, fake_out.targets, False)
        logs = {"d_real": loss_real, "d_fake": loss_fake}
        loss = loss_real + loss_fake
        if self.cfg.lambda_labelmix:
            # one coin per class region; the mix is made from the map as given, and the same coins mark the
            # mix on the targets as they reached D (augmented like the images), so the two line up
            planes = conditions[:, 3:]
            coins = torch.randint(0, 2, planes.shape[:2], device=planes.device)
            mask = class_mask(planes, coins)
            (mixed_out,) = critic.same_draw(torch.cat([mask * real + (1 - mask) * fake, conditions], 1))
            logs["d_labelmix"] = losses.labelmix_consistency(
                mixed_out.logits, real_out.logits, fake_out.logits, class_mask(real_out.targets, coins),
                real_out.targets.sum(1, keepdim=True))
            loss = loss + self.cfg.lambda_labelmix * logs["d_labelmix"]
        return loss, logs

    def g_loss(self, critic, batch, fake):
        semantic, real = batch[0], batch[1]
        (fake_out,) = critic.fake(torch.cat([fake, self._conditions(semantic).to(fake.dtype)], 1))
        adv = losses.segmentation_adversarial(fake_out.logits, fake_out.targets, True, self.cfg.class_balance)
        logs = {"g_adv": adv}
        total = adv
        if self.cfg.lambda_l1:
            logs["g_l1"] = losses.l1(fake, real)
            total = total + self.cfg.lambda_l1 * logs["g_l1"]
        return total, logs

    def sample_rows(self, G: nn.Module, batch):
        """map | generated | real."""
        return [render_maps(batch[0], self.cfg.encoding, self.n_conditions), to_uint8(G(batch[0])),
                to_uint8(batch[1])]

    def metadata(self) -> dict:
        return {"variant": dataclasses.asdict(self.variant), "oasis_config": dataclasses.asdict(self.cfg),
                "image_size": self.image_size, "n_conditions": self.n_conditions}

    def parameter_counts(self) -> dict[str, int]:
        return {"generator": count_parameters(self.generator),
                "discriminator": count_parameters(self.discriminator)}


def generator_from_metadata(meta: dict) -> OASISGenerator:
    """An untrained generator shaped as the one a checkpoint's recipe metadata describes."""
    cfg = OASISConfig(**meta["oasis_config"])
    return OASISRecipe(cfg, meta["image_size"], meta["n_conditions"]).generator


def train_variant(ctx, train_data, resume: bool = True, seed: int | None = None, steps: int | None = None,
                  run: str | None = None, holdout_data=None):
    """Train "oasis" on a SkinData split with the run context's profile (section `oasis`): (recipe, result).
    Arguments and folders as `dermgan.models.dermgan.train_variant`: checkpoints/<run>/, logs/<run>.csv."""
    from dermgan.data.semantic import MapDataset
    from dermgan.models.dermgan import training_dataset
    from dermgan.train import data_fingerprint, initial_weights, loop_settings, train

    seed = ctx.seed if seed is None else seed
    run = NAME if run is None else run
    cfg = ctx.profile.oasis if steps is None else dataclasses.replace(ctx.profile.oasis, steps=steps)
    with initial_weights(seed):
        recipe = OASISRecipe(cfg, train_data.image_size, len(train_data.classes))
    folder = ctx.run_dir / "checkpoints" / run
    result = train(recipe, training_dataset(train_data, recipe, cfg.steps, seed),
                   loop_settings(cfg, seed, str(ctx.device)), folder, ctx.path("logs", f"{run}.csv"),
                   folder / "grids", resume=resume, desc=run,
                   provenance=data_fingerprint(train_data, ctx.data_root),
                   holdout=None if holdout_data is None else MapDataset(holdout_data, cfg.encoding))
    return recipe, result


def variations(G: OASISGenerator, semantic: torch.Tensor, n: int, seed: int = 0) -> np.ndarray:
    """n images uint8 (n, H, W, 3) of one map (1, C, H, W), each from its own seeded noise (eval mode)."""
    if not G.noise_dim:
        raise ValueError("this generator was trained without noise (noise_dim 0): one map gives one image")
    was_training = G.training
    G.eval()
    try:
        with torch.inference_mode():
            device = next(G.parameters()).device
            maps = semantic.to(device).float().expand(n, -1, -1, -1)
            return to_uint8(G(maps, noise_for(n, G.noise_dim, seed).to(device)))
    finally:
        G.train(was_training)
