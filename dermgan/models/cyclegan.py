"""Unpaired lesion addition and removal with CycleGAN (Zhu et al. 2017): a recipe for `dermgan.train.train`.

Networks as in the reference CycleGAN, written from the paper's description: the ResNet generator
(c7s1-w, d2w, d4w, n residual blocks of 4w, u2w, uw, c7s1-3, reflection padding, instance norm, ReLU, tanh)
and the 70x70 PatchGAN of `dermgan.models.pix2pix`, trained with the least-squares GAN loss, L1 cycle loss
(weight lambda_cycle) and identity loss (lambda_identity x lambda_cycle). No image pool of past fakes: its
contents would not be in the checkpoint, and step-exact resume needs every state there.

Domain A is healthy skin, domain B lesioned skin. G["add"] maps A -> B and is told which condition to add
(one-hot planes; Furger et al. had one condition, eczema, so this is our extension), G["remove"] maps B -> A.
With `use_mask` both generators and both discriminators also see the lesion mask (Furger's "TwoWayTwoImages"
model): the target lesion's mask for addition, the lesion's own mask for removal, re-used for the way back.
D["lesion"] sees the condition planes too, so a wrong condition can be judged fake.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from dermgan import losses
from dermgan.config import LesionEditConfig
from dermgan.imageops import to_uint8
from dermgan.models.edit_inputs import EditorPair, add_channels, add_input, remove_channels, remove_input
from dermgan.models.pix2pix import PatchDiscriminator, _norm, count_parameters, init_weights


class ResnetBlock(nn.Module):
    """x + (pad-conv3-norm-ReLU-pad-conv3-norm)(x)."""

    def __init__(self, width: int, norm: str):
        super().__init__()
        bias = norm != "batch"
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3, bias=bias), _norm(norm, width), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(width, width, 3, bias=bias), _norm(norm, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """(N, in_channels, S, S) -> (N, out_channels, S, S) in [-1, 1]; S divisible by 4."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, base: int = 64, n_blocks: int = 9,
                 norm: str = "instance"):
        super().__init__()
        if n_blocks < 0 or base < 1:
            raise ValueError(f"ResnetGenerator needs n_blocks >= 0 and base >= 1, got {n_blocks}, {base}")
        bias = norm != "batch"
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, base, 7, bias=bias), _norm(norm, base),
                  nn.ReLU(True)]
        width = base
        for _ in range(2):  # two stride-2 downsamplings
            layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=bias), _norm(norm, 2 * width),
                       nn.ReLU(True)]
            width *= 2
        layers += [ResnetBlock(width, norm) for _ in range(n_blocks)]
        for _ in range(2):
            up = nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1, bias=bias)
            layers += [up, _norm(norm, width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"ResnetGenerator needs sides divisible by 4, got {tuple(x.shape[-2:])}")
        return self.net(x)


class CycleGANRecipe:
    """Batches are dicts from `dermgan.models.lesion_edit.EditDataset` (the paired fields are never read)."""

    method = "cyclegan"
    d_colour_channels = slice(0, 3)  # D sees concat(image, [mask], [condition planes]): recolour the image only

    @property
    def d_threshold(self) -> float:
        return losses.decision_threshold(self.cfg.gan_loss)

    def __init__(self, cfg: LesionEditConfig, image_size: int, n_conditions: int, use_mask: bool):
        self.cfg, self.image_size, self.n_conditions, self.use_mask = cfg, image_size, n_conditions, use_mask
        self.directions = ("add", "remove")
        a_ch, r_ch = add_channels(n_conditions, use_mask), remove_channels(use_mask)
        self.generator = EditorPair({
            "add": ResnetGenerator(a_ch, 3, cfg.base_filters, cfg.n_res_blocks, cfg.norm),
            "remove": ResnetGenerator(r_ch, 3, cfg.base_filters, cfg.n_res_blocks, cfg.norm),
        })
        # D["lesion"] judges images of domain B with what G["add"] was told; D["healthy"] those of domain A.
        self.discriminator = EditorPair({
            "lesion": PatchDiscriminator(a_ch, cfg.base_filters, cfg.d_layers, cfg.norm),
            "healthy": PatchDiscriminator(r_ch, cfg.base_filters, cfg.d_layers, cfg.norm),
        })

    def _add(self, G, image, mask, condition):
        return G("add", add_input(image, mask, condition, self.n_conditions, self.use_mask))

    def _remove(self, G, image, mask):
        return G("remove", remove_input(image, mask, self.use_mask))

    def generate(self, G, batch):
        h, m, c = batch["healthy"], batch["mask"], batch["condition"]
        x, mx, cx = batch["lesion"], batch["lesion_mask"], batch["lesion_condition"]
        out = {"add": self._add(G, h, m, c), "remove": self._remove(G, x, mx)}
        out["add_back"] = self._remove(G, out["add"], m)  # A -> B -> A
        out["remove_back"] = self._add(G, out["remove"], mx, cx)  # B -> A -> B
        if self.cfg.lambda_identity:
            out["identity_lesion"] = self._add(G, x, mx, cx)  # already in B: G["add"] should leave it alone
            out["identity_healthy"] = self._remove(G, h, m)
        return out

    def _d_inputs(self, batch, out):
        """(domain, real input, fake input) for both discriminators."""
        n = self.n_conditions
        return [
            ("lesion",
             add_input(batch["lesion"], batch["lesion_mask"], batch["lesion_condition"], n, self.use_mask),
             add_input(out["add"], batch["mask"], batch["condition"], n, self.use_mask)),
            ("healthy", remove_input(batch["healthy"], batch["mask"], self.use_mask),
             remove_input(out["remove"], batch["lesion_mask"], self.use_mask)),
        ]

    def d_loss(self, critic, batch, out):
        logs, total = {}, 0.0
        for domain, real, fake in self._d_inputs(batch, out):
            loss = losses.adversarial_d(*critic.pair(real, fake, domain), self.cfg.gan_loss)
            logs[f"d_{domain}"] = loss
            total = total + loss
        return total, logs

    def g_loss(self, critic, batch, out):
        cfg = self.cfg
        logs = {}
        for domain, _, fake in self._d_inputs(batch, out):
            logs[f"g_adv_{domain}"] = losses.adversarial_g(critic.fake(fake, domain), cfg.gan_loss)
        logs["g_cycle"] = losses.cycle_loss(batch["healthy"], out["add_back"]) + \
            losses.cycle_loss(batch["lesion"], out["remove_back"])
        total = logs["g_adv_lesion"] + logs["g_adv_healthy"] + cfg.lambda_cycle * logs["g_cycle"]
        if cfg.lambda_identity:
            logs["g_identity"] = losses.identity_loss(batch["lesion"], out["identity_lesion"]) + \
                losses.identity_loss(batch["healthy"], out["identity_healthy"])
            total = total + cfg.lambda_cycle * cfg.lambda_identity * logs["g_identity"]
        # what the relevancy term would say, logged only: CycleGAN has no term that keeps healthy skin
        with torch.no_grad():
            logs["outside_change"] = losses.relevancy_loss(out["add"], batch["healthy"], batch["mask"])
        return total, logs

    def sample_rows(self, G, batch):
        """healthy | +lesion | lesioned | -lesion."""
        out = self.generate(G, batch)
        return [to_uint8(batch["healthy"]), to_uint8(out["add"]), to_uint8(batch["lesion"]),
                to_uint8(out["remove"])]

    def metadata(self) -> dict:
        return {"method": self.method, "use_mask": self.use_mask, "config": dataclasses.asdict(self.cfg),
                "image_size": self.image_size, "n_conditions": self.n_conditions}

    def parameter_counts(self) -> dict[str, int]:
        return {"generator": count_parameters(self.generator),
                "discriminator": count_parameters(self.discriminator)}
