"""Pix2Pix and DermGAN as configurations of one recipe for `dermgan.train.train`.

DermGAN's changes to Pix2Pix (papers.md sec. 1.3, partly unverified) are switches, so each can be ablated:

    upsample       "transpose" (pix2pix) | "resize" (nearest-neighbour x2 + conv, DermGAN) | "bilinear" (x2 + conv)
    lambda_lesion  weight of the lesion-masked L1 on top of the whole-image L1 (0 = off)
    n_scales       1 = one 70x70 PatchGAN (pix2pix); > 1 = multi-scale D (pix2pixHD style)
    lambda_fm      feature matching on D's features, pix2pixHD weights (0 = off; works with one scale too)
    encoding       "colour" (the paper's colour-coded map) | "onehot" (one channel per condition)

Named variants: "pix2pix" (all switches at the Pix2Pix value, colour maps), "dermgan" (all DermGAN switches at
the profile's values) and one ablation per switch, each differing from "dermgan" in exactly one field.

Beyond the ablation, `build` and `train_variant` know two models that are not switches of pix2pix:
"dermgan-projected" (DermGAN with the projected discriminator of dermgan.models.projected instead of the
PatchGANs, settings in the profile's `projected` section) and "oasis" (dermgan.models.oasis, its own section);
`load_generator` and `evaluated_generator` load every one of them.

Runs: the main "dermgan" model trains cfg.steps under its own name; the ablation table trains every variant
cfg.seeds times for cfg.ablation_steps under `run_name(variant, seed)` = "<variant>-s<seed>" (checkpoints/,
logs/ and samples/ use that name). Every notebook evaluates the generator that `evaluated_generator` returns.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from dermgan import losses
from dermgan.config import DermGANConfig, ProjectedConfig
from dermgan.data.conditions import N_CONDITIONS
from dermgan.data.semantic import n_channels, render_maps
from dermgan.imageops import to_uint8
from dermgan.integrity import verify_digest, write_with_digest
from dermgan.models.pix2pix import MultiScaleDiscriminator, UNetGenerator, count_parameters
from dermgan.runtime import write_text_atomic
from dermgan.train import TrainConfig, generator_weights, initial_weights, load_checkpoint, loop_settings


@dataclass(frozen=True)
class Variant:
    name: str
    upsample: str = "transpose"
    lambda_lesion: float = 0.0
    n_scales: int = 1
    lambda_fm: float = 0.0
    encoding: str = "colour"


PIX2PIX = Variant("pix2pix")
PROJECTED = "dermgan-projected"  # DermGAN's switches, the projected discriminator instead of the PatchGANs
OASIS = "oasis"  # dermgan.models.oasis


def dermgan_variant(cfg: DermGANConfig) -> Variant:
    return Variant(
        "dermgan",
        upsample=cfg.upsample,
        lambda_lesion=cfg.lambda_lesion,
        n_scales=cfg.n_scales,
        lambda_fm=cfg.lambda_fm,
        encoding=cfg.encoding,
    )


def variants(cfg: DermGANConfig, ablation: bool | None = None) -> dict[str, Variant]:
    """The models to train: pix2pix, dermgan and (with `ablation`, default cfg.ablation) the one-switch-off
    variants.

    A DermGAN switch already at its Pix2Pix value (e.g. encoding "colour") is ablated by flipping it instead,
    so every ablation differs from "dermgan" in exactly one switch.
    """
    full = dermgan_variant(cfg)
    out = {"pix2pix": PIX2PIX, "dermgan": full}
    if not (cfg.ablation if ablation is None else ablation):
        return out
    other_upsample = "transpose" if full.upsample != "transpose" else "resize"
    out[f"dermgan-{other_upsample}"] = dataclasses.replace(
        full, name=f"dermgan-{other_upsample}", upsample=other_upsample
    )
    if full.lambda_lesion:
        out["dermgan-no-lesion-l1"] = dataclasses.replace(
            full, name="dermgan-no-lesion-l1", lambda_lesion=0.0
        )
    if full.n_scales > 1:  # one PatchGAN instead of several; feature matching (if on) stays, on that one
        out["dermgan-single-d"] = dataclasses.replace(full, name="dermgan-single-d", n_scales=1)
    if full.lambda_fm:
        out["dermgan-no-fm"] = dataclasses.replace(full, name="dermgan-no-fm", lambda_fm=0.0)
    other_encoding = "onehot" if full.encoding == "colour" else "colour"
    out[f"dermgan-{other_encoding}"] = dataclasses.replace(
        full, name=f"dermgan-{other_encoding}", encoding=other_encoding
    )
    return out


class Pix2PixRecipe:
    """Batches are (map, image, lesion_mask, condition) from `dermgan.data.semantic.MapDataset`. D judges
    concat(map, image) through the loop's critic (dermgan.critic), which may augment and regularise it."""

    d_colour_channels = slice(-3, None)  # only the image is recoloured by augmentation, never the map
    def __init__(
        self, variant: Variant, cfg: DermGANConfig, image_size: int, n_conditions: int = N_CONDITIONS,
        projected: ProjectedConfig | None = None,
    ):
        self.variant, self.cfg, self.image_size, self.n_conditions = variant, cfg, image_size, n_conditions
        self.projected = projected  # None: the PatchGAN discriminator(s) of the variant
        map_channels = n_channels(variant.encoding, n_conditions)
        self.generator = UNetGenerator(
            map_channels,
            3,
            image_size,
            cfg.base_filters,
            norm=cfg.norm,
            upsample=variant.upsample,
            dropout=cfg.dropout,
            resize_padding=cfg.resize_padding,
            # pix2pix's transposed generator stays as the reference implementation has it (zero padding)
            encoder_padding=cfg.encoder_padding if variant.upsample != "transpose" else "zeros",
        )
        if projected is None:
            self.discriminator = MultiScaleDiscriminator(
                map_channels + 3, cfg.base_filters, cfg.d_layers, cfg.d_norm or cfg.norm, variant.n_scales,
                image_size)
        else:  # the map is concatenated to the backbone's features at every depth
            from dermgan.models import projected as pj

            self.discriminator = pj.build(projected, map_channels + 3, self.d_colour_channels)

    @property
    def d_threshold(self) -> float:
        return losses.decision_threshold(self.cfg.gan_loss)

    # -- what the training loop calls
    def generate(self, G: nn.Module, batch):
        return G(batch[0])

    def d_loss(self, critic, batch, fake):
        semantic, real = batch[0], batch[1]
        real_out, fake_out = critic.pair(torch.cat([semantic, real], 1), torch.cat([semantic, fake], 1))
        loss = losses.adversarial_d([f[-1] for f in real_out], [f[-1] for f in fake_out], self.cfg.gan_loss)
        return loss, {"d_adv": loss}

    def g_loss(self, critic, batch, fake):
        semantic, real, lesion = batch[0], batch[1], batch[2]
        if self.variant.lambda_fm:  # real and generated through the same augmentation: features line up
            real_out, fake_out = critic.pair(torch.cat([semantic, real], 1), torch.cat([semantic, fake], 1))
        else:
            fake_out = critic.fake(torch.cat([semantic, fake], 1))
        adv = losses.adversarial_g([f[-1] for f in fake_out], self.cfg.gan_loss)
        l1 = losses.l1(fake, real)
        logs = {"g_adv": adv, "g_l1": l1}
        total = adv + self.cfg.lambda_l1 * l1
        if self.variant.lambda_lesion:
            lesion_l1 = losses.masked_l1(fake, real, lesion)
            total = total + self.variant.lambda_lesion * lesion_l1
            logs["g_lesion_l1"] = lesion_l1
        if self.variant.lambda_fm:
            fm = losses.feature_matching(real_out, fake_out)  # the real features are constants
            total = total + self.variant.lambda_fm * fm
            logs["g_fm"] = fm
        return total, logs

    def sample_rows(self, G: nn.Module, batch):
        """map | generated | real."""
        return [
            render_maps(batch[0], self.variant.encoding, self.n_conditions),
            to_uint8(G(batch[0])),
            to_uint8(batch[1]),
        ]

    def metadata(self) -> dict:
        meta = {
            "variant": dataclasses.asdict(self.variant),
            "dermgan_config": dataclasses.asdict(self.cfg),
            "image_size": self.image_size,
            "n_conditions": self.n_conditions,
        }
        if self.projected is not None:  # only then: checkpoints of the PatchGAN variants keep their metadata
            meta["projected"] = dataclasses.asdict(self.projected)
        return meta

    def parameter_counts(self) -> dict[str, int]:
        return {
            "generator": count_parameters(self.generator),
            "discriminator": count_parameters(self.discriminator),
        }


