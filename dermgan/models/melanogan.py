"""MelanoGAN baselines (Baur et al. 2018) and Furger et al.'s unconditional model as recipes for the one loop.

Named models (`model_names`):
    dcgan            DCGAN from 64-d noise (MelanoGANs' first baseline; loss: MelanoGANConfig.gan_loss)
    lapgan           LAPGAN: a noise input per pyramid level, residual generators, residual discriminators
    ddgan-upsample   MelanoGANs' modified LAPGAN: one noise source, whole-image discriminators per level,
    ddgan-deconv     end-to-end training; learned up-sampling by resize + conv, or by transposed conv
    furger-dcgan     Furger et al.'s DCGAN-style generator, two-scale discriminator, BCE with label smoothing
                     0.1, Adam 5e-5; trained on healthy *and* lesioned skin (the renderer's healthy twins;
                     real datasets have none, so there it sees lesion images only)
and "<model>-melanoma" for the four MelanoGAN models trained on the training melanomas alone. The single-image
models (dcgan, furger-dcgan) also come as "<model>-projected" (and "<model>-projected-melanoma"): the same G
judged by the projected discriminator of dermgan.models.projected (settings: the profile's `projected`
section), its per-depth logits averaged like a multi-scale D's. LAPGAN and DDGAN judge 8-32 px pyramid levels,
too small for a pretrained backbone, and keep their discriminators.

Data: every model sees the dataset's training split at its fixed size. MelanoGANs centre-crop then resize; the
real-data readers already centre-crop to a square and resize (dermgan.data.sources), and synthetic images are
rendered square, so nothing more is done here.

Noise is drawn inside `generate` from the torch RNG (the loop keeps resume exact by restoring RNG states).
Samples for files are drawn with one seeded generator *per image* (`image_noise`), so image i of a seed has
the same noise whatever the batch size or the number of images asked for (pixels may differ by one intensity
level between batch sizes, where BLAS rounds differently).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dermgan import losses
from dermgan.config import MelanoGANConfig, ProjectedConfig
from dermgan.imageops import to_model, to_uint8
from dermgan.models import lapgan as lp
from dermgan.models.dcgan import DCGANDiscriminator, DCGANGenerator, FurgerDiscriminator, FurgerGenerator
from dermgan.models.pix2pix import count_parameters
from dermgan.train import (CheckpointError, TrainConfig, generator_weights, initial_weights, load_checkpoint,
                           load_training_checkpoint, loop_settings)

KINDS = ("dcgan", "lapgan", "ddgan-upsample", "ddgan-deconv", "furger-dcgan")
MELANOMA_KINDS = ("dcgan", "lapgan", "ddgan-upsample", "ddgan-deconv")
MELANOMA_SUFFIX = "-melanoma"
PROJECTED_SUFFIX = "-projected"
PROJECTABLE_KINDS = ("dcgan", "furger-dcgan")  # single-image discriminators a projected D can replace
MELANOMA_NAMES = ("melanoma", "mel")  # class names of melanoma in the synthetic set, ISIC and HAM10000
GRID_SEED = 12345  # fixed noise of the training grids, so successive grids show the same latent points
# MelanoGANs' colour-histogram (Jensen-Shannon divergence, Wasserstein distance) of each model against real ISIC
# 2017 images at 256 px, as a third-party summary reports them (papers.md sec. 2.2): unverified, histogram
# convention unstated; shown beside ours as orders of magnitude (notebook 03, benchmarks/gpu_paper_run.py).
REPORTED_COLOUR = {"dcgan": (0.00458, 0.00821), "lapgan": (0.01420, 0.04098), "ddgan-upsample": (0.01099, 0.02509),
                   "ddgan-deconv": (0.02183, 0.05410)}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # one of KINDS
    melanoma_only: bool
    projected: bool = False  # judged by the projected discriminator


def parse_model(name: str) -> ModelSpec:
    """The spec of a model name; an unknown name is an error listing the known ones."""
    kind = name[: -len(MELANOMA_SUFFIX)] if name.endswith(MELANOMA_SUFFIX) else name
    melanoma = kind != name
    projected = kind.endswith(PROJECTED_SUFFIX) and kind[: -len(PROJECTED_SUFFIX)] in PROJECTABLE_KINDS
    kind = kind[: -len(PROJECTED_SUFFIX)] if projected else kind
    if kind not in (MELANOMA_KINDS if melanoma else KINDS):
        known = [*KINDS, *(k + MELANOMA_SUFFIX for k in MELANOMA_KINDS),
                 *(k + PROJECTED_SUFFIX for k in PROJECTABLE_KINDS)]
        raise ValueError(f"unknown model {name!r}; known: {', '.join(known)} (and -melanoma twins)")
    return ModelSpec(name, kind, melanoma, projected)


def model_names(cfg: MelanoGANConfig, with_melanoma: bool = True) -> list[str]:
    """The models a profile trains: the four MelanoGAN models, Furger's (cfg.furger), and with
    cfg.melanoma_only (and `with_melanoma`, false for a dataset without melanoma) their melanoma-only
    twins."""
    names = list(MELANOMA_KINDS) + (["furger-dcgan"] if cfg.furger else [])
    if cfg.melanoma_only and with_melanoma:
        names += [k + MELANOMA_SUFFIX for k in MELANOMA_KINDS]
    return names


# ----------------------------------------------------------------------------------------------------------
# Networks and the recipe


def build_networks(kind: str, cfg: MelanoGANConfig, image_size: int) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) of a model kind at `image_size`."""
    widths = dict(base=cfg.base_filters, max_filters=cfg.max_filters)
    if kind == "dcgan":
        return (DCGANGenerator(image_size, cfg.noise_dim, **widths), DCGANDiscriminator(image_size, **widths))
    if kind == "lapgan":
        G = lp.LaplacianGenerator(image_size, cfg.pyramid_levels, cfg.noise_dim,
                                  level_filters=cfg.level_filters, noise_channels=cfg.noise_channels,
                                  level_layers=cfg.level_layers, **widths)
        return G, lp.LaplacianDiscriminator(image_size, cfg.pyramid_levels, **widths)
    if kind in ("ddgan-upsample", "ddgan-deconv"):
        G = lp.DDGANGenerator(image_size, cfg.pyramid_levels, kind.split("-")[1], cfg.noise_dim,
                              level_filters=cfg.level_filters, level_layers=cfg.level_layers, **widths)
        return G, lp.MultiLevelDiscriminator(image_size, cfg.pyramid_levels, **widths)
    if kind == "furger-dcgan":
        return (FurgerGenerator(image_size, cfg.furger_noise_dim, cfg.furger_filters),
                FurgerDiscriminator(image_size, cfg.furger_d_filters, cfg.furger_dropout))
    raise ValueError(f"unknown model kind {kind!r}; use one of {KINDS}")


