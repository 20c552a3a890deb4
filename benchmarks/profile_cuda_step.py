"""Where the GPU time of a paper-profile DermGAN step goes: torch.profiler over the loop's own steps.

    python benchmarks/profile_cuda_step.py [--steps 20] [--channels-last] [--fp32]

Runs `bench_train_step.plain_steps` (the loop's step, `dermgan.train._step`, with the profile's critic and EMA,
without the loop) on batches resident on the GPU and prints the operators that take the most GPU time, with
their share of the total: the table that says whether a step is bound by matrix arithmetic (convolutions: bf16
helps) or by memory traffic (normalisation, activations, Adam's element-wise updates: fusion helps, bf16
little). Prints only; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import profiler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cuda import paper_recipe  # noqa: E402
from bench_train_step import batches_in_memory, config_for, fake_batches, plain_steps  # noqa: E402

WARMUP = 5  # steps before the profiler records: cuDNN algorithm choice, allocator


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--channels-last", action="store_true", help="channels_last weights and batches")
    parser.add_argument("--fp32", action="store_true", help="leave bf16 autocast off")
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("profile_cuda_step: no CUDA device here")
    recipe, profile = paper_recipe()
    device, amp = torch.device("cuda"), "off" if args.fp32 else "bf16"
    config = config_for(profile.dermgan, WARMUP + args.steps, profile.dermgan.batch_size, "cuda", amp=amp,
                        channels_last=args.channels_last)
    data = fake_batches(profile.data.image_size, 4 * profile.dermgan.batch_size)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    batches = ([t.contiguous(memory_format=layout) if t.ndim == 4 else t for t in batch]
               for batch in batches_in_memory(data, config, device))
    schedule = profiler.schedule(wait=0, warmup=WARMUP, active=args.steps, repeat=1)
    with profiler.profile(activities=[profiler.ProfilerActivity.CPU, profiler.ProfilerActivity.CUDA],
                          schedule=schedule) as prof:
        plain_steps(recipe, config, batches, device, amp, on_step=lambda _: prof.step())
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