def build(name: str, cfg: DermGANConfig, image_size: int, n_conditions: int = N_CONDITIONS,
          projected: ProjectedConfig | None = None) -> Pix2PixRecipe:
    """The recipe of a named variant (see `variants`), or of "dermgan-projected" (with `projected`, default
    ProjectedConfig())."""
    if name == PROJECTED:
        variant = dataclasses.replace(dermgan_variant(cfg), name=PROJECTED)
        return Pix2PixRecipe(variant, cfg, image_size, n_conditions, projected or ProjectedConfig())
    known = variants(cfg, ablation=True)
    if name not in known:
        names = ", ".join([*known, PROJECTED, OASIS])
        raise ValueError(f"unknown model {name!r}; known for this config: {names}")
    return Pix2PixRecipe(known[name], cfg, image_size, n_conditions)


def train_config(cfg: DermGANConfig, seed: int = 0, device: str = "auto") -> TrainConfig:
    """The loop settings of a DermGANConfig."""
    return loop_settings(cfg, seed, device)


def run_name(variant: str, seed: int) -> str:
    """Folder name of one ablation-table run: checkpoints/, logs/ and samples/ use "<variant>-s<seed>"."""
    return f"{variant}-s{seed}"


def compared_run(model: str, seed: int, main_seed: int, main_schedule: bool = True) -> str:
    """Folder name of one run of 02's comparison beyond DermGAN (profile section `compare`): the model's own
    name for the main seed ("dermgan": the main run itself, when the comparison keeps the main schedule), else
    "<model>-full-s<seed>" (full: the comparison's schedule, not the ablation's)."""
    if seed == main_seed and (model != "dermgan" or main_schedule):
        return model
    return f"{model}-full-s{seed}"


