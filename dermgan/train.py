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
channels_last and torch.compile (optional), DDP (`torchrun --nproc_per_node N`, or an already initialised process group;
`batch_size` is the *global* batch, split evenly over ranks; batch norm synchronised over the ranks), loss CSV,
sample grids, atomic and fsynced checkpoints, step-exact resume and a non-finite-loss guard.

Records survive kills: every rewrite goes through a temp file + os.replace (`write_atomic`); checkpoints carry
their SHA-256 (dermgan.integrity) and are refused when damaged; each checkpoint holds the loss log up to its
step, so the log is rewritten from it on resume and a fresh run replaces the old log only together with the
old checkpoint (`_CsvLog`); temps of killed processes are removed at the next start (`remove_stale_temps`).
Resume refuses a checkpoint of another run: other loop settings, other recipe metadata (variant, loss weights,
widths; LOOP_ONLY_FIELDS excepted), another number of items, or, when the caller passes `provenance`
(`data_fingerprint` of the training split), other data, and a checkpoint trained by other training code
(`provenance.stale_training`). `check_provenance` checks a
generator.pt against the data before it is used for sampling. Every checkpoint records the code path and commit
the run was started at and each other one it was resumed at (`code`, dermgan.provenance); generator.pt's record
is repeated in generator.training.json.

Step-exact resume: the data order is a pure function of (seed, step) (a seeded permutation per epoch, rank r
takes slice r of each global batch) and the LR a pure function of the step, so a checkpoint only needs the
modules, optimisers, EMA, grad scaler and the RNG states of every rank. Resuming from step k then repeats
exactly what an uninterrupted run does (bit-identical on the CPU).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import errno
import io
import math
import os
import pickle
import random
import re
import shutil
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

from dermgan import provenance as code_record
from dermgan.critic import Critic, CriticConfig
from dermgan.integrity import IntegrityError, verify_digest, write_with_digest
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
    # Off by default: on the paper DermGAN (H100, bf16) channels_last steps were slower than contiguous ones,
    # because reflection padding has no channels_last kernel and each pad converts the layout twice
    # (benchmarks/README.md (f), benchmarks/profile_cuda_step.py). Turn it on for a recipe where it measures faster.
    channels_last: bool = False
    compile: bool = False
    checkpoint_every: int = 0  # 0 = only at the end
    sample_every: int = 0  # 0 = no sample grids
    log_every: int = 10
    n_sample_images: int = 8
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    critic: CriticConfig = CriticConfig()  # augmentation and regularisers of what D sees (dermgan.critic)

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"unknown amp {self.amp!r}; use one of {AMP_MODES}")
        if not 0.0 <= self.decay_start <= 1.0:
            raise ValueError(f"decay_start is a fraction of the steps in [0, 1], got {self.decay_start}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


def loop_settings(section, seed: int, device: str = "auto", **overrides) -> TrainConfig:
    """The loop settings of a profile section (DermGANConfig, MelanoGANConfig, LesionEditConfig): every loop
    field the section has under the same name, its `lr` for G and D (its `lr_d` for D when set), its critic
    fields; then `overrides`."""
    from dermgan.critic import config_from

    names = {f.name for f in dataclasses.fields(TrainConfig)} - {"seed", "device", "critic", "lr_g", "lr_d"}
    values = {name: getattr(section, name) for name in names if hasattr(section, name)}
    values.update(lr_g=section.lr, lr_d=getattr(section, "lr_d", None) or section.lr, seed=seed, device=device,
                  critic=config_from(section))
    values.update(overrides)
    return TrainConfig(**values)


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
    global batch of a step does not depend on the world size: N ranks together see the images one process sees.
    That makes N ranks train the same model as one process only where every computation is per image or is
    synchronised over the ranks: the loop synchronises batch norm (`synchronise_batch_norm`), but a loss that is
    not a mean of equal per-image terms (e.g. a mean over the lesion pixels of the batch) averages differently,
    and each rank draws its own dropout masks.
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


# Temporary files and folders are named ".<final name>.tmp-<pid>[-<anything>]", so that the next start can
# tell a killed writer's leftovers (its process is gone) from a live writer's work in progress.
_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)(-.*)?$")


