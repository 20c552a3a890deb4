"""Seeding, device choice, run directories (one writer each) and an environment report: what every notebook
does first.

torch and numpy are imported inside the functions that need them: the command line imports this module for
`--help` and `list`, which must answer at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import platform
import random
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from dermgan.config import DataConfig, Profile, get_profile

if TYPE_CHECKING:
    import torch

REPORTED_PACKAGES = (
    "torch", "torchvision", "numpy", "scipy", "pandas", "scikit-learn", "torchmetrics", "torch-fidelity",
    "matplotlib", "seaborn", "papermill", "nbval",
)


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed python, numpy and torch (all devices) and return a torch.Generator seeded the same way.

    With `deterministic`, torch is asked for deterministic algorithms (warn-only, since a few CUDA kernels
    have none); on the CPU a re-run then gives the same numbers.
    """
    import numpy as np
    import torch

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
    import torch

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


HOME_VARIABLE = "DERMGAN_HOME"
_announced_home: set[Path] = set()


def project_root(start: Path | None = None) -> Path:
    """Where runs/ (and, in a checkout, papermill_runs/ and figures/) live: $DERMGAN_HOME when set, else the
    repository root.

    The repository root is the nearest folder above `start` (default: cwd) with dermgan's pyproject.toml, else
    the checkout the package was imported from (an editable install run from elsewhere). Notebooks run from
    notebooks/ (JupyterLab), papermill_runs/<profile>/ (nbval) or the root (papermill); relative run
    directories are resolved against the root so that all three write to the same place. The pipeline hands
    its root to the kernels it starts ($DERMGAN_HOME), so a whole run writes under one root.

    Outside any checkout (`pip install .`) the package folder is site-packages, which must never receive runs:
    the working directory is used instead, and a one-line note on stderr says so (once per folder).
    """
    home = os.environ.get(HOME_VARIABLE)
    if home:
        return Path(home).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    checkout = code_checkout()
    for folder in (here, *here.parents, *([checkout] if checkout else [])):
        if is_checkout(folder):
            return folder
    if here not in _announced_home:
        _announced_home.add(here)
        print(f"dermgan: not inside a dermgan checkout; runs go under {here} (set {HOME_VARIABLE} to choose)",
              file=sys.stderr)
    return here


def is_checkout(folder: Path) -> bool:
    """True for a folder holding dermgan's own pyproject.toml (a source checkout, not site-packages)."""
    pyproject = folder / "pyproject.toml"
    try:
        return pyproject.is_file() and 'name = "dermgan"' in pyproject.read_text()
    except OSError:
        return False


def packaged_notebooks() -> Path:
    """The notebooks that belong to this code: <checkout>/notebooks, or the copy a wheel ships as package data
    (dermgan/notebooks, from the same files; pyproject.toml maps it)."""
    checkout = code_checkout()
    return checkout / "notebooks" if checkout else Path(__file__).resolve().parent / "notebooks"


# ---------------------------------------------------------------------------------------------- references

# Set (to 1) by the one maintainer command that refreshes the committed references (`python -m dermgan run
# --references`, `make references`, `benchmarks/run_all.py --references`) and inherited by what it starts.
REFERENCES_VARIABLE = "DERMGAN_REFERENCES"
EXECUTED_FOLDER = "executed"  # runs/<series>/executed: a user's executed notebooks


def refreshing_references() -> bool:
    """Whether this process refreshes the committed references: only then do papermill_runs/, figures/ and
    benchmarks/results/ receive new files. Everything else writes under runs/, which git ignores."""
    return os.environ.get(REFERENCES_VARIABLE) == "1"


def executed_dir(series: str, references: bool | None = None) -> Path:
    """Where the executed notebooks (and manifest.json) of a series go: papermill_runs/<series> when
    refreshing the committed references, else runs/<series>/executed beside the series' artefacts (`series`
    = run_name)."""
    references = refreshing_references() if references is None else references
    root = project_root()
    return root / "papermill_runs" / series if references else root / "runs" / series / EXECUTED_FOLDER


def executed_manifests(series_pattern: str, references: bool | None = None) -> list[Path]:
    """The manifest.json of every executed series whose name matches a glob pattern (e.g. "cpu-*"), in the
    place `executed_dir` gives."""
    root = project_root()
    pattern = executed_dir(series_pattern, references).relative_to(root) / "manifest.json"
    return sorted(root.glob(str(pattern)))


def resolve_run_dir(run_dir: str | os.PathLike, create: bool = True) -> Path:
    """An absolute run directory: relative paths are taken from the project root."""
    path = Path(run_dir)
    if not path.is_absolute():
        path = project_root() / path
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


