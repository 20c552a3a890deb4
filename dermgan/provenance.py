"""Which code trained each model, and which commits a reported number comes from.

Code records. Every trained model file (a GAN's last.pt / generator.pt, a classifier's .pt) carries `code`: the
code path and git commit it was started at, then every other code path or commit it was resumed at, each with
the step it took over from:

    [{"by": "notebook 02_dermgan_training", "commit": "4da065d...", "step": 0},
     {"by": "python -m dermgan train --profile cpu", "commit": "9f1c2e0...+dirty", "step": 1500}]

"+dirty": the checkout differed from the commit (changed or untracked files outside the run's own records,
`runtime.git_commit`); None: not a git checkout. Resuming at another commit is allowed only while the training
code (TRAINING_CODE_PATHS) is the same: the loop refuses a checkpoint whose record names a commit with other
training code, or that has no record (an older version), through `stale_training`. What cannot be compared
(uncommitted changes, no git) resumes, and `pipeline.training_code_problems` refuses to report a series whose
models were trained by code that is not the code its notebooks ran at.

Beside each model file `<name>.pt` the same record is kept as JSON in `<name>.training.json` (with the SHA-256
of the file it describes), so that the pipeline can list what trained every model of a run directory in the
series manifest without loading any weights (`trained_models`): a clean clone without runs/ can then check the
committed series (tests/test_reported_runs.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dermgan.runtime import code_checkout, command_line, git_commit

NOTEBOOK_VARIABLE = "DERMGAN_NOTEBOOK"  # the pipeline names the notebook its kernel runs
MANIFEST_VARIABLE = "DERMGAN_MANIFEST"  # ... and the manifest that records the series
UNRECORDED = {"by": "unrecorded (a checkpoint of an older version)", "commit": None, "step": 0}
RECORD_SUFFIX = ".training.json"

# What can change a trained model's weights (conservative): the package except the modules that only evaluate,
# plot or report, and the notebooks that train (02 DermGAN, 03 MelanoGAN baselines, 04 lesion editors and their
# classifier, 05 the metrics classifier). Package versions are recorded in each manifest, not checked here.
EVALUATION_ONLY = ("dermgan/metrics", "dermgan/turing.py", "dermgan/turing_page.py", "dermgan/viz.py",
                   "dermgan/editing.py", "dermgan/controllability.py", "dermgan/integrity.py",
                   "dermgan/provenance.py")
TRAINING_NOTEBOOKS = ("notebooks/02_dermgan_training.ipynb", "notebooks/03_melanogan_baselines.ipynb",
                      "notebooks/04_lesion_add_remove.ipynb", "notebooks/05_metrics.ipynb")
TRAINING_CODE_PATHS = ("dermgan", *TRAINING_NOTEBOOKS, *(f":(exclude){path}" for path in EVALUATION_ONLY))


def code_path() -> str:
    """What is running, as a reader would name it: 'notebook 02_dermgan_training' for a notebook the pipeline
    runs (or JupyterLab, which names its session), else the command line ('python -m dermgan train ...')."""
    notebook = os.environ.get(NOTEBOOK_VARIABLE) or os.environ.get("JPY_SESSION_NAME")
    if notebook:
        return f"notebook {Path(notebook).stem}"
    return command_line()


def origin(step: int = 0) -> dict:
    """This process's code record entry: code path, commit of the code's checkout, the step it starts at."""
    return {"by": code_path(), "commit": git_commit(code_checkout()), "step": int(step)}


def continued(history: list[dict] | None, step: int) -> list[dict]:
    """The code record of a model this process trains from `step` on: a new record for a fresh start (history
    None), else the checkpoint's record (for one without a record: [UNRECORDED]) plus this process when its
    code path or commit differs from the last entry's."""
    here = origin(step)
    if history is None:
        return [here]
    history = [dict(entry) for entry in history]
    last = history[-1]
    if (last.get("by"), last.get("commit")) != (here["by"], here["commit"]):
        history.append(here)
    return history