def temp_name(path: Path) -> Path:
    """The temporary sibling of `path` that this process writes before renaming it into place."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process; a pid this OS cannot have
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files and folders in `folder` whose writing process no longer runs; returns them.

    A SIGKILL during an atomic write leaves its temp behind (nothing runs to delete it). Temps of live
    processes are kept: they may be another run writing into the same folder right now.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        match = _TEMP_NAME.match(entry.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (a power cut after os.replace could otherwise undo it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms that cannot open folders (Windows): the rename is all we can do
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskFullError(OSError):
    """The device filled up during an atomic write; the previous file is intact and the temp file removed."""

    def __str__(self) -> str:
        return self.strerror


def _out_of_space(error: BaseException) -> bool:
    """Whether `error` or an error it arose from is ENOSPC / EDQUOT (torch.save turns its file's OSError into
    a RuntimeError "enforce fail at inline_container.cc" that keeps the OSError only as its context)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
    return False


def write_atomic(path: str | os.PathLike, write, text: bool = False, before_replace=None) -> None:
    """Call `write(file)` on a temp file in the same folder, fsync it, os.replace it onto `path`, fsync the
    folder: readers and later runs see the old file or the new one, never a part of one.
    `before_replace(temp)` runs between the fsync and the rename (dermgan.integrity records the temp's digest
    there). A full disk is a DiskFullError saying so and that the previous file is intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, "w" if text else "wb", **({"newline": ""} if text else {})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except (OSError, RuntimeError) as error:
        if not _out_of_space(error):
            raise
        kept = f"the previous {path} is intact" if path.exists() else f"there was no earlier {path.name}"
        raise DiskFullError(errno.ENOSPC, f"no space left on device while writing {path}; nothing was lost: "
                            f"{kept}. Free some space and run again", str(path)) from error
    finally:
        if tmp.exists():
            tmp.unlink()


def save_atomic(obj, path: Path) -> str:
    """torch.save through write_atomic, with the file's SHA-256 beside it (dermgan.integrity): a crash keeps
    the old file, a power cut cannot leave a torn one, and damage after the write is found on load. Returns
    the SHA-256."""
    return write_with_digest(path, lambda f: torch.save(obj, f))


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive
_LEGACY_MAGIC = bytes.fromhex("6cfc9c46f9206aa85019")  # the magic number the pre-1.6 format pickles first


def _looks_like_torch_file(head: bytes) -> bool:
    return head.startswith(_ZIP_MAGIC) or (head[:1] == b"\x80" and _LEGACY_MAGIC in head[:32])


def load_checkpoint(path: str | os.PathLike, map_location="cpu", verify: bool = True) -> dict:
    """torch.load(weights_only=True) of a file written by save_atomic, after checking its SHA-256, with errors
    that say what is wrong with the file. `verify=False` only for a file dermgan did not write (weights a user
    supplies): it has no digest to check."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:  # torch does not check the archive's CRCs: flipped bytes in a tensor would load as weights
        if verify:
            verify_digest(path)
    except IntegrityError as error:
        raise CheckpointError(str(error)) from None
    with path.open("rb") as f:
        head = f.read(32)
    # without this check torch.load calls any bytes "a pickle that needs weights_only=False"
    if not _looks_like_torch_file(head):
        what = "an empty file" if not head else "neither a torch zip archive nor a legacy torch file"
        raise CheckpointError(
            f"{path} is corrupt or not a checkpoint ({what}); delete it to start over or restore a good copy"
        )
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


_SHAPE_HINT = ("it was probably written for another variant or width of the model (base_filters, n_scales, "
               "d_layers, encoding, number of classes); load it with the settings it was trained with, "
               "or train anew")


def load_weights(module: nn.Module, state: dict, source, part: str = "model") -> None:
    """module.load_state_dict(state), with ONE line naming the file, the first mismatching tensor and the likely
    cause instead of torch's list of every size mismatch."""
    expected = module.state_dict()
    wrong = [k for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{source}: {part} tensor {k!r} has shape {tuple(state[k].shape)} in the file but "
            f"{tuple(expected[k].shape)} in this model ({len(wrong)} tensors differ); {_SHAPE_HINT}"
        )
    if missing or extra:
        detail = (f"lacks tensor {missing[0]!r} ({len(missing)} missing)" if missing
                  else f"has tensor {extra[0]!r} this model does not ({len(extra)} unexpected)")
        raise CheckpointError(f"{source}: {part} {detail}; {_SHAPE_HINT}")
    module.load_state_dict(state)


# ----------------------------------------------------------------------------------------------------------
# Same run, same data: what resume and sampling check


# Loop settings that decide the trained weights (the others, e.g. log_every or device, may change on resume).
RESUME_CONFIG_KEYS = ("batch_size", "seed", "steps", "decay_start", "lr_g", "lr_d", "beta1", "beta2",
                      "ema_decay", "critic")