# Folders that hold a run's own records, not the code or notebooks that make them: a series run one notebook at a
# time rewrites them between calls, and that must not mark the next call's code as changed. (runs/ and data/ are
# ignored by git, so they never count either.)
RESULT_FOLDERS = ("papermill_runs", "figures")


def code_checkout() -> Path | None:
    """The checkout this package's code was imported from (None for an install without one, e.g. `pip install
    .`): the code a commit describes, wherever runs are written ($DERMGAN_HOME may be elsewhere)."""
    folder = Path(__file__).resolve().parents[1]
    return folder if is_checkout(folder) else None


def git_commit(root: Path | None = None) -> str | None:
    """The checked-out commit of `root` (default: the code's checkout), with '+dirty' when a file outside
    RESULT_FOLDERS differs from it: a changed tracked file or an untracked one that git does not ignore (code,
    notebooks, configuration); None outside git."""
    root = root or code_checkout()
    if root is None:
        return None
    excluded = [f":(exclude){folder}" for folder in RESULT_FOLDERS]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", ".", *excluded],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
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
    import torch

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)}, {torch.cuda.device_count()} visible)"
    return device.type


def environment_report(device: str = "auto") -> dict:
    """Everything a reader needs to know about where a result was computed."""
    import torch

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


def duration(seconds: float) -> str:
    """'45 s', '3 min 05 s', '1 h 02 min': how long something took or will take, for a person."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Heartbeat:
    """While a long step runs, a line every `every` seconds (the first after `first`), so that a terminal or a
    batch log is never silent for long: `with Heartbeat(lambda: "07: cell 3 of 20, 2 min so far"): ...`.

    The line comes from `describe()` at the moment it is printed, by a daemon thread; `beats` counts the lines
    printed, so the caller knows whether its own line was interrupted.
    """

    def __init__(self, describe, every: float = 60.0, first: float | None = None, write=None):
        self.describe, self.every = describe, every
        self.first = every if first is None else first
        self.write = write or (lambda line: print(line, flush=True))
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dermgan-heartbeat", daemon=True)

    def _run(self) -> None:
        wait = self.first
        while not self._stop.wait(wait):
            self.write(self.describe())
            self.beats += 1
            wait = self.every

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class KernelNoiseFilter(logging.Filter):
    """Drops the two lines a papermill kernel prints on stderr although nothing is wrong.

    ipykernel warns at start-up that its local TCP sockets are not encrypted, and jupyter_client interrupts
    every kernel before shutting it down, which ipykernel logs as "KeyboardInterrupt caught in kernel". The
    pipeline installs this filter on the kernel's log handler only; every other kernel message still shows.
    (The name says two lines; a third, the closed-socket traceback after Ctrl-C, is below.)
    """

    NOISE = ("Kernel is running over TCP without encryption", "KeyboardInterrupt caught in kernel")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith(self.NOISE) or self.reply_after_shutdown(record))

    @staticmethod
    def reply_after_shutdown(record: logging.LogRecord) -> bool:
        """After Ctrl-C the pipeline shuts the kernel down mid-cell; the cell's reply then meets a closed socket
        (ZMQError ENOTSOCK) and ipykernel logs a traceback that says nothing the pipeline has not said."""
        error = record.exc_info[1] if record.exc_info else None
        return type(error).__name__ == "ZMQError" and getattr(error, "errno", None) == errno.ENOTSOCK


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


def run_name(profile: str, dataset: str = "synthetic") -> str:
    """Folder name under runs/ and papermill_runs/: the profile, plus the dataset when it is a real one.

    Synthetic runs keep the plain profile name, so each dataset gets its own artefacts and executed notebooks
    and a real-data run can never overwrite the synthetic results.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", dataset):
        raise ValueError(f"dataset name {dataset!r} must be letters, digits, '_', '.' or '-' (e.g. ham10000)")
    return profile if dataset == "synthetic" else f"{profile}-{dataset}"


def write_text_atomic(path: Path, text: str) -> Path:
    """Write to a temporary file in the same folder, then os.replace: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


RUN_RECORD = "run.json"
ADDED_DATA_FIELDS = ("allow_upsampling",)  # DataConfig fields newer than some run.json records (issue 29)


class RunDirMismatch(ValueError):
    """A run directory made with other data or settings than the ones asked for now."""


def run_identity(profile: Profile, seed: int, dataset: str, data_root: str | None) -> dict:
    """What defines a run directory's artefacts (its data cache, and everything trained or measured on it)."""
    root = str(Path(data_root).expanduser().resolve()) if data_root else None
    return {"profile": profile.name, "dataset": dataset, "data_root": root, "seed": seed,
            "data": dataclasses.asdict(profile.data)}


