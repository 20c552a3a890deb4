"""The discriminator as a recipe sees it during training: D behind the data-efficient aids the loop adds.

A recipe judges through the critic the loop hands it, never through D itself:

    real_out, fake_out = critic.pair(real, fake, *route)    # the discriminator's loss (and feature matching)
    fake_out = critic.fake(fake, *route)                     # the generator's adversarial loss
    mixed_out = critic.same_draw(mixed, *route)              # D on a third input, augmented as the last pair

`route` are leading arguments of D (the name of one of several discriminators); `real` / `fake` are D's inputs,
one tensor or a list (one per pyramid level). What a recipe declares:
    d_colour_channels   slice of D's input channels that are image colour (default: all); the rest (a map, a
                        mask, condition planes) is moved by geometric transforms but never recoloured
    d_threshold         D's output that separates "real" from "fake" (0 for BCE and hinge, 0.5 for LSGAN)

What the critic adds, each a setting of `CriticConfig` (off by default, so a recipe trains as before):
- augmentation (dermgan.diffaugment), real and generated inputs of an item with the same draw, with probability p;
- ADA's adaptive p (Karras et al. 2020): every `ada_interval` steps, r_t = E[sign(D(x) - threshold)] over the
  real images since the last adjustment; p moves by sign(r_t - ada_target) * (images seen) / ada_images, within
  [0, 1]. r_t near 1: D is sure of every real image, it overfits. Kept on the device (no host read);
- R1 (Mescheder et al. 2018): r1_gamma / 2 * E_x ||d sum(D(x)) / dx||^2 on real inputs, over the colour channels
  (a map is given, not sampled), lazily every `r1_every` steps with weight x r1_every (StyleGAN2);
- LeCam (Tseng et al. 2021): lecam_weight * (E[(D(x) - a_fake)^2] + E[(D(G(z)) - a_real)^2]), a_* the EMAs of D's
  mean output on real / generated inputs: on little data it keeps D's answers from drifting apart.
D's decision per image is its mean output over patches; with several outputs (scales, levels), their mean. A D
whose answer is richer than one logit (OASIS's per-pixel classes) returns, per scale, a sequence whose last
entry is its per-pixel "real" logit, as pix2pix's D returns its features with the logits last.
`probe` measures D's accuracy on given real images without touching any state (the overfitting curves).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn

from dermgan.config import CriticConfig
from dermgan.diffaugment import DiffAugment


def config_from(section: CriticConfig) -> CriticConfig:
    """The plain CriticConfig of a profile section (every GAN section inherits its fields)."""
    from dataclasses import fields

    return CriticConfig(**{f.name: getattr(section, f.name) for f in fields(CriticConfig)})


def _as_list(x) -> list[torch.Tensor]:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _map(fn, x):
    """fn over one tensor or over each tensor of a list (one per pyramid level), keeping the form."""
    return [fn(t) for t in x] if isinstance(x, (list, tuple)) else fn(x)


def logits_of(output) -> list[torch.Tensor]:
    """D's logit tensors from any D output: a tensor, a list of them (levels), or per-scale feature lists whose
    last entry is the logits (pix2pix's multi-scale D)."""
    if isinstance(output, torch.Tensor):
        return [output]
    return [o[-1] if isinstance(o, (list, tuple)) else o for o in output]


def decisions(output) -> torch.Tensor:
    """D's answer per image: the mean of its outputs over patches and over scales / levels, (N,)."""
    per_output = [t.float().reshape(len(t), -1).mean(1) for t in logits_of(output)]
    return torch.stack(per_output).mean(0)


class Critic:
    def __init__(self, D: nn.Module, cfg: CriticConfig, batch_size: int, device: torch.device,
                 colour_channels: slice | None = None, threshold: float = 0.0):
        self.D, self.cfg, self.batch_size = D, cfg, batch_size
        self.augment = DiffAugment(cfg.augment)
        self.colour_channels, self.threshold = colour_channels, float(threshold)
        self.p = torch.tensor(float(cfg.augment_p), device=device)
        self.sign_sum = torch.zeros((), device=device)  # ADA: sum of sign(D(x) - threshold) since the last move
        self.sign_count = torch.zeros((), device=device)
        self.anchors: dict[str, torch.Tensor] = {}  # LeCam EMAs, "<route>/<output index>/real|fake"
        self.device = device
        self._recording, self._augmenting, self._r1_due, self._records = False, True, False, []
        self._last_params = None

    @classmethod
    def plain(cls, D: nn.Module) -> "Critic":
        """D with nothing added, for calling a recipe's losses outside the loop (tests, scripts)."""
        device = next(D.parameters()).device
        critic = cls(D, CriticConfig(), batch_size=1, device=device)
        critic.begin_g_step(D)
        return critic

    # -- what recipes call
    def pair(self, real, fake, *route):
        """(D(aug(real)), D(aug(fake))) with one augmentation draw for both; in the discriminator step the real
        inputs are recorded for R1 (made leaves when R1 is due) and both outputs for LeCam and ADA."""
        params = self._last_params = self._draw(real)
        if self._recording and self._r1_due:  # R1 differentiates D's answers with respect to these
            real = _map(lambda t: t.detach().requires_grad_(True), real)
        real_out = self._judge(real, params, route)
        fake_out = self._judge(fake, params, route)
        if self._recording:
            self._records.append({"route": route, "real_in": real if self._r1_due else None,
                                  "real": real_out, "fake": fake_out})
        return real_out, fake_out

    def fake(self, fake, *route):
        """D(aug(fake)), for the generator's adversarial loss."""
        return self._judge(fake, self._draw(fake), route)

    def same_draw(self, x, *route):
        """D(aug(x)) with the augmentation draw of the last `pair` call, not recorded: for a consistency term
        that compares D's answers on several inputs of the same items pixel by pixel (OASIS's LabelMix)."""
        return self._judge(x, self._last_params, route)

    # -- what the loop calls
    def begin_d_step(self, step: int, D: nn.Module) -> None:
        """Judge with `D` (the loop's training wrapper of it) and record for the discriminator step of 0-based
        `step`; p moves first when an adjustment interval ends."""
        cfg = self.cfg
        self.D = D
        if cfg.ada_target and step > 0 and step % cfg.ada_interval == 0:
            self._adapt_p()
        self._recording, self._records = True, []
        self._r1_due = cfg.r1_gamma > 0 and step % cfg.r1_every == 0

    def begin_g_step(self, D: nn.Module) -> None:
        """Judge with `D` (frozen) for the generator step; nothing is recorded."""
        self.D, self._recording = D, False

    def end_d_step(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(regularisation loss to add to D's loss, logs) from this step's records; stops recording."""
        self._recording = False
        total = torch.zeros((), device=self.device)
        logs: dict[str, torch.Tensor] = {}
        real_decisions = torch.cat([decisions(r["real"]).detach() for r in self._records]) if self._records \
            else torch.zeros(0, device=self.device)
        signs = torch.sign(real_decisions - self.threshold)
        self.sign_sum += signs.sum()
        self.sign_count += signs.numel()
        logs["d_real_sign"] = signs.mean() if signs.numel() else torch.zeros((), device=self.device)
        if self.cfg.lecam_weight > 0:
            logs["d_lecam"] = self._lecam()
            total = total + self.cfg.lecam_weight * logs["d_lecam"]
        if self._r1_due:
            logs["d_r1"] = self._r1()
            total = total + 0.5 * self.cfg.r1_gamma * self.cfg.r1_every * logs["d_r1"]
        if self.augment:
            logs["aug_p"] = self.p.detach().clone()
        self._records = []
        return total, logs

    @torch.no_grad()
    def probe(self, recipe, G: nn.Module, batch) -> dict[str, float]:
        """D's accuracy on the real and the generated images of `batch` (no augmentation, no recording), and
        the mean sign of its answers on the reals; leaves every state as it was (RNG streams, batch-norm
        statistics), so probing does not change training."""
        with _untouched(G, self.D, self.device):
            self._recording, self._augmenting, self._r1_due, self._records = True, False, False, []
            try:
                recipe.d_loss(self, batch, recipe.generate(G, batch))
                real = torch.cat([decisions(r["real"]) for r in self._records]) - self.threshold
                fake = torch.cat([decisions(r["fake"]) for r in self._records]) - self.threshold
            finally:
                self._recording, self._augmenting, self._records = False, True, []
        return {"acc_real": float((real > 0).float().mean()), "acc_fake": float((fake < 0).float().mean()),
                "sign_real": float(torch.sign(real).mean())}

    def state_dict(self) -> dict:
        return {"p": self.p, "sign_sum": self.sign_sum, "sign_count": self.sign_count,
                "anchors": dict(self.anchors)}

    def load_state_dict(self, state: dict) -> None:
        self.p = state["p"].to(self.device)
        self.sign_sum, self.sign_count = state["sign_sum"].to(self.device), state["sign_count"].to(self.device)
        self.anchors = {k: v.to(self.device) for k, v in state["anchors"].items()}

    # -- inside
    def _draw(self, like):
        if not (self.augment and self._augmenting):
            return None
        return self.augment.draw(len(_as_list(like)[0]), self.p, self.device)

    def _judge(self, x, params, route):
        if params is not None:
            x = _map(lambda t: self.augment.apply(t, params, self.colour_channels), x)
        return self.D(*route, x)

    def _adapt_p(self) -> None:
        cfg = self.cfg
        rate = self.sign_sum / self.sign_count.clamp(min=1)
        step = torch.sign(rate - cfg.ada_target) * (self.batch_size * cfg.ada_interval / cfg.ada_images)
        self.p = (self.p + torch.where(self.sign_count > 0, step, torch.zeros_like(step))).clamp(0, 1)
        self.sign_sum, self.sign_count = torch.zeros_like(self.sign_sum), torch.zeros_like(self.sign_count)

    def _lecam(self) -> torch.Tensor:
        decay, terms = self.cfg.lecam_decay, []
        for record in self._records:
            key = "/".join(map(str, record["route"]))
            for i, (real, fake) in enumerate(zip(logits_of(record["real"]), logits_of(record["fake"]))):
                a_real = self.anchors.get(f"{key}/{i}/real", torch.zeros((), device=self.device))
                a_fake = self.anchors.get(f"{key}/{i}/fake", torch.zeros((), device=self.device))
                terms.append(((real.float() - a_fake) ** 2).mean() + ((fake.float() - a_real) ** 2).mean())
                self.anchors[f"{key}/{i}/real"] = decay * a_real + (1 - decay) * real.detach().float().mean()
                self.anchors[f"{key}/{i}/fake"] = decay * a_fake + (1 - decay) * fake.detach().float().mean()
        return torch.stack(terms).mean()

    def _r1(self) -> torch.Tensor:
        """Mean over images of ||grad of the image's summed logits||^2 over the colour channels, averaged over
        the discriminators judged this step."""
        penalties = []
        for record in self._records:
            inputs = _as_list(record["real_in"])
            total = sum(t.float().sum() for t in logits_of(record["real"]))
            grads = torch.autograd.grad(total, inputs, create_graph=True)
            norms = sum(self._colour(g).square().reshape(len(g), -1).sum(1) for g in grads)
            penalties.append(norms.mean())
        return torch.stack(penalties).mean()

    def _colour(self, g: torch.Tensor) -> torch.Tensor:
        return g if self.colour_channels is None else g[:, self.colour_channels]


@contextlib.contextmanager
def _untouched(G: nn.Module, D: nn.Module, device: torch.device):
    """Run something on G and D that must leave no trace: the RNG streams and every buffer (batch-norm
    statistics) are restored afterwards."""
    buffers = [(b, b.detach().clone()) for m in (G, D) for b in m.buffers()]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield
        finally:
            for buffer, saved in buffers:
                buffer.copy_(saved)