# Fields of recipe.metadata() that change how a run is logged, sampled, scheduled or evaluated, not what it
# trains: they may differ on resume. Every other metadata value (variant, loss weights, widths) must match.
LOOP_ONLY_FIELDS = frozenset({"checkpoint_every", "sample_every", "log_every", "n_sample_images",
                              "num_workers", "compile", "amp", "n_eval", "eval_weights", "ablation",
                              "ablation_steps", "seeds"})
_ABSENT = "<absent>"


def data_fingerprint(data, data_root: str | os.PathLike | None = None) -> dict:
    """What a model is trained on, as plain values to store in checkpoints: for SkinData-like `data` (name,
    image_size, table with image_id and label, images) its dataset name, data root, image size, number of
    items, and a hash of the record ids, labels and the pixels of up to 64 evenly spaced images (which tells a
    re-rendered or re-resized copy of the same records apart, without reading a large dataset in full)."""
    import hashlib

    table = data.table
    digest = hashlib.sha256()
    digest.update("\n".join(map(str, table["image_id"])).encode())
    if "label" in table:
        digest.update(np.asarray(table["label"], dtype=np.int64).tobytes())
    for i in np.unique(np.linspace(0, len(data) - 1, num=min(64, len(data))).round().astype(int)):
        digest.update(np.ascontiguousarray(data.images[i]).tobytes())
    return {
        "dataset": str(data.name),
        "data_root": None if data_root is None else str(Path(data_root).expanduser().resolve()),
        "image_size": int(data.image_size),
        "n": int(len(data)),
        "sha256": digest.hexdigest()[:16],
    }


def first_difference(saved, now, where: str = ""):
    """(dotted key, saved value, current value) of the first difference between two plain-value trees, or None.
    Keys named in LOOP_ONLY_FIELDS are skipped at any depth."""
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in list(saved) + [k for k in now if k not in saved]:
            if key in LOOP_ONLY_FIELDS:
                continue
            name = f"{where}.{key}" if where else key
            found = first_difference(saved.get(key, _ABSENT), now.get(key, _ABSENT), name)
            if found:
                return found
        return None
    if isinstance(saved, (list, tuple)) and isinstance(now, (list, tuple)):
        saved, now = list(saved), list(now)  # a tuple comes back from the checkpoint as a list
    return None if saved == now else (where, saved, now)


def _way_out(path: Path) -> str:
    return (f"Train in a run directory of its own (run_dir / --run-dir), delete {path.parent}, "
            "or start over with resume=False (--fresh)")


def _check_same_run(path: Path, checkpoint: dict, run: dict) -> None:
    """Refuse to resume from a checkpoint of other data, another recipe or other loop settings."""
    saved = {"config": {k: checkpoint["config"].get(k, _ABSENT) for k in RESUME_CONFIG_KEYS},
             "recipe": checkpoint.get("recipe", {}), "n_items": checkpoint.get("n_items", run["n_items"])}
    now = {"config": {k: run["config"][k] for k in RESUME_CONFIG_KEYS}, "recipe": run["recipe"],
           "n_items": run["n_items"]}
    if run["provenance"] is not None:  # the caller says what the data is: the checkpoint must say the same
        saved["data"], now["data"] = checkpoint.get("provenance") or _ABSENT, run["provenance"]
    found = first_difference(saved, now)
    if found is None:
        return
    key, old, new = found
    if key == "data" and old == _ABSENT:
        raise CheckpointError(f"{path} records no data fingerprint (written by an older version or without "
                              f"one), so it cannot be shown to come from this data ({new.get('dataset')}); "
                              + _way_out(path))
    raise CheckpointError(f"{path} was written with {key}={old!r} but this run has {key}={new!r}; resuming "
                          "would mix two different runs. " + _way_out(path))


def check_provenance(path: str | os.PathLike, expected: dict) -> dict:
    """Check a checkpoint (generator.pt or last.pt) was trained on the data `expected` describes
    (`data_fingerprint` of the training split) before it is used, e.g. for sampling; returns the checkpoint."""
    path = Path(path)
    checkpoint = load_checkpoint(path)
    check_trained_on(path, checkpoint.get("provenance") if isinstance(checkpoint, dict) else None, expected)
    return checkpoint


def check_trained_on(source, saved: dict | None, expected: dict) -> None:
    """Refuse (CheckpointError, one line) a model whose recorded training data `saved` (its `data_fingerprint`)
    is missing or differs from `expected`, the run's own training split: `source` names the file."""
    if saved is None:
        raise CheckpointError(f"{source} records no data fingerprint, so it cannot be shown to come from this "
                              f"data ({expected.get('dataset')}); retrain it with this version")
    found = first_difference({"data": saved}, {"data": expected})
    if found is not None:
        key, old, new = found
        raise CheckpointError(f"{source} was trained with {key}={old!r} but the data here has {key}={new!r}; "
                              "it belongs to another dataset or setting, or the data changed since. Use the run "
                              "directory it was trained in, or train it on this data")