def read_run_record(run_dir: Path) -> dict | None:
    """The run.json of a run directory, None when there is none yet; a damaged one is an error, not 'none'."""
    path = Path(run_dir) / RUN_RECORD
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunDirMismatch(f"{path} cannot be read ({error}); delete it only if you know what made "
                             f"{run_dir}, or use another run dir") from None
    if not isinstance(record, dict):
        raise RunDirMismatch(f"{path} is not a JSON object; use another run dir or delete {run_dir}")
    return record


def record_differences(recorded: dict, wanted: dict, prefix: str = "") -> list[str]:
    """'name: X in run.json, Y asked for now' for every identity field that differs (nested as data.image_size)."""
    found = []
    for key, value in wanted.items():
        have = recorded.get(key)
        if isinstance(value, dict) and isinstance(have, dict):
            found += record_differences(have, value, f"{prefix}{key}.")
        elif have != value:
            found.append(f"{prefix}{key}: {have!r} in {RUN_RECORD}, {value!r} asked for now")
    return found


def check_run_dir(run_dir: Path, identity: dict) -> bool:
    """Refuse (RunDirMismatch) a run dir made with other settings, writing nothing; True when it has no record
    yet (its first use). A data setting added to DataConfig after the record was written counts as its
    default there (run.json files written before `allow_upsampling` existed stay valid)."""
    recorded = read_run_record(run_dir)
    if recorded is None:
        return True
    if isinstance(recorded.get("data"), dict):
        defaults = dataclasses.asdict(DataConfig())
        recorded["data"] = {**{k: defaults[k] for k in ADDED_DATA_FIELDS}, **recorded["data"]}
    differences = record_differences(recorded, identity)
    if differences:
        raise RunDirMismatch(f"run dir {run_dir} was made with other settings ({'; '.join(differences)}); "
                             f"give another run dir (--run-dir, or run_dir in the notebook) or delete {run_dir}")
    return False


def claim_run_dir(run_dir: Path, identity: dict) -> None:
    """Record what made `run_dir` on its first use (atomically); refuse a later use with other settings."""
    if check_run_dir(run_dir, identity):
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        record = json.dumps({**identity, "created": created}, indent=2) + "\n"
        write_text_atomic(Path(run_dir) / RUN_RECORD, record)


def adopt_recorded_data(run_dir: Path, profile: Profile, asked: dict) -> dict:
    """The data settings for a notebook: its explicit values, else the ones recorded in run.json, else the profile's.

    This is how `-p image_size=64` reaches notebooks that do not declare image_size: the pipeline records it in
    run.json before anything runs, and every notebook using that run directory builds the same data. A value
    adopted from run.json that differs from the profile is announced, never silent.
    """
    recorded = (read_run_record(run_dir) or {}).get("data") or {}
    known = {f.name for f in dataclasses.fields(profile.data)}
    chosen = {k: v for k, v in recorded.items() if k in known}
    chosen.update({k: v for k, v in asked.items() if v is not None})
    for name, value in chosen.items():
        if name not in asked or asked[name] is None:
            if value != getattr(profile.data, name):
                print(f"{run_dir.name}/{RUN_RECORD}: {name} = {value!r} (the {profile.name} profile says "
                      f"{getattr(profile.data, name)!r})")
    return chosen


# ---------------------------------------------------------------------------------------------- one writer

LOCK_FILE = "run.lock"
LOCK_VARIABLE = "DERMGAN_RUN_LOCK"  # a pipeline's lock token, inherited by the kernels it starts
_held: dict[Path, tuple[int, str]] = {}  # run dir -> (lock file descriptor, token) held by this process


class RunDirBusy(RuntimeError):
    """Another process is writing into the run directory."""


def hold_run_dir(run_dir: str | os.PathLike) -> str | None:
    """Make this process the one writer of `run_dir` until it exits (or `release_run_dir`); returns the lock's
    token, or None when this process works under the lock of the pipeline that started it. Another holder is a
    RunDirBusy naming it (pid, command, since when) and the way out.

    The lock is flock() on run_dir/run.lock. The OS drops it when its process ends, however it ends (SIGKILL
    included), so a lock left by a dead process, or by a pid reused since, never blocks: it is simply free.
    Children forked by the holder close their copy (the lock stays the parent's). The file records the holder
    for the refusal message; a kernel started by a pipeline that holds the lock finds the same token in
    $DERMGAN_RUN_LOCK and does not refuse itself.
    """
    import fcntl

    folder = Path(run_dir).resolve()
    if folder in _held:
        return _held[folder][1]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = _lock_holder(path)
        if holder.get("token") and holder["token"] == os.environ.get(LOCK_VARIABLE):
            return None  # the pipeline that started this kernel holds it for this series
        raise RunDirBusy(f"run dir {folder} is in use by {_describe_holder(holder)}; wait until it ends or "
                         "stop it, or use another run dir (--run-dir, or run_dir in the notebook)") from None
    token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command_line(),
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "token": token}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    os.register_at_fork(after_in_child=lambda: _forget_in_child(folder, fd))
    _held[folder] = (fd, token)
    return token


