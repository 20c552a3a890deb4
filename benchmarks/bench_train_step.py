"""Issue 17 (a), issue 29: one DermGAN training step, through dermgan.train's loop and as a plain step.

    .venv/bin/python benchmarks/bench_train_step.py [--sizes 64 256] [--steps 6] [--rounds 2] [--profile cpu]

For each image size, the profile's "dermgan" recipe (U-Net G, two-scale PatchGAN D, feature matching, lesion L1)
trains from the same initial weights on the same batches, alternately through `dermgan.train.train` and as a
*plain* run of the same math: the loop's own step (`dermgan.train._step`: G forward, D step with the profile's
critic, G step through the frozen D), its LR schedule and EMA update, on batches already in memory, in the loop's
order, with nothing else (no data loader, no loss readout, no logs). The loop's per-step time is taken between
its `on_step` callbacks, so setup and the final checkpoint are not counted. The ratio loop / plain is then the
loop's own overhead: its data loader and device transfer, the loss meter and its readout every `log_every`
steps (target <= 1.05). That the two runs do the same math is checked: the plain run's mean losses must equal
the loop's logged ones ("loss match", the largest relative difference).

Also measured: the same plain step under bf16 autocast on the CPU (speed ratio, and how far the losses of a
short run drift from float32 from the same start), and the peak resident memory of a loop run, in a child
process per size.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dermgan import train as loop
from dermgan.config import get_profile
from dermgan.models.dermgan import build, train_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
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


def recipe_for(size: int, profile: str = "cpu"):
    cfg = get_profile(profile).dermgan
    with loop.initial_weights(0):
        return build("dermgan", cfg, size), cfg


def config_for(cfg, steps: int, batch: int = BATCH, device: str = "cpu", **changes) -> loop.TrainConfig:
    """The loop settings of the profile's section for a timed run: no checkpoints or grids before the end."""
    return dataclasses.replace(train_config(cfg, seed=0, device=device), steps=steps, batch_size=batch,
                               checkpoint_every=0, sample_every=0, **changes)


def loop_run(size: int, steps: int, data, profile: str = "cpu") -> tuple[list[float], dict]:
    """Per-step seconds of a loop run, and the mean losses it logged over all its steps."""
    recipe, cfg = recipe_for(size, profile)
    stamps = []
    config = config_for(cfg, steps, log_every=steps)  # one readout, at the end, of every step's losses
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "log.csv"
        loop.train(recipe, data, config, folder, log, resume=False,
                   on_step=lambda _: stamps.append(time.perf_counter()))
        with log.open() as f:
            logged = {k: float(v) for k, v in next(csv.DictReader(f)).items() if k.startswith(("loss", "g_", "d_"))}
    return [b - a for a, b in zip(stamps, stamps[1:])], logged


def plain_state(recipe, config: loop.TrainConfig, device: torch.device):
    """The loop's training state (modules on the device, Adam pair, EMA, critic) without the loop, with the
    random streams seeded as a fresh loop run seeds them (dropout masks, augmentations)."""
    state = loop._build_state(recipe, config, device, world=1)
    random.seed(config.seed)
    np.random.seed(config.seed % 2**32)
    torch.manual_seed(config.seed)
    return state


def batches_in_memory(data, config: loop.TrainConfig, device: torch.device):
    """The loop's batch of every step, in its order, gathered from the data held on the device (the step
    indices go there beforehand, so that no step waits for the host)."""
    tensors = [t.to(device) for t in data.tensors]
    order = loop.StepBatches(len(data), config.batch_size, config.seed, 0, config.steps)
    indices = torch.tensor(list(order), device=device)
    return ([t[index] for t in tensors] for index in indices)


def plain_steps(recipe, config: loop.TrainConfig, batches, device: torch.device, amp: str = "off",
                on_step=None) -> dict[str, float]:
    """The loop's math over `batches` with nothing around it; returns the mean losses (read once, at the end).
    `on_step(step)` after each step (timing)."""
    state = plain_state(recipe, config, device)
    autocast = loop._autocast(device, amp)
    sums, steps = {}, 0
    for step, batch in enumerate(batches):
        factor = loop.lr_factor(step, config.steps, config.decay_start)
        for optimiser, lr in ((state.opt_g, config.lr_g), (state.opt_d, config.lr_d)):
            for group in optimiser.param_groups:
                group["lr"] = lr * factor
        logs = loop._step(recipe, state, state.G, state.D, batch, step, autocast)
        if state.ema is not None:
            loop._ema_update(state.ema, state.G, config.ema_decay)
        for name, value in logs.items():
            sums[name] = sums.get(name, 0) + value.detach().float()
        steps += 1
        if on_step is not None:
            on_step(step)
    return {name: float(total) / steps for name, total in sums.items()}