# ----------------------------------------------------------------------------------------------------------
# Helpers


@contextlib.contextmanager
def initial_weights(seed: int):
    """Build networks inside this to make `seed` fix their initial weights: torch's global RNG is seeded with it
    inside and restored afterwards, so building does not disturb any other random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def generator_weights(saved: dict, use_ema: bool = True) -> dict:
    """The state dict to evaluate from a generator.pt / last.pt: the EMA of G when the run kept one (and
    `use_ema`), else the raw G."""
    return saved["ema"] if use_ema and saved.get("ema") is not None else saved["generator"]


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


class DistributedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training-mode statistics are those of the global batch over all DDP ranks.

    torch.nn.SyncBatchNorm refuses CPU tensors (torch 2.14: "expected input tensor to be on GPU"), so gloo
    runs use this: sums over the ranks through torch.distributed.nn's differentiable all_reduce, whose backward sums the
    gradients of the statistics over the ranks as well. Outside training or without a process group it is
    plain batch norm; its parameters and buffers are named as BatchNorm's, so checkpoints are interchangeable.
    """

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (N, C, ...), got {x.dim()}D")

    def forward(self, x):
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims, shape = [0, *range(2, x.dim())], (1, -1) + (1,) * (x.dim() - 2)
        count = torch.full((1,), x.numel() // x.shape[1], dtype=x.dtype, device=x.device)
        totals = all_reduce(torch.cat([x.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        centred = x - mean.reshape(shape)
        var = all_reduce(centred.square().sum(dims)) / n  # two passes: no cancellation of E[x^2] - E[x]^2
        y = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * n / (n - 1), factor)  # unbiased, as BatchNorm keeps it
        return y


def synchronise_batch_norm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every batch norm of `module` by one that normalises over all DDP ranks together (in place where
    the module is not itself a batch norm; returns the module): torch's SyncBatchNorm on CUDA, ours elsewhere.

    Without this each rank normalises by the statistics of its own shard, and N ranks train another model than
    one process with the same global batch.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)

    def convert(bn: nn.modules.batchnorm._BatchNorm) -> DistributedBatchNorm:
        new = DistributedBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                                   device=device)
        if bn.affine:
            new.weight, new.bias = bn.weight, bn.bias  # the same Parameters: optimisers and owners keep them
        if bn.track_running_stats:
            new.running_mean, new.running_var = bn.running_mean, bn.running_var
            new.num_batches_tracked = bn.num_batches_tracked
        return new.train(bn.training)

    def is_plain_bn(m):
        return isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, (DistributedBatchNorm,
                                                                                       nn.SyncBatchNorm))

    if is_plain_bn(module):
        return convert(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if is_plain_bn(child):
                setattr(parent, name, convert(child))
    return module


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
    write_atomic(path, lambda f: Image.fromarray(grid).save(f, format="PNG"))


class _CsvLog:
    """The loss log, kept in step with the checkpoint it belongs to.

    Every checkpoint stores the log's text up to its step (`text`), so the two cannot disagree. A resumed run
    rewrites the log from its checkpoint (a log that a kill or another run left out of step is kept aside as
    <log>.mismatched). A fresh run writes its rows beside the old log, under a temporary name, until its first
    checkpoint has replaced the old checkpoint (`publish`): stopped before that, it leaves the old log with
    the old checkpoint, and the next start removes its temporary log.
    """

    def __init__(self, path: Path | None, saved: str | None):
        """`saved`: the log text of the checkpoint this run resumes from; None for a fresh run."""
        self.path, self.text, self.fields = path, saved or "", None
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent)
        if saved is None:
            self.target = temp_name(path)
            self.target.unlink(missing_ok=True)  # an earlier fresh run of this process that stopped early
            return
        self.target = path
        self.fields = next(csv.reader(io.StringIO(saved, newline="")), None)
        current = path.read_bytes().decode("utf-8", errors="replace") if path.exists() else None
        if current is not None and not current.startswith(saved):  # rows past the checkpoint are dropped
            kept = path.with_name(path.name + ".mismatched")
            os.replace(path, kept)
            warnings.warn(f"loss log {path} did not match its checkpoint's record of it (cut off by a kill, "
                          f"or written by another run); kept as {kept.name}, rewritten from the checkpoint")
        if current != saved:
            write_atomic(path, lambda f: f.write(saved), text=True)

    def write(self, row: dict) -> None:
        if self.path is None:
            return
        chunk = io.StringIO(newline="")
        new = self.fields is None
        if new:
            self.fields = list(row)
        writer = csv.DictWriter(chunk, fieldnames=self.fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)
        self.text += chunk.getvalue()
        with self.target.open("a", newline="", encoding="utf-8") as f:
            f.write(chunk.getvalue())

    def publish(self) -> None:
        """Called once a checkpoint holding `text` has replaced last.pt: a fresh run's log replaces the old
        one."""
        if self.path is None or self.target == self.path:
            return
        write_atomic(self.path, lambda f: f.write(self.text), text=True)
        self.target.unlink(missing_ok=True)
        self.target = self.path


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
    provenance: dict | None = None,
    holdout=None,
) -> TrainResult:
    """Train `recipe`'s G and D on `dataset` (a map-style torch Dataset of batch-collatable items).

    Writes `checkpoint_dir/last.pt` (full state, every `checkpoint_every` steps and at the end) and
    `checkpoint_dir/generator.pt` (G and EMA weights only, at the end). With `resume` and an existing last.pt,
    continues from it, after checking that it comes from the same run (see `_check_same_run`).
    `on_step(step_done)` is called after each step (tests use it to simulate a crash).
    `provenance`: plain values saying what the data is (`data_fingerprint`); stored in last.pt and generator.pt
    and compared on resume, so that a checkpoint of other data is refused instead of silently continued.
    `holdout`: held-out items like the dataset's (the validation split); every `sample_every` steps D's accuracy
    on held-out real images is logged beside its accuracy on training images (`d_acc_val`, `d_acc_train`): the
    gap is D memorising its training set.
    """
    world, rank, local_rank, owns_group = _dist_setup()
    try:
        return _train(recipe, dataset, config, Path(checkpoint_dir), log_path, sample_dir, resume, on_step,
                      desc, world, rank, local_rank, provenance, holdout)
    finally:
        if owns_group:
            dist.destroy_process_group()


