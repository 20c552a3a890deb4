"""The one GAN training loop of the repository. It knows nothing of skin: a *recipe* supplies the networks and
says how to turn a batch into generator outputs and into D and G losses; the loop owns everything else.

    recipe.generator, recipe.discriminator          nn.Modules (the loop moves, wraps and optimises them)
    recipe.generate(G, batch) -> outputs            tensors / dicts / lists of tensors
    recipe.d_loss(D, batch, outputs) -> (loss, {name: scalar tensor})   outputs arrive detached
    recipe.g_loss(D, batch, outputs) -> (loss, {name: scalar tensor})   D's parameters are frozen here
    recipe.sample_rows(G, batch) -> [uint8 (n,H,W,3), ...]              optional: rows of the sample grid
    recipe.metadata() -> dict of plain values                             optional: stored in checkpoints

One step: G forward, D step on detached outputs, G step through the frozen D (pix2pix order), optional EMA.

The loop owns: Adam for G and D, constant LR then linear decay to 0, EMA of G, bf16/fp16 autocast on CUDA,
channels_last, torch.compile, DDP (`torchrun --nproc_per_node N`, or an already initialised process group;
`batch_size` is the *global* batch, split evenly over ranks), loss CSV, sample grids, atomic checkpoints,
step-exact resume and a non-finite-loss guard.

Step-exact resume: the data order is a pure function of (seed, step) (a seeded permutation per epoch, rank r
takes slice r of each global batch) and the LR a pure function of the step, so a checkpoint only needs the
modules, optimisers, EMA, grad scaler and the RNG states of every rank. Resuming from step k then repeats
exactly what an uninterrupted run does (bit-identical on the CPU).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import math
import os
import pickle
import random
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from dermgan.runtime import pick_device, progress

CHECKPOINT_FORMAT = "dermgan.train/1"
AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int  # global batch: split evenly over DDP ranks
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    decay_start: float = 0.5  # constant LR for this fraction of the steps, then linear to 0 (pix2pix)
    ema_decay: float = 0.0  # 0 = no EMA of the generator
    amp: str = "auto"  # "auto": bf16 on CUDA when supported, off elsewhere
    channels_last: bool | None = None  # None = on CUDA only
    compile: bool = False
    checkpoint_every: int = 0  # 0 = only at the end
    sample_every: int = 0  # 0 = no sample grids
    log_every: int = 10
    n_sample_images: int = 8
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"unknown amp {self.amp!r}; use one of {AMP_MODES}")
        if not 0.0 <= self.decay_start <= 1.0:
            raise ValueError(f"decay_start is a fraction of the steps in [0, 1], got {self.decay_start}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class TrainResult:
    step: int  # steps completed in total
    steps_this_run: int
    seconds_per_step: float  # mean wall time of this run's steps (nan when none ran)
    checkpoint: Path
    log: Path | None


class CheckpointError(RuntimeError):
    """A checkpoint that cannot or must not be loaded (corrupt, truncated, pickled objects, wrong kind)."""


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; training stopped and no checkpoint was written for that step."""


# ----------------------------------------------------------------------------------------------------------
# Schedules


def lr_factor(step: int, steps: int, decay_start: float) -> float:
    """LR multiplier at 0-based `step`: 1 until decay_start * steps, then linear, 0 after the last step."""
    start = int(round(decay_start * steps))
    if step < start:
        return 1.0
    return max(0.0, (steps - step) / max(1, steps - start))


class StepBatches:
    """Index lists for steps start..steps-1, each this rank's slice of the global batch.

    Epoch e is a permutation drawn from a generator seeded with (seed, e); incomplete batches are dropped. The
    global batch of a step does not depend on the world size, so N ranks see exactly what one process sees.
    """

    def __init__(
        self, n: int, batch_size: int, seed: int, start: int, steps: int, rank: int = 0, world: int = 1
    ):
        if batch_size % world:
            raise ValueError(f"global batch_size {batch_size} is not divisible by the {world} ranks")
        if n < batch_size:
            raise ValueError(f"the dataset has {n} items, fewer than one batch of {batch_size}")
        self.n, self.batch, self.seed = n, batch_size, seed
        self.start, self.steps, self.rank, self.world = start, steps, rank, world
        self.per_epoch = n // batch_size
        self._epoch, self._perm = None, None

    def global_batch(self, step: int) -> torch.Tensor:
        epoch, j = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator)
        return self._perm[j * self.batch : (j + 1) * self.batch]

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self):
        share = self.batch // self.world
        for step in range(self.start, self.steps):
            yield self.global_batch(step)[self.rank * share : (self.rank + 1) * share].tolist()


