"""Seeding, device choice, run directories and an environment report: what every notebook does first."""

from __future__ import annotations

import os
import platform
import random
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from dermgan.config import Profile, get_profile

REPORTED_PACKAGES = (
    "torch", "torchvision", "numpy", "scipy", "pandas", "scikit-learn", "torchmetrics", "torch-fidelity",
    "matplotlib", "seaborn", "papermill", "nbval",
)


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed python, numpy and torch (all devices) and return a torch.Generator seeded the same way.

    With `deterministic`, torch is asked for deterministic algorithms (warn-only, since a few CUDA kernels
    have none); on the CPU a re-run then gives the same numbers.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this set before its first use to be reproducible.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def pick_device(device: str = "auto") -> torch.device:
    """"auto" -> CUDA if present, then Apple MPS, then the CPU; anything else is taken literally."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available here; use 'auto' or 'cpu'")
    return chosen


def project_root(start: Path | None = None) -> Path:
    """The repository root: the nearest folder above `start` (default: cwd) with dermgan's pyproject.toml.

    Notebooks run from notebooks/ (JupyterLab), papermill_runs/<profile>/ (nbval) or the root (papermill);
    relative run directories are resolved against the root so that all three write to the same place.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and 'name = "dermgan"' in pyproject.read_text():
            return folder
    return Path(__file__).resolve().parents[1]


def resolve_run_dir(run_dir: str | os.PathLike, create: bool = True) -> Path:
    """An absolute run directory: relative paths are taken from the project root."""
    path = Path(run_dir)
    if not path.is_absolute():
        path = project_root() / path
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def git_commit(root: Path | None = None) -> str | None:
    """The checked-out commit (with '+dirty' when the tree has changes), or None outside git."""
    root = root or project_root()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def package_versions(names=REPORTED_PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)}, {torch.cuda.device_count()} visible)"
    return device.type


def environment_report(device: str = "auto") -> dict:
    """Everything a reader needs to know about where a result was computed."""
    chosen = pick_device(device)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device_description(chosen),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "packages": package_versions(),
        "git_commit": git_commit(),
    }


def batch_mode() -> bool:
    """True under papermill/nbval/CI (the pipeline and the test command set DERMGAN_BATCH=1)."""
    return os.environ.get("DERMGAN_BATCH") == "1" or os.environ.get("CI") == "true"


def progress(iterable=None, **kwargs):
    """tqdm.auto progress bar when used interactively, silent in batch runs (nbval compares stderr)."""
    disable = kwargs.pop("disable", False) or batch_mode()
    if disable:  # plain tqdm: tqdm.auto would warn on stderr about missing widgets even when disabled
        from tqdm import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(iterable, disable=disable, **kwargs)


@dataclass
class RunContext:
    """What a notebook knows after its parameters cell: the profile, where to write, which device."""

    profile: Profile
    run_dir: Path
    device: torch.device
    seed: int
    dataset: str
    data_root: str | None

    def path(self, *parts: str) -> Path:
        """A path inside the run directory whose parent folder exists."""
        target = self.run_dir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


def start(profile: str = "cpu", run_dir: str | None = None, seed: int = 0, device: str = "auto",
          dataset: str = "synthetic", data_root: str | None = None, **overrides) -> RunContext:
    """The first call of every notebook: resolve the profile, seed everything, pick the device.

    `overrides` replace profile fields, given as section={field: value}, e.g. dermgan={"steps": 100}.
    """
    resolved = get_profile(profile).replace(**overrides)
    seed_everything(seed)
    return RunContext(
        profile=resolved,
        run_dir=resolve_run_dir(run_dir or f"runs/{profile}"),
        device=pick_device(device),
        seed=seed,
        dataset=dataset,
        data_root=data_root,
    )