def release_run_dir(run_dir: str | os.PathLike) -> None:
    """Give up this process's lock of `run_dir` (a no-op when it holds none)."""
    fd, _ = _held.pop(Path(run_dir).resolve(), (None, None))
    if fd is not None:
        os.ftruncate(fd, 0)  # no record of a holder that has gone
        os.close(fd)  # closing the last descriptor drops the flock


@contextlib.contextmanager
def run_dir_lock(run_dir: str | os.PathLike):
    """hold_run_dir for the block; kernels started inside work under the lock; released at the end."""
    already = Path(run_dir).resolve() in _held
    token = hold_run_dir(run_dir)
    previous = os.environ.get(LOCK_VARIABLE)
    if token is not None:
        os.environ[LOCK_VARIABLE] = token
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(LOCK_VARIABLE, None)
        else:
            os.environ[LOCK_VARIABLE] = previous
        if not already:
            release_run_dir(run_dir)


def _forget_in_child(folder: Path, fd: int) -> None:
    """A forked child drops its copy of the lock's descriptor (the flock stays with the parent)."""
    if _held.get(folder, (None,))[0] == fd:
        del _held[folder]
        os.close(fd)


def _lock_holder(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):  # the holder is writing its record right now
        return {}
    return record if isinstance(record, dict) else {}


def _describe_holder(holder: dict) -> str:
    if "pid" not in holder:
        return "another process (it has just started)"
    where = "" if holder.get("host") in (None, socket.gethostname()) else f" on {holder['host']}"
    return f"process {holder['pid']}{where} ({holder.get('command')}, since {holder.get('since')})"


def command_line() -> str:
    """This process's command as a user would recognise it (the lock record; what trained a model)."""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if "ipykernel" in program:
        return "a Jupyter kernel: a notebook run on its own"
    if program == "__main__.py":  # python -m <package>
        program = f"python -m {Path(sys.argv[0]).parent.name}"
    return " ".join([program, *sys.argv[1:]])[:300]


def start(profile: str = "cpu", run_dir: str | None = None, seed: int = 0, device: str = "auto",
          dataset: str = "synthetic", data_root: str | None = None, **overrides) -> RunContext:
    """The first call of every notebook: resolve the profile, check the run directory, seed, pick the device.

    `overrides` replace profile fields, given as section={field: value}, e.g. dermgan={"steps": 100}.
    The default run directory is runs/<profile> for the synthetic data and runs/<profile>-<dataset> otherwise.
    Its run.json records what defines its artefacts (profile, dataset, data_root, seed, data settings); using
    the folder with other ones is refused (RunDirMismatch), naming the difference. The process becomes the
    folder's one writer (`hold_run_dir`) until it ends, unless the pipeline that started it holds the folder.
    """
    from dermgan.data.sizes import fit_image_size

    base = get_profile(profile)
    chosen_device = pick_device(device)
    # Created by claim_run_dir once every setting has been checked: a refused call leaves no folder behind.
    folder = resolve_run_dir(run_dir or f"runs/{run_name(profile, dataset)}", create=False)
    explicit = (overrides.get("data") or {}).get("image_size") is not None
    overrides["data"] = adopt_recorded_data(folder, base, dict(overrides.get("data") or {}))
    resolved = base.replace(**overrides)
    if explicit or "image_size" not in overrides["data"]:  # neither recorded in run.json nor taken from it
        resolved = fit_image_size(resolved, dataset, data_root, explicit, log=print)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 holds the lock for every rank
        hold_run_dir(folder)  # until this process (command or kernel) ends
    claim_run_dir(folder, run_identity(resolved, seed, dataset, data_root))
    seed_everything(seed)
    if resolved.threads is not None:
        import torch

        torch.set_num_threads(resolved.threads)
    return RunContext(
        profile=resolved,
        run_dir=folder,
        device=chosen_device,
        seed=seed,
        dataset=dataset,
        data_root=data_root,
    )
