"""Where the GPU time of a paper-profile DermGAN step goes: torch.profiler over plain bf16 steps.

    python benchmarks/profile_cuda_step.py [--steps 20] [--contiguous] [--fp32]

Runs `bench_train_step.plain_step` (the loop's step without the loop) on batches resident on the GPU and prints
the operators that take the most GPU time, with their share of the total: the table that says whether a step is
bound by matrix arithmetic (convolutions: bf16 helps) or by memory traffic (normalisation, activations, Adam's
element-wise updates: fusion helps, bf16 little). Prints only; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import profiler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cuda import paper_recipe  # noqa: E402
from bench_train_step import adam_pair, fake_batches, plain_step  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--contiguous", action="store_true", help="leave channels_last off")
    parser.add_argument("--fp32", action="store_true", help="leave bf16 autocast off")
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("profile_cuda_step: no CUDA device here")
    recipe, profile = paper_recipe()
    device, layout = torch.device("cuda"), torch.contiguous_format if args.contiguous else torch.channels_last
    for net in (recipe.generator, recipe.discriminator):
        net.to(device, memory_format=layout)
    opt_g, opt_d = adam_pair(recipe, profile.dermgan)
    batch = [t[: profile.dermgan.batch_size].to(device) for t in
             fake_batches(profile.data.image_size, profile.dermgan.batch_size).tensors]
    batch = [t.contiguous(memory_format=layout) if t.ndim == 4 else t for t in batch]
    for _ in range(5):  # warm-up: cuDNN algorithm choice, allocator
        plain_step(recipe, opt_g, opt_d, batch, bf16=not args.fp32)
    torch.cuda.synchronize()
    with profiler.profile(activities=[profiler.ProfilerActivity.CPU, profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            plain_step(recipe, opt_g, opt_d, batch, bf16=not args.fp32)
        torch.cuda.synchronize()
    events = prof.key_averages()
    print(events.table(sort_by="self_device_time_total", row_limit=args.rows, max_name_column_width=60))
    kernels = [e for e in events if e.device_type.name == "CUDA"]
    total = sum(e.device_time_total for e in kernels)
    print(f"GPU kernel time per step: {total / args.steps / 1000:.1f} ms over {len(kernels)} kernel kinds")
    for e in sorted(kernels, key=lambda e: -e.device_time_total)[: args.rows]:
        print(f"{100 * e.device_time_total / total:5.1f} %  {e.count // args.steps:4d}/step  {e.key[:100]}")


if __name__ == "__main__":
    main()