def ablation_runs(cfg: DermGANConfig, seed: int, ablation: bool | None = None) -> list[tuple[str, str, int]]:
    """(run name, variant, seed) of the ablation table: every variant x seeds seed .. seed + cfg.seeds - 1."""
    if cfg.seeds < 1:
        raise ValueError(f"DermGANConfig.seeds must be >= 1, got {cfg.seeds}")
    return [(run_name(v, s), v, s) for v in variants(cfg, ablation) for s in range(seed, seed + cfg.seeds)]


def training_dataset(train_data, recipe: "Pix2PixRecipe", steps: int, seed: int):
    """MapDataset of a split, wrapped in the profile's joint augmentation (dermgan.data.augment) when it is on."""
    from dermgan.data.augment import AugmentedPairs, copies_for
    from dermgan.data.semantic import MapDataset

    cfg = recipe.cfg
    dataset = MapDataset(train_data, recipe.variant.encoding)
    if not (cfg.augment_flip or cfg.augment_jitter > 1.0):
        return dataset
    copies = copies_for(steps, cfg.batch_size, len(dataset))
    return AugmentedPairs(dataset, copies, seed, cfg.augment_flip, cfg.augment_jitter)


def train_variant(
    name: str, ctx, train_data, resume: bool = True, seed: int | None = None, steps: int | None = None,
    run: str | None = None, holdout_data=None,
):
    """Train one named variant on a SkinData split with the run context's profile; returns (recipe, result).

    `seed` (default ctx.seed) and `steps` (default the profile's) select the run; `run` names its folders
    (default `name`); `holdout_data` (the validation split) makes the loop log D's accuracy on its real images
    beside the training ones. Writes checkpoints/<run>/{last.pt, generator.pt, grids/step_*.png} and
    logs/<run>.csv in the run directory.
    """
    from dermgan.data.semantic import MapDataset
    from dermgan.train import data_fingerprint, train

    seed = ctx.seed if seed is None else seed
    run = name if run is None else run
    if name == OASIS:  # its own recipe and profile section (dermgan.models.oasis)
        from dermgan.models import oasis

        return oasis.train_variant(ctx, train_data, resume, seed, steps, run, holdout_data)
    cfg = ctx.profile.dermgan
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)
    with initial_weights(seed):
        recipe = build(name, cfg, train_data.image_size, len(train_data.classes), ctx.profile.projected)
    folder = ctx.run_dir / "checkpoints" / run
    dataset = training_dataset(train_data, recipe, cfg.steps, seed)
    result = train(
        recipe,
        dataset,
        train_config(cfg, seed, str(ctx.device)),
        folder,
        ctx.path("logs", f"{run}.csv"),
        folder / "grids",
        resume=resume,
        desc=run,
        provenance=data_fingerprint(train_data, ctx.data_root),  # resume refuses a checkpoint of other data
        holdout=None if holdout_data is None else MapDataset(holdout_data, recipe.variant.encoding),
    )
    return recipe, result