# ----------------------------------------------------------------------------------------------------------
# RNG states and checkpoints


def rng_state(device: torch.device) -> dict:
    """Python, numpy and torch RNG states as weights-only-loadable values."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then os.replace: a crash keeps the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """torch.load(weights_only=True) with errors that say what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only load failed" in str(error).lower() or "weights_only" in str(error):
            raise CheckpointError(
                f"{path} is not a weights-only checkpoint: it pickles Python objects, and unpickling can run "
                f"arbitrary code, so it is refused. Re-save it with only tensors and plain containers "
                f"(dict/list/int/float/str). Detail: {str(error).splitlines()[0]}"
            ) from error
        raise CheckpointError(f"{path} is corrupt (unpickling failed: {error})") from error
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as error:
        raise CheckpointError(
            f"{path} is corrupt or truncated and cannot be read ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); delete it to start over "
            "or restore a good copy"
        ) from error
    return obj


def load_training_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    checkpoint = load_checkpoint(path, map_location)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{path} is not a dermgan training checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})"
        )
    return checkpoint


# ----------------------------------------------------------------------------------------------------------
# Helpers


def _tree_map(fn, obj):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _tree_map(fn, v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_tree_map(fn, v) for v in obj)
    return obj


def _to_device(batch, device: torch.device, channels_last: bool):
    def move(t):
        t = t.to(device, non_blocking=True)
        if channels_last and t.ndim == 4 and t.is_floating_point():
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    return _tree_map(move, batch)


def _dist_setup() -> tuple[int, int, int, bool]:
    """(world, rank, local rank, whether we created the process group)."""
    if dist.is_available() and dist.is_initialized():
        return (
            dist.get_world_size(),
            dist.get_rank(),
            int(os.environ.get("LOCAL_RANK", dist.get_rank())),
            False,
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 1, 0, 0, False
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world, dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), True


def _resolve_amp(amp: str, device: torch.device) -> str:
    if device.type != "cuda":
        if amp in ("bf16", "fp16"):
            warnings.warn(f"amp={amp!r} is for CUDA; running in float32 on {device.type}")
        return "off"
    if amp == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return amp