@dataclass
class _State:
    """What a training checkpoint holds besides the RNG streams."""

    G: nn.Module
    D: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    ema: nn.Module | None
    scaler: torch.amp.GradScaler
    critic: Critic


def _build_state(recipe, cfg: TrainConfig, device: torch.device, world: int) -> _State:
    memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
    G: nn.Module = recipe.generator.to(device, memory_format=memory_format)
    D: nn.Module = recipe.discriminator.to(device, memory_format=memory_format)
    if world > 1:  # batch statistics over the global batch, as one process would compute them
        G, D = synchronise_batch_norm(G, device), synchronise_batch_norm(D, device)
    critic = Critic(D, cfg.critic, cfg.batch_size // world, device,
                    colour_channels=getattr(recipe, "d_colour_channels", None),
                    threshold=getattr(recipe, "d_threshold", 0.0))
    return _State(
        G, D,
        torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2)),
        torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2)),
        copy.deepcopy(G).eval().requires_grad_(False) if cfg.ema_decay > 0 else None,
        torch.amp.GradScaler("cuda", enabled=_resolve_amp(cfg.amp, device) == "fp16"),
        critic,
    )


def _train(recipe, dataset, cfg: TrainConfig, checkpoint_dir: Path, log_path, sample_dir, resume, on_step, desc,
           world: int, rank: int, local_rank: int, provenance: dict | None, holdout) -> TrainResult:
    device = pick_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    autocast = _autocast(device, _resolve_amp(cfg.amp, device))
    state = _build_state(recipe, cfg, device, world)
    checkpoint_path = checkpoint_dir / "last.pt"
    if rank == 0:
        remove_stale_temps(checkpoint_dir)  # temps of writes a kill interrupted
    run = {"config": _config_record(cfg), "recipe": _metadata(recipe), "provenance": provenance,
           "n_items": len(dataset)}
    saved_log = None
    if resume and checkpoint_path.exists():
        start, saved_log, code = _restore(checkpoint_path, run, world, rank, device, state)
        # the commits that trained these weights: the checkpoint's, and this one if it trains any further
        run["code"] = code_record.continued(code, start) if start < cfg.steps else code
    else:
        start = 0
        run["code"] = code_record.continued(None, 0)
        random.seed(cfg.seed + rank)  # each rank draws its own dropout masks etc., reproducibly
        np.random.seed((cfg.seed + rank) % 2**32)
        torch.manual_seed(cfg.seed + rank)
    G_train, D_train = _wrap(state, cfg, device, world)
    loader = _on_device(_loader(dataset, cfg, start, rank, world, device), device, cfg.channels_last)
    show = rank == 0 and sample_dir is not None and cfg.sample_every > 0
    grid = _fixed_batch(dataset, cfg.n_sample_images) if show and hasattr(recipe, "sample_rows") else None
    probes = {"train": _fixed_batch(dataset, PROBE_IMAGES), "val": _fixed_batch(holdout, PROBE_IMAGES)} \
        if rank == 0 and holdout is not None and cfg.sample_every > 0 else None
    log = _CsvLog(Path(log_path) if log_path is not None and rank == 0 else None, saved_log)
    meter = _Meter(device, world, checkpoint_path)

    run_start, done = time.perf_counter(), 0
    steps = progress(range(start, cfg.steps), initial=start, total=cfg.steps, desc=desc) if rank == 0 \
        else range(start, cfg.steps)  # one progress bar (silent in batch runs), not one per rank
    for step, batch in zip(steps, loader):
        factor = lr_factor(step, cfg.steps, cfg.decay_start)
        for optimiser, lr in ((state.opt_g, cfg.lr_g), (state.opt_d, cfg.lr_d)):
            for group in optimiser.param_groups:
                group["lr"] = lr * factor
        meter.add(step, _step(recipe, state, G_train, D_train, batch, step, autocast))
        if state.ema is not None:
            _ema_update(state.ema, state.G, ema_decay_at(step, cfg.ema_decay))
        done, step_done = done + 1, step + 1

        measured = {}
        if (step_done % cfg.sample_every == 0 if cfg.sample_every else False) or step_done == cfg.steps:
            if grid is not None:
                _write_samples(recipe, state.ema or state.G, grid, device, cfg.channels_last, autocast,
                               Path(sample_dir) / f"step_{step_done:06d}.png")
            if probes is not None:
                measured = _probe(recipe, state, probes, device, cfg.channels_last, autocast)
        if step_done % cfg.log_every == 0 or step_done == cfg.steps:
            row = {"step": step_done, "lr_g": cfg.lr_g * factor, **meter.read(step_done)}
            if probes is not None:
                row.update({k: measured.get(k, math.nan) for k in PROBE_COLUMNS})
            log.write(row)
        if (cfg.checkpoint_every and step_done % cfg.checkpoint_every == 0) or step_done == cfg.steps:
            meter.check()  # never save weights a non-finite loss has touched
            _save(checkpoint_path, step_done, run, world, rank, device, state, log)
        if on_step is not None:
            on_step(step_done)

    elapsed = time.perf_counter() - run_start
    if rank == 0:
        final = {
            "format": CHECKPOINT_FORMAT + "/generator",
            "step": cfg.steps,
            "generator": state.G.state_dict(),
            "ema": None if state.ema is None else state.ema.state_dict(),
            "recipe": run["recipe"],
            "provenance": provenance,
            "code": run["code"],  # the code path and commits that trained it (dermgan.provenance)
        }
        digest = save_atomic(final, checkpoint_dir / "generator.pt")
        code_record.write_training_record(checkpoint_dir / "generator.pt", digest, provenance, run["code"],
                                          step=cfg.steps)
    if world > 1:
        dist.barrier()
    return TrainResult(
        step=start + done,
        steps_this_run=done,
        seconds_per_step=elapsed / done if done else math.nan,
        checkpoint=checkpoint_path,
        log=Path(log_path) if log_path is not None else None,
    )