def plain_run(size: int, steps: int, data, amp: str = "off", recipe=None, profile: str = "cpu"):
    """Per-step seconds (the first step, which pays one-off allocations, left out) and mean losses of a plain
    run."""
    if recipe is None:
        recipe, _ = recipe_for(size, profile)
    config = config_for(get_profile(profile).dermgan, steps)
    device = torch.device("cpu")
    stamps = [time.perf_counter()]
    losses = plain_steps(recipe, config, batches_in_memory(data, config, device), device, amp,
                         on_step=lambda _: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps[1:], stamps[2:])], losses


def loss_match(logged: dict, plain: dict) -> float:
    """Largest relative difference between the loop's logged mean losses and the plain run's."""
    shared = [k for k in logged if k in plain]
    return max(abs(logged[k] - plain[k]) / max(abs(logged[k]), 1e-12) for k in shared)


def peak_memory_mb(size: int, steps: int) -> float:
    """Peak resident memory of a fresh process that runs the loop at this size (includes torch itself)."""
    out = subprocess.run([sys.executable, __file__, "--child", str(size), "--steps", str(steps)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mb"]


def measure(size: int, steps: int, rounds: int, profile: str) -> dict:
    data = fake_batches(size)
    loop_times, plain_times, plain16, match = [], [], [], 0.0
    for _ in range(rounds):  # alternate, so drifts of a shared machine hit both alike
        times, logged = loop_run(size, steps, data, profile)
        loop_times += times[:-1]  # the last interval holds the final checkpoint
        times, losses = plain_run(size, steps, data, profile=profile)
        plain_times += times
        match = max(match, loss_match(logged, losses))
        plain16 += plain_run(size, steps, data, "bf16", profile=profile)[0]
    # Loss drift: the same start and batches in fp32 and bf16.
    recipe, _ = recipe_for(size, profile)
    twin = copy.deepcopy(recipe)
    losses32 = plain_run(size, steps, data, recipe=recipe, profile=profile)[1]
    losses16 = plain_run(size, steps, data, "bf16", recipe=twin, profile=profile)[1]
    drift = abs(losses32["loss_g"] - losses16["loss_g"]) / abs(losses32["loss_g"])
    s_loop, s_plain, s_bf16 = (statistics.median(x) for x in (loop_times, plain_times, plain16))
    return {
        "size": size, "batch": BATCH, "s/step loop": s_loop, "s/step plain": s_plain,
        "loop/plain": s_loop / s_plain, "loss match": match, "img/s (loop)": BATCH / s_loop,
        "bf16 s/step": s_bf16, "fp32/bf16 speed-up": s_plain / s_bf16,
        "rel. G-loss drift bf16": drift, "peak MB (loop)": peak_memory_mb(size, 3),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", default="cpu", help="whose dermgan section (widths, critic, EMA) to time")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        loop_run(args.child, args.steps, fake_batches(args.child), args.profile)
        print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return
    rows = [measure(size, args.steps, args.rounds, args.profile) for size in args.sizes]
    _report.write(
        "train_step", f"(a) DermGAN training step: the loop against the plain step ({args.profile}-profile widths)",
        rows, list(rows[0]),
        notes=f"Median over {args.rounds} runs of {args.steps} steps per mode (the first step of each run, and the "
              "loop's last, which writes the final checkpoint, left out), modes alternated in one process. Plain = "
              "dermgan.train._step with the profile's critic, LR schedule and EMA on batches in memory in the "
              "loop's order, nothing else; loss match = largest relative difference between its mean losses and "
              "the loop's logged ones (the same math). Target: loop/plain <= 1.05. bf16 = torch.autocast on the "
              "CPU around the same plain step; the drift is the relative difference of the mean generator loss "
              f"over {args.steps} steps from the same start. Peak MB: resident memory of a fresh process running "
              "3 loop steps.")


if __name__ == "__main__":
    main()