def _write_grid(rows: list[np.ndarray], path: Path, pad: int = 2) -> None:
    """Tile uint8 rows (n,H,W,3) into one PNG with white gaps."""
    from PIL import Image

    n_cols = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    grid = np.full((len(rows) * (h + pad) + pad, n_cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            grid[top : top + h, left : left + w] = image if image.ndim == 3 else image[..., None]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


class _CsvLog:
    """Loss log; on resume, rows after the resumed step are dropped so the file matches the weights."""

    def __init__(self, path: Path | None, start_step: int):
        self.path, self.fields = path, None
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and start_step > 0:
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.fields = reader.fieldnames
                kept = [row for row in reader if int(row["step"]) <= start_step]
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(kept)
        elif path.exists():
            path.unlink()

    def write(self, row: dict) -> None:
        if self.path is None:
            return
        new = self.fields is None
        if new:
            self.fields = list(row)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)


# ----------------------------------------------------------------------------------------------------------
# The loop


def train(
    recipe,
    dataset,
    config: TrainConfig,
    checkpoint_dir: str | os.PathLike,
    log_path: str | os.PathLike | None = None,
    sample_dir: str | os.PathLike | None = None,
    resume: bool = True,
    on_step=None,
    desc: str = "train",
) -> TrainResult:
    """Train `recipe`'s G and D on `dataset` (a map-style torch Dataset of batch-collatable items).

    Writes `checkpoint_dir/last.pt` (full state, every `checkpoint_every` steps and at the end) and
    `checkpoint_dir/generator.pt` (G and EMA weights only, at the end). With `resume` and an existing last.pt,
    continues from it. `on_step(step_done)` is called after each step (tests use it to simulate a crash).
    """
    world, rank, local_rank, owns_group = _dist_setup()
    try:
        return _train(recipe, dataset, config, Path(checkpoint_dir), log_path, sample_dir, resume, on_step, desc,
                      world, rank, local_rank)
    finally:
        if owns_group:
            dist.destroy_process_group()


def _train(recipe, dataset, cfg: TrainConfig, checkpoint_dir: Path, log_path, sample_dir, resume, on_step, desc,
           world: int, rank: int, local_rank: int) -> TrainResult:
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    amp = _resolve_amp(cfg.amp, device)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    channels_last = device.type == "cuda" if cfg.channels_last is None else cfg.channels_last
    memory_format = torch.channels_last if channels_last else torch.preserve_format

    G: nn.Module = recipe.generator.to(device, memory_format=memory_format)
    D: nn.Module = recipe.discriminator.to(device, memory_format=memory_format)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    ema = copy.deepcopy(G).eval().requires_grad_(False) if cfg.ema_decay > 0 else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")

    checkpoint_path = checkpoint_dir / "last.pt"
    start = 0
    if resume and checkpoint_path.exists():
        start = _restore(checkpoint_path, cfg, world, rank, device, G, D, opt_g, opt_d, ema, scaler)
    else:
        # Each rank draws its own dropout masks etc., reproducibly.
        random.seed(cfg.seed + rank)
        np.random.seed((cfg.seed + rank) % 2**32)
        torch.manual_seed(cfg.seed + rank)

    G_train, D_train = G, D
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        # DDP broadcasts rank 0's weights at construction, so all ranks start identical.
        G_train, D_train = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    if cfg.compile:
        G_train, D_train = torch.compile(G_train), torch.compile(D_train)

    batches = StepBatches(len(dataset), cfg.batch_size, cfg.seed, start, cfg.steps, rank, world)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
        # its own generator: creating the iterator draws a seed, which must
        # not advance the global torch RNG (resume exactness)
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    fixed = None
    if rank == 0 and sample_dir is not None and cfg.sample_every > 0 and hasattr(recipe, "sample_rows"):
        n = min(cfg.n_sample_images, len(dataset))
        fixed = torch.utils.data.default_collate([dataset[i] for i in range(n)])
    log = _CsvLog(Path(log_path) if log_path is not None and rank == 0 else None, start)

    def autocast():
        return torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)

    sums: dict[str, float] = {}
    interval_start, run_start, done, count = time.perf_counter(), time.perf_counter(), 0, 0
    steps_iter = range(start, cfg.steps)
    if rank == 0:  # one progress bar (silent in batch runs), not one per rank
        steps_iter = progress(steps_iter, initial=start, total=cfg.steps, desc=desc)
    for step, batch in zip(steps_iter, loader):
        factor = lr_factor(step, cfg.steps, cfg.decay_start)
        for group in opt_g.param_groups:
            group["lr"] = cfg.lr_g * factor
        for group in opt_d.param_groups:
            group["lr"] = cfg.lr_d * factor
        batch = _to_device(batch, device, channels_last)

        with autocast():
            outputs = recipe.generate(G_train, batch)
        # D step on detached outputs.
        with autocast():
            loss_d, logs_d = recipe.d_loss(D_train, batch, _tree_map(torch.Tensor.detach, outputs))
        opt_d.zero_grad(set_to_none=True)
        scaler.scale(loss_d).backward()
        scaler.step(opt_d)
        # G step through the frozen raw D: no D gradients, no DDP bookkeeping for D.
        D.requires_grad_(False)
        try:
            with autocast():
                loss_g, logs_g = recipe.g_loss(D, batch, outputs)
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(loss_g).backward()
        finally:
            D.requires_grad_(True)
        scaler.step(opt_g)
        scaler.update()
        if ema is not None:
            _ema_update(ema, G, cfg.ema_decay)

        # One host sync per step: all loss values at once, which is also the finiteness check.
        logs = {"loss_d": loss_d, "loss_g": loss_g, **logs_d, **logs_g}
        values = torch.stack([v.detach().float().reshape(()) for v in logs.values()]).cpu()
        _check_finite(values, logs, step, checkpoint_path, world, device)
        for name, value in zip(logs, values.tolist()):
            sums[name] = sums.get(name, 0.0) + value
        done += 1
        count += 1
        step_done = step + 1

        if step_done % cfg.log_every == 0 or step_done == cfg.steps:
            now = time.perf_counter()
            row = {
                "step": step_done,
                "lr_g": cfg.lr_g * factor,
                "sec_per_step": (now - interval_start) / count,
            }
            row.update({k: v / count for k, v in sums.items()})
            log.write(row)
            sums, interval_start, count = {}, now, 0
        if fixed is not None and (step_done % cfg.sample_every == 0 or step_done == cfg.steps):
            _write_samples(
                recipe,
                ema if ema is not None else G,
                fixed,
                device,
                channels_last,
                autocast,
                Path(sample_dir) / f"step_{step_done:06d}.png",
            )
        if (cfg.checkpoint_every and step_done % cfg.checkpoint_every == 0) or step_done == cfg.steps:
            _save(
                checkpoint_path, step_done, cfg, recipe, world, rank, device, G, D, opt_g, opt_d, ema, scaler
            )
        if on_step is not None:
            on_step(step_done)

    elapsed = time.perf_counter() - run_start
    if rank == 0:
        final = {
            "format": CHECKPOINT_FORMAT + "/generator",
            "step": cfg.steps,
            "generator": G.state_dict(),
            "ema": None if ema is None else ema.state_dict(),
            "recipe": _metadata(recipe),
        }
        save_atomic(final, checkpoint_dir / "generator.pt")
    if world > 1:
        dist.barrier()
    return TrainResult(
        step=start + done,
        steps_this_run=done,
        seconds_per_step=elapsed / done if done else math.nan,
        checkpoint=checkpoint_path,
        log=Path(log_path) if log_path is not None else None,
    )


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