def _step(recipe, state: _State, G_train, D_train, batch, step: int, autocast) -> dict[str, torch.Tensor]:
    """One step: G forward, D step on the detached outputs (plus the critic's regularisers), G step through
    the frozen raw D (pix2pix order). Returns the step's loss values as device tensors (nothing read here)."""
    critic, scaler = state.critic, state.scaler
    with autocast():
        outputs = recipe.generate(G_train, batch)
    critic.begin_d_step(step, D_train)
    with autocast():
        loss_d, logs_d = recipe.d_loss(critic, batch, _tree_map(torch.Tensor.detach, outputs))
        penalty, logs_critic = critic.end_d_step()
    state.opt_d.zero_grad(set_to_none=True)
    scaler.scale(loss_d + penalty).backward()
    scaler.step(state.opt_d)
    # G step through the frozen raw D: no D gradients, no DDP bookkeeping for D.
    critic.begin_g_step(state.D)
    state.D.requires_grad_(False)
    try:
        with autocast():
            loss_g, logs_g = recipe.g_loss(critic, batch, outputs)
        state.opt_g.zero_grad(set_to_none=True)
        scaler.scale(loss_g).backward()
    finally:
        state.D.requires_grad_(True)
    scaler.step(state.opt_g)
    scaler.update()
    return {"loss_d": loss_d, "loss_g": loss_g, **logs_d, **logs_critic, **logs_g}