# ----------------------------------------------------------------------------------------------------------
# Using trained generators


def _generator_file(checkpoint_dir: str | Path) -> tuple[Path, dict]:
    path = Path(checkpoint_dir) / "generator.pt"
    saved = load_checkpoint(path)
    if not isinstance(saved, dict) or "generator" not in saved or "recipe" not in saved:
        raise ValueError(f"{path} is not a generator file written by dermgan.train")
    return path, saved


def _section(meta: dict) -> dict:
    """The settings section a map-conditioned model's metadata records (DermGAN's or OASIS's)."""
    return meta["oasis_config"] if "oasis_config" in meta else meta["dermgan_config"]


def _untrained_generator(meta: dict) -> nn.Module:
    if "oasis_config" in meta:
        from dermgan.models.oasis import generator_from_metadata

        return generator_from_metadata(meta)
    variant = Variant(**meta["variant"])
    return Pix2PixRecipe(variant, DermGANConfig(**meta["dermgan_config"]), meta["image_size"],
                         meta["n_conditions"]).generator


def load_generator(checkpoint_dir: str | Path, use_ema: bool = True, device="cpu") -> tuple[nn.Module, dict]:
    """(generator in eval mode, recipe metadata) from `checkpoint_dir/generator.pt` written by the loop, for
    every map-conditioned model (pix2pix, DermGAN and its variants, dermgan-projected, oasis)."""
    _, saved = _generator_file(checkpoint_dir)
    meta = saved["recipe"]
    G = _untrained_generator(meta)
    G.load_state_dict(generator_weights(saved, use_ema))
    return G.to(device).eval(), meta


EVAL_WEIGHTS = ("ema", "raw")


