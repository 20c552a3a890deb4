"""Issue 17 (a): one DermGAN training step, through dermgan.train's loop and as a plain eager step.

    .venv/bin/python benchmarks/bench_train_step.py [--sizes 64 128 256] [--steps 6] [--rounds 2]

For each image size, the same recipe (the cpu profile's "dermgan" variant: U-Net G, two-scale PatchGAN D,
feature matching, lesion L1) trains from the same initial weights on the same batches, alternately through
`dermgan.train.train` and through a hand-written step (G forward, D step, G step through the frozen D), in one
process. The loop's per-step time is taken between its `on_step` callbacks, so setup and the final checkpoint
are not counted. The ratio loop / plain is the loop's overhead (target <= 1.05).

Also measured: the same plain step under bf16 autocast on the CPU (speed ratio, and how far the losses of a
short run drift from float32 from the same start), and the peak resident memory of a loop run, in a child
process per size.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from dermgan.config import get_profile
from dermgan.models.dermgan import build, train_config
from dermgan.train import train

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import _report  # noqa: E402

BATCH = 8


def fake_batches(size: int, n: int = 32, seed: int = 0):
    """(map, image, lesion mask, condition) tensors shaped like MapDataset items; a step's cost does not
    depend on what the pixels show."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    images = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    lesions = (torch.rand(n, 1, size, size, generator=g) > 0.8).float()
    conditions = torch.randint(0, 8, (n,), generator=g)
    return torch.utils.data.TensorDataset(maps, images, lesions, conditions)


def recipe_for(size: int):
    cfg = get_profile("cpu").dermgan
    torch.manual_seed(0)
    return build("dermgan", cfg, size), cfg


def loop_step_times(size: int, steps: int, data) -> list[float]:
    recipe, cfg = recipe_for(size)
    stamps = []
    config = train_config(cfg, seed=0, device="cpu")
    config = type(config)(**{**config.__dict__, "steps": steps, "checkpoint_every": 0, "sample_every": 0,
                             "log_every": steps, "batch_size": BATCH})
    with tempfile.TemporaryDirectory() as folder:
        train(recipe, data, config, folder, resume=False, on_step=lambda _: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:])]


def plain_step(recipe, opt_g, opt_d, batch, bf16: bool = False):
    """One hand-written DermGAN step (G forward, D step, G step through the frozen D); the G loss tensor."""
    G, D = recipe.generator, recipe.discriminator
    device_type = batch[0].device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        fake = recipe.generate(G, batch)
        loss_d, _ = recipe.d_loss(D, batch, fake.detach())
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    D.requires_grad_(False)
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        loss_g, _ = recipe.g_loss(D, batch, fake)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    D.requires_grad_(True)
    opt_g.step()
    return loss_g.detach()


def adam_pair(recipe, cfg):
    """Adam for G and D as the loop configures them."""
    betas = (cfg.beta1, 0.999)
    return (torch.optim.Adam(recipe.generator.parameters(), lr=cfg.lr, betas=betas),
            torch.optim.Adam(recipe.discriminator.parameters(), lr=cfg.lr, betas=betas))


def plain_run(size: int, steps: int, data, bf16: bool = False, recipe=None) -> tuple[list[float], list[float]]:
    """Per-step seconds and generator losses of a plain eager run."""
    if recipe is None:
        recipe, _ = recipe_for(size)
    opt_g, opt_d = adam_pair(recipe, get_profile("cpu").dermgan)
    g = torch.Generator().manual_seed(0)
    times, losses = [], []
    for _ in range(steps):
        began = time.perf_counter()
        index = torch.randperm(len(data), generator=g)[:BATCH]
        losses.append(float(plain_step(recipe, opt_g, opt_d, [t[index] for t in data.tensors], bf16)))
        times.append(time.perf_counter() - began)
    return times[1:], losses  # the first step pays one-off allocations


def peak_memory_mb(size: int, steps: int) -> float:
    """Peak resident memory of a fresh process that runs the loop at this size (includes torch itself)."""
    out = subprocess.run([sys.executable, __file__, "--child", str(size), "--steps", str(steps)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mb"]


def measure(size: int, steps: int, rounds: int) -> dict:
    data = fake_batches(size)
    loop, plain, plain16 = [], [], []
    for _ in range(rounds):  # alternate, so drifts of a shared machine hit both alike
        loop += loop_step_times(size, steps, data)
        plain += plain_run(size, steps, data)[0]
        plain16 += plain_run(size, steps, data, bf16=True)[0]
    # Loss drift: the same start and batches in fp32 and bf16.
    recipe, _ = recipe_for(size)
    twin = copy.deepcopy(recipe)
    _, losses32 = plain_run(size, steps, data, recipe=recipe)
    _, losses16 = plain_run(size, steps, data, bf16=True, recipe=twin)
    drift = max(abs(a - b) / abs(a) for a, b in zip(losses32, losses16))
    s_loop, s_plain, s_bf16 = (statistics.median(x) for x in (loop, plain, plain16))
    return {
        "size": size, "batch": BATCH, "s/step loop": s_loop, "s/step plain": s_plain,
        "loop/plain": s_loop / s_plain, "img/s (loop)": BATCH / s_loop,
        "bf16 s/step": s_bf16, "fp32/bf16 speed-up": s_plain / s_bf16,
        "max rel. G-loss drift bf16": drift, "peak MB (loop)": peak_memory_mb(size, 3),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--steps", type=int, default=6, help="steps per timed run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        loop_step_times(args.child, args.steps, fake_batches(args.child))
        print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return
    rows = [measure(size, args.steps, args.rounds) for size in args.sizes]
    _report.write(
        "train_step", "(a) DermGAN training step: the loop against a plain eager step (cpu-profile widths)",
        rows, list(rows[0]),
        notes=f"Median of {args.rounds} x {args.steps - 1} steps per mode, modes alternated in one process. "
              "Target: loop/plain <= 1.05. bf16 = torch.autocast on the CPU around the same plain step; the loss "
              f"drift is the largest relative difference of the generator loss over {args.steps} steps from the "
              "same start. Peak MB: resident memory of a fresh process running 3 loop steps.")


if __name__ == "__main__":
    main()