class _Meter:
    """Loss values summed on the device and read every `log_every` steps, so the loop does not wait for the
    device each step; the non-finite check runs on the device too, remembering the first step that went bad,
    and is read with the sums (and before every checkpoint)."""

    def __init__(self, device: torch.device, world: int, checkpoint_path: Path):
        self.device, self.world, self.checkpoint_path = device, world, checkpoint_path
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.interval_start, self.steps = time.perf_counter(), 0

    def add(self, step: int, logs: dict[str, torch.Tensor]) -> None:
        values = torch.stack([v.detach().float().reshape(()) for v in logs.values()])
        for name, value in zip(logs, values):
            self.sums[name] = self.sums[name] + value if name in self.sums else value
            self.counts[name] = self.counts.get(name, 0) + 1
        newly_bad = (self.first_bad < 0) & ~torch.isfinite(values).all()
        self.first_bad = torch.where(newly_bad, torch.full_like(self.first_bad, step), self.first_bad)
        self.steps += 1

    def read(self, step_done: int) -> dict[str, float]:
        """{'sec_per_step', <name>: mean over the interval}; raises NonFiniteLossError if a value went bad."""
        names = list(self.sums)
        values = torch.stack([self.sums[n] for n in names] + [self.first_bad.float()]).cpu().tolist() \
            if names else [float(self.first_bad)]
        self._raise_if_bad(int(values[-1]), dict(zip(names, values)))
        now = time.perf_counter()
        row = {"sec_per_step": (now - self.interval_start) / max(1, self.steps)}
        row.update({n: v / self.counts[n] for n, v in zip(names, values)})
        self.sums, self.counts, self.interval_start, self.steps = {}, {}, now, 0
        return row

    def check(self) -> None:
        self._raise_if_bad(int(self.first_bad), {n: float(v) for n, v in self.sums.items()})

    def _raise_if_bad(self, first_bad: int, sums: dict[str, float]) -> None:
        if self.world > 1:  # every rank must stop together, whichever rank saw the bad value
            flag = torch.tensor([first_bad], device=self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            first_bad = int(flag.item())
        if first_bad < 0:
            return
        names = [f"{name}={value}" for name, value in sums.items() if not math.isfinite(value)]
        where = (f"the last good checkpoint is {self.checkpoint_path}" if self.checkpoint_path.exists()
                 else "no checkpoint had been written yet")
        raise NonFiniteLossError(
            f"non-finite loss at step {first_bad + 1} (0-based step {first_bad}): "
            f"{', '.join(names) if names else 'on another rank'}. Training stopped without saving it; "
            f"{where}. Lower the learning rate, check the inputs, or switch amp to 'off'/'bf16'."
        )


PROBE_IMAGES = 64  # real images per probe of D's accuracy (training and held-out)
PROBE_COLUMNS = ("d_acc_train", "d_acc_val", "d_acc_fake", "d_sign_train", "d_sign_val")


def _probe(recipe, state: _State, probes: dict, device, channels_last, autocast) -> dict[str, float]:
    """D's accuracy on fixed training and held-out real images (and on G's images of the training maps)."""
    found = {}
    with autocast():
        for split, batch in probes.items():
            result = state.critic.probe(recipe, state.G, _to_device(batch, device, channels_last))
            found[f"d_acc_{split}"], found[f"d_sign_{split}"] = result["acc_real"], result["sign_real"]
            if split == "train":
                found["d_acc_fake"] = result["acc_fake"]
    return found


def _fixed_batch(dataset, n: int):
    return torch.utils.data.default_collate([dataset[i] for i in range(min(n, len(dataset)))])


def _autocast(device: torch.device, amp: str):
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return lambda: torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _wrap(state: _State, cfg: TrainConfig, device: torch.device, world: int):
    """(G, D) as the step runs them: DDP-wrapped over several ranks, compiled when asked."""
    G, D = state.G, state.D
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        # DDP broadcasts rank 0's weights at construction, so all ranks start identical.
        G, D = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    if cfg.compile:
        G, D = torch.compile(G), torch.compile(D)
    return G, D


def _loader(dataset, cfg: TrainConfig, start: int, rank: int, world: int, device: torch.device):
    batches = StepBatches(len(dataset), cfg.batch_size, cfg.seed, start, cfg.steps, rank, world)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.num_workers > 0,
        # its own generator: creating the iterator draws a seed, which must not advance the global torch RNG
        # (resume exactness)
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def _on_device(loader, device: torch.device, channels_last: bool):
    """The loader's batches on `device`, each moved while the step before it runs.

    On CUDA the copy of batch k + 1 (from pinned memory, non-blocking) is issued on a side stream before batch k
    is handed to the step, so the copy overlaps the step's kernels instead of preceding them; the step's stream
    waits for its batch's copy, and the batch's memory is marked as used by that stream so that the allocator
    does not hand it out while the step still reads it. Elsewhere each batch is moved when it is needed (on the
    CPU that is no copy at all). The batches and their order are the loader's.
    """
    if device.type != "cuda":
        for batch in loader:
            yield _to_device(batch, device, channels_last)
        return
    copies, compute = torch.cuda.Stream(device), torch.cuda.current_stream(device)
    batches = iter(loader)

    def issue():
        host = next(batches, None)
        if host is None:
            return None
        with torch.cuda.stream(copies):
            return _to_device(host, device, channels_last)

    def used_by_compute(tensor):
        tensor.record_stream(compute)
        return tensor

    upcoming = issue()
    while upcoming is not None:
        compute.wait_stream(copies)
        batch = _tree_map(used_by_compute, upcoming)
        upcoming = issue()
        yield batch


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA's decay at `step` (0-based): min(decay, (1 + step) / (10 + step)), TensorFlow's warm-up rule. Without
    it a 0.999 EMA still weighs the initial weights by 0.999^n after n steps (0.78 after 250, 0.14 after 2,000):
    short runs (the ablation, the comparison) would be evaluated at a blend with their initialisation."""
    return min(decay, (1.0 + step) / (10.0 + step))


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for every parameter; buffers (batch-norm statistics) copied."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


def _metadata(recipe) -> dict:
    return dict(recipe.metadata()) if hasattr(recipe, "metadata") else {}


def _config_record(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def _save(path: Path, step: int, run: dict, world, rank, device, state: _State, log: _CsvLog) -> None:
    rng = rng_state(device)
    if world > 1:  # every rank's RNG state, so each rank resumes its own random stream
        states = [None] * world
        dist.all_gather_object(states, rng)
    else:
        states = [rng]
    if rank == 0:
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "world_size": world,
            **run,  # config, recipe metadata, provenance, n_items (what _check_same_run compares); code
            "generator": state.G.state_dict(),
            "discriminator": state.D.state_dict(),
            "opt_g": state.opt_g.state_dict(),
            "opt_d": state.opt_d.state_dict(),
            "ema": None if state.ema is None else state.ema.state_dict(),
            "scaler": state.scaler.state_dict(),
            "critic": state.critic.state_dict(),
            "rng": states,
            "log": log.text if log.path is not None else None,  # the loss log up to this step (_CsvLog)
        }
        save_atomic(checkpoint, path)
        log.publish()
    if world > 1:
        dist.barrier()


def _restore(path: Path, run: dict, world, rank, device, state: _State) -> tuple[int, str, list | None]:
    """Load the state of `path` into the run's modules; returns its step, its loss log's text and its code
    record ([UNRECORDED] when an older version wrote it)."""
    checkpoint = load_training_checkpoint(path)
    _check_same_run(path, checkpoint, run)
    stale = code_record.stale_training(checkpoint.get("code"))
    if stale:  # its weights would be reported as this code's
        raise CheckpointError(f"{path} {stale}; resuming would mix two versions of the training. "
                              + _way_out(path))
    if checkpoint["world_size"] != world:
        raise CheckpointError(
            f"{path} was written by {checkpoint['world_size']} processes, this run has {world}; "
            "per-rank RNG streams cannot be matched"
        )
    if (checkpoint["ema"] is None) != (state.ema is None):
        raise CheckpointError(
            f"{path}: EMA {'present' if checkpoint['ema'] is not None else 'absent'} in the "
            "checkpoint but not in this run's config (ema_decay)"
        )
    load_weights(state.G, checkpoint["generator"], path, "generator")
    load_weights(state.D, checkpoint["discriminator"], path, "discriminator")
    state.opt_g.load_state_dict(checkpoint["opt_g"])
    state.opt_d.load_state_dict(checkpoint["opt_d"])
    if state.ema is not None:
        load_weights(state.ema, checkpoint["ema"], path, "EMA generator")
    state.scaler.load_state_dict(checkpoint["scaler"])
    state.critic.load_state_dict(checkpoint["critic"])
    set_rng_state(checkpoint["rng"][rank], device)
    code = checkpoint.get("code") or [code_record.UNRECORDED]
    return int(checkpoint["step"]), checkpoint.get("log") or "", code


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
