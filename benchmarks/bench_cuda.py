"""Issue 17 (f): the CUDA paths of the training loop on the paper profile: bf16 autocast, channels_last, compile.

    python benchmarks/bench_cuda.py [--steps 300] [--warmup 30]

Needs a CUDA device (it says so and writes nothing without one). The paper profile's "dermgan" recipe (256 px,
64 base filters, batch 16: U-Net G, two-scale PatchGAN D, feature matching, lesion L1) trains through
`dermgan.train.train` from the same initial weights on the same random batches in each mode, one mode after
another in one process:

    fp32               amp off, contiguous tensors (cuDNN may use TF32 for convolutions: torch's default)
    bf16               bf16 autocast (the loop's default on CUDA)
    bf16 + cl          bf16 autocast, channels_last weights and batches
    bf16 + compile     bf16, G and D under torch.compile
    bf16 + cl + compile  both
    bf16 + cudnn.benchmark  bf16 with cuDNN's autotuner on (the sizes never change in training)

and, beside them, the plain bf16 run of the same math (`bench_train_step.plain_steps`: the loop's own step,
`dermgan.train._step`, with the profile's critic, LR schedule and EMA) on batches already on the GPU, with no
data loader and no loss readout: the rate the GPU alone sets. "vs plain" is each mode's s/step over it; for
"bf16" (the loop's CUDA default) that is the loop's overhead: its data loader and batch prefetch, and its loss
readout every `log_every` steps (target <= 1.05).

Per mode: the median seconds per step after `--warmup` steps (the first steps pay cuDNN autotuning and, with
compile, the compilation, reported apart as "first steps s"), images/s, peak allocated GPU memory, and the mean
generator / discriminator losses over the last 100 logged steps beside fp32's. A GAN's trajectory is chaotic,
so after a few hundred steps runs of different arithmetic are different samples of the same training: the
loss means say whether a mode trains the same way, not whether it reproduces fp32 bit for bit.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from dermgan.config import get_profile
from dermgan.models.dermgan import train_config
from dermgan.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report  # noqa: E402
from bench_train_step import batches_in_memory, config_for, fake_batches, plain_steps, recipe_for  # noqa: E402

MODES = {  # name -> (amp, channels_last, compile, cudnn.benchmark)
    "fp32": ("off", False, False, False),
    "bf16": ("bf16", False, False, False),
    "bf16 + cl": ("bf16", True, False, False),
    "bf16 + compile": ("bf16", False, True, False),
    "bf16 + cl + compile": ("bf16", True, True, False),
    "bf16 + cudnn.benchmark": ("bf16", False, False, True),
}


def mean_losses(log_path: Path, last: int) -> dict:
    with log_path.open() as f:
        rows = list(csv.DictReader(f))[-last:]
    columns = [c for c in ("loss_g", "loss_d", "g_adv", "g_l1") if c in rows[0]]
    return {c: statistics.fmean(float(r[c]) for r in rows) for c in columns}


def paper_recipe():
    profile = get_profile("paper")
    return recipe_for(profile.data.image_size, "paper")[0], profile


def train_mode(name: str, steps: int, warmup: int, data) -> dict:
    amp, channels_last, compile_, cudnn_benchmark = MODES[name]
    recipe, profile = paper_recipe()
    config = train_config(profile.dermgan, seed=0, device="cuda")
    config = type(config)(**{**config.__dict__, "steps": steps, "checkpoint_every": 0, "sample_every": 0,
                             "log_every": 10, "amp": amp, "channels_last": channels_last, "compile": compile_})
    stamps = {}

    def on_step(step_done):
        if step_done in (warmup, steps):
            torch.cuda.synchronize()
            stamps[step_done] = time.perf_counter()

    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.cuda.reset_peak_memory_stats()
    try:
        with tempfile.TemporaryDirectory() as folder:
            log = Path(folder) / "log.csv"
            began = time.perf_counter()
            train(recipe, data, config, folder, log_path=log, resume=False, on_step=on_step)
            losses = mean_losses(log, 10)
    finally:
        torch.backends.cudnn.benchmark = False
    s = (stamps[steps] - stamps[warmup]) / (steps - warmup)
    return {"mode": name, "s/step": s, "img/s": config.batch_size / s,
            "first steps s": stamps[warmup] - began, "peak GB": torch.cuda.max_memory_allocated() / 2**30,
            **{f"mean {k}": v for k, v in losses.items()}}


def plain_mode(steps: int, warmup: int, data) -> dict:
    """The loop's bf16 math (plain_steps) on batches resident on the GPU: no loader, no readout until the end."""
    recipe, profile = paper_recipe()
    device = torch.device("cuda")
    config = config_for(profile.dermgan, steps, profile.dermgan.batch_size, "cuda", amp="bf16")
    stamps = {}

    def on_step(step):
        if step + 1 in (warmup, steps):
            torch.cuda.synchronize()
            stamps[step + 1] = time.perf_counter()

    torch.cuda.reset_peak_memory_stats()
    plain_steps(recipe, config, batches_in_memory(data, config, device), device, "bf16", on_step)
    s = (stamps[steps] - stamps[warmup]) / (steps - warmup)
    return {"mode": "plain bf16 (the loop's step on GPU-resident batches, no loader or readout)", "s/step": s,
            "img/s": profile.dermgan.batch_size / s, "peak GB": torch.cuda.max_memory_allocated() / 2**30}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_cuda: no CUDA device here; nothing measured (the README keeps the last CUDA table)")
        return
    if args.warmup >= args.steps - 1:
        raise SystemExit(f"bench_cuda: --warmup ({args.warmup}) must be below --steps - 1 ({args.steps - 1})")
    profile = get_profile("paper")
    data = fake_batches(profile.data.image_size, 4 * profile.dermgan.batch_size)
    rows = [train_mode(name, args.steps, args.warmup, data) for name in args.modes]
    rows.append(plain_mode(args.steps, args.warmup, data))
    fp32 = next((r for r in rows if r["mode"] == "fp32"), None)
    for row in rows:
        row["x fp32"] = fp32["s/step"] / row["s/step"] if fp32 else float("nan")
        row["vs plain"] = row["s/step"] / rows[-1]["s/step"]
    columns = ["mode", "s/step", "vs plain", "x fp32", "img/s", "first steps s", "peak GB"]
    columns += [c for c in rows[0] if c.startswith("mean ")]
    _report.write(
        "cuda_train_step",
        f"(f) CUDA: DermGAN training step on the paper profile ({profile.data.image_size} px, batch "
        f"{profile.dermgan.batch_size}, {profile.dermgan.base_filters} base filters)",
        rows, columns,
        notes=f"{args.steps} steps per mode through dermgan.train; s/step = mean over the steps after {args.warmup} "
              "warm-up steps (their wall time, setup included, is 'first steps s': cuDNN autotuning and, with "
              "compile, the compilation). cl = channels_last. Loss columns: means over the last 100 steps. "
              "vs plain: s/step over the plain run of the loop's own math on GPU-resident batches. "
              "A GAN's trajectory is chaotic, so these compare training behaviour, not bits; and dropout draws "
              "its mask in memory order, so a channels_last run drops other units than a contiguous one from "
              "the first step on (with dropout 0 the two agree to 1e-5 at step 1, checked on the CPU).")


if __name__ == "__main__":
    main()
