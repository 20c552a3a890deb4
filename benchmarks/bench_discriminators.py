"""Issue 25: what each discriminator costs per training step, side by side in one process.

    .venv/bin/python benchmarks/bench_discriminators.py [--size 64] [--steps 6] [--rounds 2]
        [--input-sizes 64 128 224] [--backbone efficientnet-lite0]

Three discriminators at the cpu profile's settings, on the same fake batches (a step's cost does not depend on
what the pixels show), rounds alternated so that drifts of a shared machine hit all alike:
    dermgan            DermGAN's two-scale PatchGAN (the reference: every ratio is to it)
    oasis              the OASIS segmentation U-Net (with LabelMix: three D passes per D step) and its SPADE G
    dermgan-projected  DermGAN's G with the projected D, at each backbone input size in --input-sizes
Per model: the seconds of one D update alone (D loss on a fixed generated batch, backward, Adam step) and of a
whole step of the one training loop (G forward, D step, G step), median over the timed steps, and both as
ratios to the PatchGAN's. Writes results/discriminators.{json,md} where every benchmark writes (_report).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time

import torch

from dermgan.config import get_profile
from dermgan.critic import Critic
from dermgan.data.conditions import N_CONDITIONS
from dermgan.data.semantic import encode_labels
from dermgan.models import dermgan as dg
from dermgan.models.oasis import OASISRecipe
from dermgan.train import initial_weights, loop_settings, train

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import _report  # noqa: E402

BATCH = 8


def fake_maps(size: int, encoding: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """Maps with skin, a background corner and one square lesion per image, like MapDataset's."""
    labels = torch.zeros(n, size, size, dtype=torch.int64)
    labels[:, : size // 8, : size // 8] = -1
    for i in range(n):
        top, left = (int(v) for v in torch.randint(size // 4, size // 2, (2,), generator=generator))
        labels[i, top:top + size // 6, left:left + size // 6] = 1 + i % N_CONDITIONS
    colours = torch.rand(n, 3, generator=generator) * 120 + 100
    return torch.from_numpy(encode_labels(labels.numpy(), colours.numpy(), encoding))


def fake_data(size: int, encoding: str, n: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    maps = fake_maps(size, encoding, n, g)
    images = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    lesions = (torch.rand(n, 1, size, size, generator=g) > 0.8).float()
    conditions = torch.randint(0, N_CONDITIONS, (n,), generator=g)
    return torch.utils.data.TensorDataset(maps, images, lesions, conditions)


def recipes(size: int, input_sizes: list[int], backbone: str) -> dict[str, tuple]:
    """name -> (recipe, profile section, encoding), built from seed 0."""
    profile = get_profile("cpu")
    out = {}
    with initial_weights(0):
        out["dermgan (PatchGAN x2)"] = (dg.build("dermgan", profile.dermgan, size), profile.dermgan, "colour")
    with initial_weights(0):
        out["oasis (segmentation U-Net)"] = (OASISRecipe(profile.oasis, size), profile.oasis,
                                             profile.oasis.encoding)
    for input_size in input_sizes:
        projected = dataclasses.replace(profile.projected, backbone=backbone, input_size=input_size)
        with initial_weights(0):
            recipe = dg.build(dg.PROJECTED, profile.dermgan, size, projected=projected)
        out[f"dermgan-projected ({backbone}, {input_size} px)"] = (recipe, profile.dermgan, "colour")
    return out


def d_update_times(recipe, section, data, steps: int) -> list[float]:
    """Seconds of D updates alone: D loss on a fixed generated batch through a plain critic, backward, Adam"""
    D = recipe.discriminator
    optimiser = torch.optim.Adam(D.parameters(), lr=section.lr_d or section.lr, betas=(section.beta1, 0.999))
    critic = Critic.plain(D)
    batch = [t[:BATCH] for t in data.tensors]
    with torch.no_grad():
        fake = recipe.generate(recipe.generator, batch)
    times = []
    for step in range(steps):
        began = time.perf_counter()
        critic.begin_d_step(step, D)
        loss, _ = recipe.d_loss(critic, batch, fake)
        critic.end_d_step()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - began)
    return times[1:]  # the first pays one-off allocations


def loop_step_times(recipe, section, data, steps: int) -> list[float]:
    """Seconds between the loop's on_step callbacks: whole steps, setup and the final checkpoint left out."""
    config = loop_settings(section, seed=0, device="cpu", steps=steps, batch_size=BATCH, checkpoint_every=0,
                           sample_every=0, log_every=steps)
    stamps = []
    with tempfile.TemporaryDirectory() as folder:
        train(recipe, data, config, folder, resume=False,
              on_step=lambda _: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:])]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6, help="steps per timed run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--input-sizes", type=int, nargs="+", default=[64, 128, 224],
                        help="backbone input sizes of the projected D")
    parser.add_argument("--backbone", default="efficientnet-lite0", choices=["efficientnet-lite0", "random"])
    args = parser.parse_args(argv)

    models = recipes(args.size, args.input_sizes, args.backbone)
    data = {encoding: fake_data(args.size, encoding) for encoding in {e for _, _, e in models.values()}}
    d_times = {name: [] for name in models}
    step_times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, (recipe, section, encoding) in models.items():
            d_times[name] += d_update_times(recipe, section, data[encoding], args.steps)
            step_times[name] += loop_step_times(recipe, section, data[encoding], args.steps)
    reference = next(iter(models))
    d_ref, step_ref = statistics.median(d_times[reference]), statistics.median(step_times[reference])
    rows = []
    for name, (recipe, _, _) in models.items():
        d_s, step_s = statistics.median(d_times[name]), statistics.median(step_times[name])
        counts = recipe.parameter_counts() if hasattr(recipe, "parameter_counts") else {}
        trainable = sum(p.numel() for p in recipe.discriminator.parameters())
        rows.append({"model": name, "D update s": d_s, "D update / PatchGAN": d_s / d_ref,
                     "loop step s": step_s, "loop step / PatchGAN": step_s / step_ref,
                     "G params (M)": counts.get("generator", 0) / 1e6,
                     "D trainable params (M)": trainable / 1e6})
    title = f"Discriminator cost per training step, {args.size} px, batch {BATCH}, cpu-profile widths"
    notes = (f"Median of {args.rounds} x {args.steps - 1} timed steps per model, models alternated in one "
             "process; ratios to the PatchGAN row. D update: one discriminator update alone (its loss on a "
             "fixed generated batch, backward, Adam step); loop step: a whole step of dermgan.train (G "
             "forward, D step, G step).")
    columns = list(rows[0])
    _report.write("discriminators", title, rows, columns, notes)


if __name__ == "__main__":
    main()
