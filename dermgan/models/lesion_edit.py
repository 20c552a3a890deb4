"""Lesion addition and removal (Furger et al. 2020, papers.md sec. 3.4-3.5) as training-loop recipes.

Two methods, each trained in both directions at once (one generator per direction inside one module):

- mask-guided ("masked", "masked-paired"): G["add"](healthy image, target mask, condition) -> that lesion
  inside the mask; G["remove"](lesion image, its mask) -> healed skin. Losses per direction: adversarial in
  the target domain (a PatchGAN that also sees the mask, and for lesions the condition), Furger's "relevancy"
  MSE that keeps the pixels outside the mask, and - only in "masked-paired" - an L1 against the renderer's
  ground truth (the same skin with / without its lesion), so the value of pairing can be measured.
- CycleGAN ("cyclegan", "cyclegan-mask"): unpaired, cycle + identity losses (dermgan.models.cyclegan).

On real data without healthy twins only the mask-guided removal runs ("masked-remove").

Batches (EditDataset): item i holds the healthy skin h_i with the mask m_i and condition c_i of the lesion to
add (ground truth: the lesion image x_i), and the lesion image x_j of another item j (its mask, condition, and
ground truth h_j) to remove. The discriminators' real images are h_i and x_j: the unpaired methods never see
the same skin in both states within an item's losses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from dermgan import losses
from dermgan.config import LesionEditConfig
from dermgan.imageops import to_model, to_uint8
from dermgan.models.cyclegan import CycleGANRecipe
from dermgan.models.edit_inputs import EditorPair, add_channels, add_input, remove_channels, remove_input
from dermgan.models.pix2pix import PatchDiscriminator, UNetGenerator, count_parameters
from dermgan.train import TrainConfig, generator_weights, initial_weights, load_checkpoint, loop_settings

METHODS = ("masked", "masked-paired", "cyclegan", "cyclegan-mask")
REAL_DATA_METHODS = ("masked-remove",)


def partners(n: int, seed: int) -> np.ndarray:
    """A seeded permutation with no fixed point (one cycle through a random order): item i's partner."""
    if n < 2:
        raise ValueError(f"lesion editing needs at least 2 training images, got {n}")
    order = np.random.default_rng([seed, 16]).permutation(n)
    out = np.empty(n, np.int64)
    out[order] = np.roll(order, -1)
    return out