def _check_finite(
    values: torch.Tensor, logs: dict, step: int, checkpoint_path: Path, world: int, device: torch.device
) -> None:
    bad = ~torch.isfinite(values)
    flag = torch.tensor([float(bad.any())], device=device if device.type == "cuda" else "cpu")
    if world > 1:  # every rank must stop together, whichever rank saw the bad value
        dist.all_reduce(flag)
    if flag.item() == 0:
        return
    names = [f"{name}={value}" for (name, value), b in zip(zip(logs, values.tolist()), bad.tolist()) if b]
    where = (
        f"the last good checkpoint is {checkpoint_path}"
        if checkpoint_path.exists()
        else "no checkpoint had been written yet"
    )
    raise NonFiniteLossError(
        f"non-finite loss at step {step + 1} (0-based step {step}): "
        f"{', '.join(names) if names else 'on another rank'}. Training stopped without saving this step; "
        f"{where}. Lower the learning rate, check the inputs, or switch amp to 'off'/'bf16'."
    )


def _metadata(recipe) -> dict:
    return dict(recipe.metadata()) if hasattr(recipe, "metadata") else {}


def _config_record(cfg: TrainConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items()}


def _save(path: Path, step: int, cfg, recipe, world, rank, device, G, D, opt_g, opt_d, ema, scaler) -> None:
    state = rng_state(device)
    if world > 1:  # every rank's RNG state, so each rank resumes its own random stream
        states = [None] * world
        dist.all_gather_object(states, state)
    else:
        states = [state]
    if rank == 0:
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "world_size": world,
            "config": _config_record(cfg),
            "recipe": _metadata(recipe),
            "generator": G.state_dict(),
            "discriminator": D.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict(),
            "ema": None if ema is None else ema.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": states,
        }
        save_atomic(checkpoint, path)
    if world > 1:
        dist.barrier()


def _restore(path: Path, cfg: TrainConfig, world, rank, device, G, D, opt_g, opt_d, ema, scaler) -> int:
    checkpoint = load_training_checkpoint(path)
    saved = checkpoint["config"]
    for key in ("batch_size", "seed", "steps", "decay_start"):
        if saved.get(key) != getattr(cfg, key):
            raise CheckpointError(
                f"{path} was written with {key}={saved.get(key)!r} but this run has "
                f"{key}={getattr(cfg, key)!r}; resuming would not repeat the same run. Use "
                "the same settings, another checkpoint folder, or resume=False"
            )
    if checkpoint["world_size"] != world:
        raise CheckpointError(
            f"{path} was written by {checkpoint['world_size']} processes, this run has {world}; "
            "per-rank RNG streams cannot be matched"
        )
    if (checkpoint["ema"] is None) != (ema is None):
        raise CheckpointError(
            f"{path}: EMA {'present' if checkpoint['ema'] is not None else 'absent'} in the "
            "checkpoint but not in this run's config (ema_decay)"
        )
    G.load_state_dict(checkpoint["generator"])
    D.load_state_dict(checkpoint["discriminator"])
    opt_g.load_state_dict(checkpoint["opt_g"])
    opt_d.load_state_dict(checkpoint["opt_d"])
    if ema is not None:
        ema.load_state_dict(checkpoint["ema"])
    scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"][rank], device)
    return int(checkpoint["step"])


def _write_samples(recipe, G: nn.Module, batch, device, channels_last, autocast, path: Path) -> None:
    was_training = G.training
    G.eval()
    try:
        # Sampling must not consume the training RNG streams (resume exactness).
        with (
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
            torch.no_grad(),
            autocast(),
        ):
            rows = recipe.sample_rows(G, _to_device(batch, device, channels_last))
    finally:
        G.train(was_training)
    _write_grid(rows, path)