def smoothed_bce_d(real: torch.Tensor, fake: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Furger's D loss: BCE with logits, real targets 1 - smoothing / 2 (Keras' label smoothing), fake 0;
    halved like every other D loss of the repository."""
    real_target = torch.full_like(real, 1.0 - smoothing / 2)
    return 0.5 * (F.binary_cross_entropy_with_logits(real, real_target)
                  + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


class NoiseGANRecipe:
    """Batches are float images (N, 3, S, S) in [-1, 1] (`ImageDataset`). Generator outputs and discriminator
    inputs are lists with one entry per pyramid level (one entry for DCGAN and Furger's model)."""

    def __init__(self, name: str, cfg: MelanoGANConfig, image_size: int,
                 projected: ProjectedConfig | None = None):
        self.spec, self.cfg, self.image_size = parse_model(name), cfg, image_size
        self.kind = self.spec.kind
        self.generator, self.discriminator = build_networks(self.kind, cfg, image_size)
        self.projected = (projected or ProjectedConfig()) if self.spec.projected else None
        if self.projected is not None:
            from dermgan.models import projected as pj

            self.discriminator = pj.build(self.projected, features=False)
        self.data_record: dict = {}  # what it was trained on (train_model fills it): resume must match it

    # -- helpers
    def _draw_noise(self, n: int, device) -> list[torch.Tensor]:
        return [torch.randn(n, *shape, device=device) for shape in self.generator.noise_shapes()]

    def _real_inputs(self, real: torch.Tensor) -> list[torch.Tensor]:
        if self.kind == "lapgan":
            pyramid = lp.gaussian_pyramid(real, self.cfg.pyramid_levels)
            residuals = lp.laplacian_residuals(pyramid)
            return [pyramid[0]] + [torch.cat([h, lp.up(g)], 1) for h, g in zip(residuals, pyramid)]
        if self.kind.startswith("ddgan"):
            return lp.gaussian_pyramid(real, self.cfg.pyramid_levels)
        return [real]

    def _fake_inputs(self, real: torch.Tensor, outputs: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.kind == "lapgan":  # residuals are judged with the real coarse image they were conditioned on
            pyramid = lp.gaussian_pyramid(real, self.cfg.pyramid_levels)
            return [outputs[0]] + [torch.cat([h, lp.up(g)], 1) for h, g in zip(outputs[1:], pyramid)]
        return outputs

    @property
    def d_threshold(self) -> float:
        return losses.decision_threshold("vanilla" if self.kind == "furger-dcgan" else self.cfg.gan_loss)

    def _multi_level(self) -> bool:
        return self.kind in ("lapgan", "ddgan-upsample", "ddgan-deconv")

    def _judge_pair(self, critic, real: list[torch.Tensor], fake: list[torch.Tensor]):
        """D's outputs on real and generated inputs, one list entry per level (per depth of a projected D; one
        for a single-scale D)."""
        if self._multi_level():
            return critic.pair(real, fake)
        real_out, fake_out = critic.pair(real[0], fake[0])
        return _outputs(real_out), _outputs(fake_out)

    # -- what the training loop calls
    def generate(self, G: nn.Module, batch: torch.Tensor) -> list[torch.Tensor]:
        noises = self._draw_noise(len(batch), batch.device)
        if self.kind == "lapgan":  # each level conditioned on the real coarse image (Denton et al.)
            pyramid = lp.gaussian_pyramid(batch, self.cfg.pyramid_levels)
            return G(noises, [lp.up(g) for g in pyramid[:-1]])
        if self.kind.startswith("ddgan"):
            return G(noises)
        return [G(noises[0])]

    def d_loss(self, critic, batch, outputs):
        real, fake = self._judge_pair(critic, self._real_inputs(batch), self._fake_inputs(batch, outputs))
        if self.kind == "furger-dcgan":
            smoothing = self.cfg.label_smoothing
            loss = torch.stack([smoothed_bce_d(r, f, smoothing) for r, f in zip(real, fake)]).mean()
        else:
            loss = losses.adversarial_d(real, fake, self.cfg.gan_loss)  # mean over levels
        return loss, {"d_adv": loss}

    def g_loss(self, critic, batch, outputs):
        inputs = self._fake_inputs(batch, outputs)
        fake = critic.fake(inputs) if self._multi_level() else _outputs(critic.fake(inputs[0]))
        mode = "vanilla" if self.kind == "furger-dcgan" else self.cfg.gan_loss
        loss = losses.adversarial_g(fake, mode)
        return loss, {"g_adv": loss}

    def sample_rows(self, G: nn.Module, batch):
        """generated (fixed noise) | real."""
        noises = [z.to(batch.device) for z in image_noise(G, range(len(batch)), GRID_SEED)]
        return [to_uint8(G.synthesise(noises)), to_uint8(batch)]

    def metadata(self) -> dict:
        meta = {"model": self.spec.name, "kind": self.kind, "melanoma_only": self.spec.melanoma_only,
                "melanogan_config": dataclasses.asdict(self.cfg), "image_size": self.image_size,
                "data": dict(self.data_record)}
        if self.projected is not None:  # only then: other models' checkpoints keep their metadata
            meta["projected"] = dataclasses.asdict(self.projected)
        return meta

    def parameter_counts(self) -> dict[str, int]:
        return {"generator": count_parameters(self.generator),
                "discriminator": count_parameters(self.discriminator)}


def _outputs(output) -> list[torch.Tensor]:
    """A single-image D's output as a list of logit tensors (a projected D gives one per depth)."""
    return list(output) if isinstance(output, (list, tuple)) else [output]


def build(name: str, cfg: MelanoGANConfig, image_size: int, projected: ProjectedConfig | None = None
          ) -> NoiseGANRecipe:
    return NoiseGANRecipe(name, cfg, image_size, projected)


# ----------------------------------------------------------------------------------------------------------
# Data and training


class ImageDataset(torch.utils.data.Dataset):
    """uint8 (N, H, W, 3) images -> float (3, H, W) in [-1, 1]."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_model(np.array(self.images[index]))[0]  # a copy: cached arrays are read-only memmaps


def melanoma_label(classes) -> int | None:
    """Index of the melanoma class in a dataset's classes, or None when it has none."""
    for i, name in enumerate(classes):
        if str(name).lower() in MELANOMA_NAMES:
            return i
    return None


def training_images(name: str, train_data) -> np.ndarray:
    """The uint8 images a model is trained on, from a SkinData training split (or, from a held-out split, the
    held-out images of the model's kind)."""
    spec = parse_model(name)
    if spec.melanoma_only:
        label = melanoma_label(train_data.classes)
        if label is None:
            raise ValueError(f"{name}: dataset {train_data.name} has no melanoma class (classes: "
                             f"{', '.join(train_data.classes)})")
        return np.asarray(train_data.images[train_data.table["label"].to_numpy() == label])
    images = np.asarray(train_data.images)
    if spec.kind == "furger-dcgan" and train_data.healthy is not None:
        images = np.concatenate([images, np.asarray(train_data.healthy)])  # healthy and lesioned skin
    return images


def train_config(name: str, cfg: MelanoGANConfig, seed: int = 0, device: str = "auto") -> TrainConfig:
    if parse_model(name).kind != "furger-dcgan":
        return loop_settings(cfg, seed, device)
    return loop_settings(cfg, seed, device, lr_g=cfg.furger_lr, lr_d=cfg.furger_lr, beta1=cfg.furger_beta1)


def check_resumable(checkpoint_path, recipe: NoiseGANRecipe) -> None:
    """Refuse to resume a checkpoint written for other data or other model settings."""
    if not checkpoint_path.exists():
        return
    saved = load_training_checkpoint(checkpoint_path).get("recipe", {})
    current = recipe.metadata()
    differing = sorted(k for k in current if saved.get(k) != current[k])
    if differing:
        raise CheckpointError(f"{checkpoint_path} was trained with other {', '.join(differing)} than this "
                              "run (e.g. another dataset or profile); use another run_dir or resume=False")


def train_model(name: str, ctx, train_data, resume: bool = True, holdout_data=None):
    """Train one named model on a SkinData training split with the run context's profile: (recipe, result).

    `holdout_data` (the validation split) makes the loop log D's accuracy on its real images of the model's kind
    (melanomas for a melanoma-only model) beside the training ones. Writes checkpoints/<name>/{last.pt,
    generator.pt, grids/step_*.png} and logs/<name>.csv in the run directory.
    """
    from dermgan.metrics.features import data_hash
    from dermgan.train import data_fingerprint, train

    cfg = ctx.profile.melanogan
    images = training_images(name, train_data)
    if len(images) < cfg.batch_size:
        raise ValueError(f"{name}: {len(images)} training images in {train_data.name}, fewer than one batch "
                         f"of {cfg.batch_size}; lower batch_size or use more data")
    with initial_weights(ctx.seed):
        recipe = build(name, cfg, train_data.image_size, ctx.profile.projected)
    recipe.data_record = {"dataset": train_data.name, "n_images": len(images), "sha1": data_hash(images)}
    folder = ctx.run_dir / "checkpoints" / name
    if resume:
        check_resumable(folder / "last.pt", recipe)
    holdout = None
    if holdout_data is not None:
        held = training_images(name, holdout_data)  # the held-out images of the model's kind
        holdout = ImageDataset(held) if len(held) else None
    result = train(recipe, ImageDataset(images), train_config(name, cfg, ctx.seed, str(ctx.device)), folder,
                   ctx.path("logs", f"{name}.csv"), folder / "grids", resume=resume, desc=name, holdout=holdout,
                   provenance=data_fingerprint(train_data, ctx.data_root))  # the split its images come from
    return recipe, result


# ----------------------------------------------------------------------------------------------------------
# Sampling


def image_noise(G: nn.Module, rows, seed: int) -> list[torch.Tensor]:
    """G's noise inputs for the images `rows` of `seed`: each image from its own generator seeded by
    (seed, row), so an image does not depend on which other images are drawn with it."""
    per_image = []
    for row in rows:
        state = np.random.SeedSequence([seed, int(row)]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        per_image.append([torch.randn(shape, generator=generator) for shape in G.noise_shapes()])
    return [torch.stack(parts) for parts in zip(*per_image)]


@torch.no_grad()
def sample_images(G: nn.Module, n: int, seed: int = 0, batch_size: int = 64, device=None,
                  first: int = 0) -> np.ndarray:
    """n generated images, uint8 (n, H, W, 3): images first .. first + n - 1 of `seed` (a long series can be
    drawn part by part); G runs in eval mode (batch-norm running statistics)."""
    if n < 1:
        raise ValueError(f"sample_images: n must be >= 1, got {n}")
    device = torch.device(device) if device is not None else next(G.parameters()).device
    was_training = G.training
    G.eval()
    try:
        out = []
        for start in range(first, first + n, batch_size):
            noises = image_noise(G, range(start, min(first + n, start + batch_size)), seed)
            out.append(to_uint8(G.synthesise([z.to(device) for z in noises])))
    finally:
        G.train(was_training)
    return np.concatenate(out)


def load_generator(checkpoint_dir, device="cpu") -> tuple[nn.Module, dict]:
    """(generator in eval mode, recipe metadata) from `checkpoint_dir/generator.pt` written by the loop; the
    metadata adds "weights" (ema | raw) and "training" (what trained it: dermgan.provenance.training_of)."""
    from pathlib import Path

    from dermgan.provenance import training_of

    path = Path(checkpoint_dir) / "generator.pt"
    saved = load_checkpoint(path)
    if not isinstance(saved, dict) or "generator" not in saved or "kind" not in saved.get("recipe", {}):
        raise ValueError(f"{path} is not a generator file of a dermgan.models.melanogan model")
    meta = saved["recipe"]
    with initial_weights(0):  # its weights are loaded: building must not draw from the caller's random streams
        G, _ = build_networks(meta["kind"], MelanoGANConfig(**meta["melanogan_config"]), meta["image_size"])
    G.load_state_dict(generator_weights(saved))  # the EMA of G when the run kept one
    return G.to(device).eval(), {**meta, "weights": "ema" if saved.get("ema") is not None else "raw",
                                 "training": training_of(saved)}


def write_model_samples(ctx, name: str, n: int, classes, meta: dict) -> np.ndarray:
    """samples/<name>/samples.npz + meta.json for 05 (and 07 for melanoma models): n images from seed ctx.seed
    of the evaluated generator of checkpoints/<name> (the EMA when the run kept one); condition = melanoma's
    index for melanoma-only models, -1 ("all lesions") otherwise; Fitzpatrick and source index -1 (unknown / not
    generated from a test input). Returns the images."""
    from dermgan.models.dermgan import write_samples

    G, saved = load_generator(ctx.run_dir / "checkpoints" / name, device=ctx.device)
    images = sample_images(G, n, ctx.seed, device=ctx.device)
    condition = melanoma_label(classes) if parse_model(name).melanoma_only else -1
    minus_one = np.full(n, -1, np.int64)
    write_samples(ctx.run_dir, name, images, np.full(n, condition, np.int64), minus_one, minus_one,
                  {"profile": ctx.profile.name, "seed": ctx.seed, "weights": saved["weights"],
                   "training": saved["training"], **meta})
    return images