def evaluated_generator(checkpoint_dir: str | Path, device="cpu") -> tuple[nn.Module, dict]:
    """THE generator that notebooks 02, 05 (through samples/) and 06 evaluate, from checkpoint_dir/generator.pt.

    Weights: the EMA of G when the run kept one and its config says eval_weights="ema", else the raw G.
    Normalisation: eval mode (dropout off; instance norm uses the image's own statistics, batch norm its running
    ones), so an image depends only on its own map and not on the batch it is generated in. Returns (G, metadata)
    with metadata["evaluation"] recording that choice (weights, normalisation, step); write it into
    samples/<model>/meta.json.
    """
    path, saved = _generator_file(checkpoint_dir)
    want = _section(saved["recipe"]).get("eval_weights", "ema")
    if want not in EVAL_WEIGHTS:
        raise ValueError(f"{path}: eval_weights {want!r} is not one of {EVAL_WEIGHTS}")
    use_ema = want == "ema" and saved.get("ema") is not None
    G, meta = load_generator(checkpoint_dir, use_ema=use_ema, device=device)
    meta = dict(meta)
    meta["evaluation"] = {
        "weights": "ema" if use_ema else "raw",
        "normalisation": "eval",
        "step": int(saved.get("step", -1)),
    }
    return G, meta


def generate(
    model: nn.Module | Pix2PixRecipe,
    maps: torch.Tensor,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Generated images uint8 (N,H,W,3) for maps (N,C,H,W); the generator runs in eval mode (no dropout;
    instance or running batch statistics), so an image does not depend on the other maps of its batch.

    Batched, under inference_mode and in channels_last layout: 12x a naive batch-1 forward on the CPU with
    bit-identical images (benchmarks/bench_sampling.py); bf16 would add little and change pixels, so it is not used.
    """
    G = model.generator if isinstance(model, Pix2PixRecipe) else model
    device = torch.device(device) if device is not None else next(G.parameters()).device
    was_training = G.training
    # The layout changes outside inference_mode: parameters converted inside it would become inference tensors,
    # which a later training step could not use.
    G.eval().to(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            out = [to_uint8(G(maps[i : i + batch_size].to(device).float()
                              .contiguous(memory_format=torch.channels_last)))
                   for i in range(0, len(maps), batch_size)]
    finally:
        G.train(was_training).to(memory_format=torch.contiguous_format)  # training code expects the default
    return np.concatenate(out) if out else np.zeros((0, *maps.shape[2:], 3), np.uint8)


def write_samples(
    run_dir: str | Path, model_name: str, images: np.ndarray, condition, fitzpatrick, source_index, meta: dict
) -> Path:
    """samples/<model>/samples.npz (with its SHA-256) + meta.json (CONVENTIONS.md), written atomically;
    returns the npz path."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"samples must be uint8 (N,H,W,3), got {images.dtype} {images.shape}")
    arrays = {
        "images": images,
        "condition": np.asarray(condition, np.int64),
        "fitzpatrick": np.asarray(fitzpatrick, np.int64),
        "source_index": np.asarray(source_index, np.int64),
    }
    for key, value in arrays.items():
        if len(value) != len(images):
            raise ValueError(f"samples: {key} has {len(value)} entries for {len(images)} images")
    folder = Path(run_dir) / "samples" / model_name
    write_with_digest(folder / "samples.npz", lambda f: np.savez_compressed(f, **arrays))
    record = json.dumps({"model": model_name, **meta}, indent=2, default=str) + "\n"
    write_text_atomic(folder / "meta.json", record)
    return folder / "samples.npz"


def read_samples(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a samples.npz written by write_samples, once its SHA-256 is checked: a damaged file, or
    one of an older version, is a one-line error naming it and the way out (dermgan.integrity)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; run the notebook that trains {path.parent.name}")
    verify_digest(path)
    with np.load(path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def reconstruction_errors(
    generated: np.ndarray, real: np.ndarray, lesion_masks: np.ndarray
) -> dict[str, float]:
    """Held-out reconstruction error in intensity units [0, 1]: mean |generated - real| over the whole image
    and over lesion pixels only (pixel-weighted over the set; images without a lesion pixel add nothing)."""
    diff = np.abs(generated.astype(np.float64) - real.astype(np.float64)).mean(axis=-1) / 255.0
    lesion = lesion_masks.astype(bool)
    return {
        "l1": float(diff.mean()),
        "l1_lesion": float(diff[lesion].mean()) if lesion.any() else float("nan"),
    }