def changed_training_code(trained_at: str, now_at: str | None = None, root: Path | None = None) -> list[str]:
    """The training code files (TRAINING_CODE_PATHS) that differ between commit `trained_at` and commit `now_at`
    (None: the checkout's working tree) of `root` (default: the code's checkout), as `git diff --name-only`
    lists them; a commit this clone does not have, or no git, gives a one-entry list '(cannot compare: ...)'."""
    import subprocess

    root = root or code_checkout()
    if root is None:
        return ["(cannot compare: the code is not a git checkout)"]
    try:
        out = subprocess.run(["git", "diff", "--name-only", trained_at, *([now_at] if now_at else []), "--",
                              *TRAINING_CODE_PATHS], cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        detail = (getattr(error, "stderr", "") or str(error)).strip()
        return [f"(cannot compare: {detail.splitlines()[0] if detail else 'git failed'})"]
    return out.split()


def stale_training(history: list[dict] | None) -> str | None:
    """Why weights with code record `history` were not trained by the code now checked out, in a phrase, or None
    when nothing shows that: a checkpoint of an older version (no record), or a commit of its record whose
    training code differs from the working tree's. Commits with uncommitted changes ('+dirty') and code that is
    not a checkout cannot be compared, so they pass here; the pipeline refuses to report them."""
    if not history or UNRECORDED in history:
        return "records no training code (written by an older version)"
    for commit in commits_of(history):
        if commit is None or commit.endswith("+dirty"):
            continue
        changed = changed_training_code(commit)  # no checkout, or a commit it lacks: "(cannot compare ...)"
        if changed and not changed[0].startswith("(cannot compare"):
            files = ", ".join(changed[:3]) + (" ..." if len(changed) > 3 else "")
            return f"was trained at {commit[:7]} and the training code has changed since ({files})"
    return None


class ProvenanceError(ValueError):
    """A record (samples, a figure's sources) that cannot be shown to come from the run's data and code."""


def training_of(saved: dict) -> dict:
    """What trained the model of a generator file or checkpoint (a loaded dict): {"data": its data fingerprint
    (None: not recorded), "code": its code record (None: an older version)}; samples' meta.json carries it."""
    return {"data": saved.get("provenance"), "code": saved.get("code")}


def commits_of(history: list[dict] | None) -> list[str | None]:
    """The distinct commits of a code record, in order (None: unrecorded, or not a checkout)."""
    found: list[str | None] = []
    for entry in history or [UNRECORDED]:
        if entry.get("commit") not in found:
            found.append(entry.get("commit"))
    return found


# ------------------------------------------------------------------------------------------- training records

def record_path(model_file: str | os.PathLike) -> Path:
    """Where the training record of `model_file` is kept: generator.pt -> generator.training.json."""
    model_file = Path(model_file)
    return model_file.with_name(model_file.stem + RECORD_SUFFIX)


def write_training_record(model_file: str | os.PathLike, digest: str, data: dict | None,
                          code: list[dict], **more) -> None:
    """Write `<model>.training.json` (atomically) after `model_file` was written with SHA-256 `digest`: what it
    was trained on (`train.data_fingerprint`) and by which code."""
    from dermgan.runtime import write_text_atomic

    record = {"file": Path(model_file).name, "sha256": digest, "data": data, "code": code, **more}
    write_text_atomic(record_path(model_file), json.dumps(record, indent=2, default=str) + "\n")


def read_training_record(model_file: str | os.PathLike) -> dict:
    """{"data", "code", ...} of a model file, from its training record; a record that is missing, unreadable or
    belongs to another version of the file (its SHA-256 is not the one recorded for the file) says so in
    "problem" and has code None."""
    from dermgan.integrity import IntegrityError, recorded_digests

    model_file, path = Path(model_file), record_path(model_file)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return {"data": None, "code": None, "problem": f"no {path.name} (trained by an older version)"}
    except (OSError, ValueError) as error:
        return {"data": None, "code": None, "problem": f"{path.name} cannot be read ({error})"}
    try:
        current = recorded_digests(model_file)
    except IntegrityError as error:
        current, damaged = [], str(error)
    else:
        damaged = None
    if not isinstance(record, dict) or record.get("sha256") not in current:
        why = damaged or f"{path.name} describes another version of {model_file.name}"
        return {"data": None, "code": None, "problem": why}
    return {"data": record.get("data"), "code": record.get("code")}


def trained_models(run_dir: str | os.PathLike) -> dict[str, dict]:
    """What trained every model of a run directory: {"checkpoints/<...>/<file>.pt": {"code": [...], "dataset":
    ...}} for every model file there (training checkpoints last.pt excepted: generator.pt describes the same
    run), read from the training records; a model without a valid record has code None and a "problem"."""
    run_dir = Path(run_dir)
    found = {}
    for model_file in sorted((run_dir / "checkpoints").rglob("*.pt")):
        if model_file.name == "last.pt" or model_file.name.startswith("."):
            continue
        record = read_training_record(model_file)
        entry = {"code": record["code"], "dataset": (record.get("data") or {}).get("dataset")}
        if "problem" in record:
            entry["problem"] = record["problem"]
        found[model_file.relative_to(run_dir).as_posix()] = entry
    return found


# ------------------------------------------------------------------------------------------------ figures

def completed_entries(manifest: dict) -> list[dict]:
    """The notebooks a series manifest records as completed, each with the commit it ran at: those of its own
    run (at the manifest's commit) first, then those of the earlier runs it keeps."""
    own = [{**e, "git_commit": manifest.get("git_commit")} for e in manifest.get("notebooks", [])
           if e.get("status") == "ok"]
    return own + [e for e in manifest.get("earlier_runs", []) if e.get("status") == "ok"]


def notebook_commits(manifest: dict | None) -> dict[str, str | None]:
    """{notebook number: commit it last completed at} from a series manifest (None: none)."""
    commits: dict[str, str | None] = {}
    for entry in completed_entries(manifest or {}):  # its own run's entries replace earlier ones
        commits.setdefault(entry["notebook"][:2], entry.get("git_commit"))
    return commits


def read_manifest(path: str | os.PathLike | None) -> dict | None:
    """A series manifest, or None when there is none (notebooks run by hand) or it cannot be read."""
    if path is None:
        return None
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def current_manifest(default: str | os.PathLike | None = None) -> dict | None:
    """The manifest of the series this process belongs to: the one the pipeline names to its kernels, else
    `default` (e.g. papermill_runs/<run name>/manifest.json)."""
    return read_manifest(os.environ.get(MANIFEST_VARIABLE) or default)


def model_code(run_dir: str | os.PathLike, model: str) -> list[dict] | None:
    """The code record of a model of a run directory, named as a folder under checkpoints/ (its one trained
    file: 'dermgan', 'lesion_edit/<key>/masked', 'metrics_classifier') or, for sample sets without a model
    folder of that name, under samples/ (their meta.json copies the record of the model that made them)."""
    run_dir = Path(run_dir)
    records = sorted((run_dir / "checkpoints" / model).glob(f"*{RECORD_SUFFIX}"))
    if records:
        model_file = records[0].with_name(records[0].name.removesuffix(RECORD_SUFFIX) + ".pt")
        return read_training_record(model_file)["code"]
    meta = run_dir / "samples" / model / "meta.json"
    try:
        return json.loads(meta.read_text()).get("training", {}).get("code")
    except (OSError, ValueError, AttributeError):
        return None


def figure_commits(run_dir: str | os.PathLike, manifest: dict | None, notebooks=(), models=()) -> dict:
    """Every commit the numbers of a figure or table come from, for its sidecar (viz.save_figure / save_table,
    beside `git_commit`, the commit that drew it): `evaluated`, the commit each notebook whose records it shows
    last completed at (from the series manifest; None when the notebook was run outside a series), and
    `trained`, the commits that trained each model it shows (None: unrecorded)."""
    commits = notebook_commits(manifest)
    return {"evaluated": {number: commits.get(number) for number in notebooks},
            "trained": {model: commits_of(model_code(run_dir, model)) for model in models}}