class EditDataset:
    """Torch dataset of dicts over SkinData with lesion masks (see the module docstring).

    Without healthy twins (real data) item i's "healthy" entry is the lesion image itself with a mask over
    skin that is known healthy: the partner's mask shifted by half the image, minus the image's own lesion.
    Its discriminator then learns what healthy skin inside a mask looks like; the mask shapes differ from
    lesion masks (cut out), which a discriminator can notice - a limitation of having no healthy images.
    """

    def __init__(self, data, seed: int = 0):
        if data.lesion_masks is None:
            raise ValueError(f"{data.name}: lesion editing needs lesion masks, and this dataset has none")
        self.data, self.has_twins = data, data.healthy is not None
        self.partner = partners(len(data), seed)
        self.labels = data.table["label"].to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self.data)

    def _image(self, array, i):
        return to_model(np.array(array[i]))[0]

    def _mask(self, i) -> torch.Tensor:
        return torch.from_numpy((np.asarray(self.data.lesion_masks[i]) > 0).astype(np.float32))[None]

    def __getitem__(self, i: int) -> dict:
        d, j = self.data, int(self.partner[i])
        item = {
            "mask": self._mask(i), "condition": int(self.labels[i]),
            "lesion": self._image(d.images, j), "lesion_mask": self._mask(j),
            "lesion_condition": int(self.labels[j]),
        }
        if self.has_twins:
            item.update(healthy=self._image(d.healthy, i), paired_lesion=self._image(d.images, i),
                        paired_healthy=self._image(d.healthy, j))
        else:
            size = self._mask(i).shape[-1]
            shifted = torch.roll(self._mask(j), (size // 2, size // 2), (1, 2))
            item.update(healthy=self._image(d.images, i), mask=shifted * (1 - self._mask(i)))
        return item


# ----------------------------------------------------------------------------------------------------------
# The mask-guided recipe


class MaskGuidedRecipe:
    """Furger's supervised add / remove models: U-Net generators (the skip-connected encoder-decoder of
    pix2pix, like their SkipResidual nets) that see image + mask (+ condition planes for addition)."""

    method = "masked"
    d_colour_channels = slice(0, 3)  # D sees concat(image, mask, [condition planes]): recolour the image only

    @property
    def d_threshold(self) -> float:
        return losses.decision_threshold(self.cfg.gan_loss)

    def __init__(self, cfg: LesionEditConfig, image_size: int, n_conditions: int, paired: bool,
                 directions: tuple[str, ...] = ("add", "remove")):
        unknown = set(directions) - {"add", "remove"}
        if unknown or not directions:
            raise ValueError(f"directions must be a non-empty subset of ('add', 'remove'), got {directions}")
        self.cfg, self.image_size, self.n_conditions = cfg, image_size, n_conditions
        self.paired, self.directions, self.use_mask = paired, tuple(directions), True
        channels = {"add": add_channels(n_conditions), "remove": remove_channels()}
        self.generator = EditorPair({
            d: UNetGenerator(channels[d], 3, image_size, cfg.base_filters, norm=cfg.norm, upsample="resize",
                             dropout=0.0, resize_padding="reflect")
            for d in self.directions})
        domain = {"add": "lesion", "remove": "healthy"}
        self.discriminator = EditorPair({
            domain[d]: PatchDiscriminator(channels[d], cfg.base_filters, cfg.d_layers, cfg.norm)
            for d in self.directions})

    def generate(self, G, batch):
        out = {}
        if "add" in self.directions:
            x = add_input(batch["healthy"], batch["mask"], batch["condition"], self.n_conditions)
            out["add"] = G("add", x)
        if "remove" in self.directions:
            out["remove"] = G("remove", remove_input(batch["lesion"], batch["lesion_mask"]))
        return out

    def _d_inputs(self, batch, out):
        """(domain, real input, fake input, edited image's source, its mask, paired ground truth key)."""
        rows = []
        if "add" in out:
            rows.append(("lesion",
                         add_input(batch["lesion"], batch["lesion_mask"], batch["lesion_condition"],
                                   self.n_conditions),
                         add_input(out["add"], batch["mask"], batch["condition"], self.n_conditions),
                         "add", batch["healthy"], batch["mask"], "paired_lesion"))
        if "remove" in out:
            rows.append(("healthy", remove_input(batch["healthy"], batch["mask"]),
                         remove_input(out["remove"], batch["lesion_mask"]),
                         "remove", batch["lesion"], batch["lesion_mask"], "paired_healthy"))
        return rows

    def d_loss(self, critic, batch, out):
        logs, total = {}, 0.0
        for domain, real, fake, *_ in self._d_inputs(batch, out):
            loss = losses.adversarial_d(*critic.pair(real, fake, domain), self.cfg.gan_loss)
            logs[f"d_{domain}"] = loss
            total = total + loss
        return total, logs

    def g_loss(self, critic, batch, out):
        cfg, logs, total = self.cfg, {}, 0.0
        for domain, _, fake, direction, source, mask, truth in self._d_inputs(batch, out):
            adv = losses.adversarial_g(critic.fake(fake, domain), cfg.gan_loss)
            keep = losses.relevancy_loss(out[direction], source, mask)
            logs[f"g_adv_{domain}"], logs[f"g_relevancy_{direction}"] = adv, keep
            total = total + adv + cfg.lambda_relevancy * keep
            if self.paired:
                if truth not in batch:
                    raise ValueError(f"the paired method needs ground truth {truth!r}: a dataset with "
                                     "healthy twins (the synthetic one)")
                pixel = losses.l1(out[direction], batch[truth])
                logs[f"g_pixel_{direction}"] = pixel
                total = total + cfg.lambda_pixel * pixel
        return total, logs

    def sample_rows(self, G, batch):
        out = self.generate(G, batch)
        rows = []
        if "add" in out:
            rows += [to_uint8(batch["healthy"]), to_uint8(out["add"])]
        if "remove" in out:
            rows += [to_uint8(batch["lesion"]), to_uint8(out["remove"])]
        return rows

    def metadata(self) -> dict:
        return {"method": self.method, "paired": self.paired, "directions": list(self.directions),
                "config": dataclasses.asdict(self.cfg), "image_size": self.image_size,
                "n_conditions": self.n_conditions}

    def parameter_counts(self) -> dict[str, int]:
        return {"generator": count_parameters(self.generator),
                "discriminator": count_parameters(self.discriminator)}


# ----------------------------------------------------------------------------------------------------------
# Named methods, training, loading


def build(name: str, cfg: LesionEditConfig, image_size: int, n_conditions: int):
    """The recipe of a named method (METHODS, or REAL_DATA_METHODS for data without healthy twins)."""
    if name == "masked":
        return MaskGuidedRecipe(cfg, image_size, n_conditions, paired=False)
    if name == "masked-paired":
        return MaskGuidedRecipe(cfg, image_size, n_conditions, paired=True)
    if name == "masked-remove":
        return MaskGuidedRecipe(cfg, image_size, n_conditions, paired=False, directions=("remove",))
    if name in ("cyclegan", "cyclegan-mask"):
        return CycleGANRecipe(cfg, image_size, n_conditions, use_mask=name == "cyclegan-mask")
    known = ", ".join(METHODS + REAL_DATA_METHODS)
    raise ValueError(f"unknown lesion-editing method {name!r}; known: {known}")


def methods_for(data) -> tuple[str, ...]:
    """Both methods in both variants where healthy twins exist; otherwise removal only."""
    return METHODS if data.healthy is not None else REAL_DATA_METHODS


def train_config(cfg: LesionEditConfig, seed: int = 0, device: str = "auto") -> TrainConfig:
    return loop_settings(cfg, seed, device)


def run_key(cfg: LesionEditConfig, data) -> str:
    """Folder name of everything trained on `data` with `cfg`: nothing is resumed or reused across either."""
    import hashlib
    import json

    record = {"config": dataclasses.asdict(cfg), "dataset": data.name, "size": data.image_size,
              "images": data.table["image_id"].tolist()}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:10]
    return f"{data.name}-{data.image_size}px-{digest}"


def train_method(name: str, ctx, train_data, resume: bool = True):
    """Train one method on a SkinData split with the run context's profile; returns (recipe, result).

    Writes checkpoints/lesion_edit/<run_key>/<name>/{last.pt, generator.pt, grids/} and
    logs/lesion_edit_<name>.csv.
    """
    from dermgan.train import data_fingerprint, train

    cfg = ctx.profile.lesion_edit
    with initial_weights(ctx.seed):
        recipe = build(name, cfg, train_data.image_size, len(train_data.classes))
    folder = ctx.run_dir / "checkpoints" / "lesion_edit" / run_key(cfg, train_data) / name
    result = train(recipe, EditDataset(train_data, ctx.seed), train_config(cfg, ctx.seed, str(ctx.device)),
                   folder, ctx.path("logs", f"lesion_edit_{name}.csv"), folder / "grids", resume=resume,
                   desc=f"lesion_edit {name}", provenance=data_fingerprint(train_data, ctx.data_root))
    return recipe, result


def load_editor(checkpoint_dir: str | Path, device="cpu", trained_on: dict | None = None):
    """The recipe of `checkpoint_dir/generator.pt` with its trained generators, in eval mode; with `trained_on`
    (`train.data_fingerprint` of a run's training split) it is first checked to have been trained on that data.
    `recipe.training` is what trained it (dermgan.provenance.training_of)."""
    from dermgan.provenance import training_of
    from dermgan.train import check_trained_on

    path = Path(checkpoint_dir) / "generator.pt"
    saved = load_checkpoint(path)
    meta = saved.get("recipe", {}) if isinstance(saved, dict) else {}
    if meta.get("method") not in ("masked", "cyclegan"):
        raise ValueError(f"{path} is not a lesion-editing generator (recipe method {meta.get('method')!r})")
    if trained_on is not None:
        check_trained_on(path, saved.get("provenance"), trained_on)
    cfg = LesionEditConfig(**meta["config"])
    with initial_weights(0):  # its weights are loaded: building must not draw from the caller's random streams
        if meta["method"] == "masked":
            recipe = MaskGuidedRecipe(cfg, meta["image_size"], meta["n_conditions"], meta["paired"],
                                      tuple(meta["directions"]))
        else:
            recipe = CycleGANRecipe(cfg, meta["image_size"], meta["n_conditions"], meta["use_mask"])
    recipe.training = training_of(saved)
    recipe.generator.load_state_dict(generator_weights(saved))  # the EMA when the run kept one
    recipe.generator.to(device).eval()
    return recipe


@torch.no_grad()
def edit(recipe, direction: str, images: np.ndarray, masks: np.ndarray, conditions=None,
         batch_size: int = 64) -> np.ndarray:
    """Raw generator outputs uint8 (N,H,W,3) for uint8 images (N,H,W,3) at the model's size, masks (N,H,W)
    and, for "add", condition indices (N,). Eval mode: an output depends only on its own input."""
    G = recipe.generator
    if direction not in G:
        raise ValueError(f"this model has no {direction!r} direction (it has {', '.join(G.nets)})")
    if direction == "add" and conditions is None:
        raise ValueError("adding a lesion needs the condition of each image")
    if conditions is not None and np.asarray(conditions).dtype.kind not in "iu":  # bools would mean 0 / 1
        raise ValueError(f"conditions must be integer class indices, got {np.asarray(conditions).dtype}")
    device = next(G.parameters()).device
    was_training = G.training
    G.eval()
    out = []
    try:
        for s in range(0, len(images), batch_size):
            image = to_model(np.array(images[s:s + batch_size])).to(device)  # a writable copy
            mask = torch.as_tensor(np.asarray(masks[s:s + batch_size]) > 0, dtype=torch.float32)
            mask = mask[:, None].to(device)
            if direction == "add":
                condition = torch.as_tensor(np.array(conditions[s:s + batch_size]), dtype=torch.long)
                condition = condition.to(device)
                x = add_input(image, mask, condition, recipe.n_conditions, recipe.use_mask)
            else:
                x = remove_input(image, mask, recipe.use_mask)
            out.append(to_uint8(G(direction, x)))
    finally:
        G.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, *np.shape(images)[1:]), np.uint8)
