"""Run the numbered notebook series with papermill: `python -m dermgan run --profile smoke`.

Each notebook in notebooks/ is executed in order into papermill_runs/<profile>/ (papermill_runs/<profile>-<dataset>/
for a real dataset), with the common parameters (profile, run_dir, seed, device, dataset, data_root) and any
`-p name=value` overrides injected. The run stops at the first failing notebook and names it and the cell; a
manifest.json beside the executed notebooks records parameters, git commit, package versions, device and wall
time per notebook.

Typed parameters. Every line of a notebook's `parameters` cell is annotated (`steps: int | None = None`); a
`-p` string is converted to the declared type (`resume=false` -> False) or refused in one line, and the values
are dry-run through the profile (`Profile.replace`, whose sections check their ranges) before any notebook runs.
Which profile field a parameter overrides is read from the notebook's own `start(..., section={"field": name})`
call, so the check cannot drift from what the notebook does.

Series-wide settings. The fields of the profile's `data` section (image_size, n_images, ...) define the data
cache that every notebook of a run directory reads, so they cannot apply to one notebook only: `-p image_size=64`
is a setting of the whole run. The pipeline records it, with profile, dataset, data_root and seed, in the run
directory's run.json before anything runs (dermgan.runtime.claim_run_dir); notebooks that declare the
parameter receive it, and every other notebook's `runtime.start` takes it from run.json. A run directory made
with other settings is refused, naming the difference and the way out.

Checks. Everything a notebook would refuse later is checked in one pass before anything is written
(refuse_bad_request): the values above, the seed, device and kernel, the dataset (its name, data root and
record table, read without a pixel), what the notebooks need of it, their own parameters (PARAMETER_CHECKS)
and the run and output folders. RunRefused lists every problem found, one line each; a refused command writes
nothing.

Records. Executed notebooks are written to a temporary file and moved in place only when the notebook completed;
a failed or interrupted one is kept beside the good copy as NN_name.failed.ipynb / NN_name.interrupted.ipynb, and
the manifest (written atomically as each notebook starts and when the series ends) says so. The series holds
its run directory's lock (dermgan.runtime.hold_run_dir) from after its arguments are checked to its end: a
second command on the same run directory is refused, naming the first.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from dermgan.config import PROFILES, DataConfig, Profile, get_profile
from dermgan.provenance import (MANIFEST_VARIABLE, NOTEBOOK_VARIABLE, changed_training_code, commits_of,
                                completed_entries, notebook_commits, trained_models)
from dermgan.runtime import (HOME_VARIABLE, REFERENCES_VARIABLE, Heartbeat, RunDirBusy, check_run_dir,
                             claim_run_dir, code_checkout, duration, environment_report, executed_dir,
                             is_checkout, packaged_notebooks, pick_device, project_root, resolve_run_dir,
                             run_dir_lock, run_identity, run_name, write_text_atomic)

if TYPE_CHECKING:
    import pandas as pd

COMMON_PARAMETERS = ("profile", "run_dir", "seed", "device", "dataset", "data_root")
SERIES_PARAMETERS = tuple(f.name for f in dataclasses.fields(DataConfig))  # define the shared data cache
INJECTED_TAG = "injected-parameters"
KINDS = {"int": int, "float": float, "bool": bool, "str": str}
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
# The kernel's own log handler drops its two harmless lines (see dermgan.runtime.KernelNoiseFilter).
KERNEL_ARGUMENTS = ['--IPKernelApp.logging_config={"filters": {"dermgan": {"()": '
                    '"dermgan.runtime.KernelNoiseFilter"}}, "handlers": {"console": {"filters": ["dermgan"]}}}']


class PipelineError(RuntimeError):
    """A problem with the run request or a notebook that failed; the message says which and where."""


@dataclass
class NotebookFailure(PipelineError):
    notebook: str
    cell: int | None  # index among the cells of the source notebook
    error: str
    kept: Path | None = None  # the executed copy that holds the traceback

    def __str__(self) -> str:
        where = f"cell {self.cell} (counting from 0)" if self.cell is not None else "an unknown cell"
        text = f"notebook {self.notebook} failed in {where}: {self.error}"
        return text + (f"; the traceback is in {self.kept}" if self.kept else "")


class Interrupted(PipelineError):
    """Ctrl-C (SIGINT) or SIGTERM during a notebook: its partial copy is kept beside the last good one."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code  # 130 after SIGINT, 143 after SIGTERM, as a shell reports a killed process


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the series is running so that it stops the way Ctrl-C does (records written)."""


@contextlib.contextmanager
def sigterm_stops_like_ctrl_c():
    """Within: SIGTERM (a batch scheduler's stop, `kill PID`) raises Terminated instead of killing the process
    outright, which would lose the manifest entries of the notebooks already completed. Only the main thread may
    set signal handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------- discovery

def list_notebooks(notebooks_dir: Path) -> list[Path]:
    """The numbered notebooks (NN_name.ipynb) in order; failed / interrupted copies are not notebooks."""
    found = sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb") if "." not in p.stem)
    if not found:
        raise PipelineError(f"no numbered notebooks (NN_name.ipynb) in {notebooks_dir}")
    return found


def find_notebook(notebooks: list[Path], name: str) -> int:
    """Position of the notebook called `name`: '02', '02_dermgan_training', 'dermgan_training' or the file name."""
    stem = Path(name).stem
    for i, path in enumerate(notebooks):
        number, _, title = path.stem.partition("_")
        if stem in (path.stem, number, title):
            return i
    known = ", ".join(p.stem for p in notebooks)
    raise PipelineError(f"unknown notebook {name!r}; known: {known}")


def select_notebooks(notebooks: list[Path], only: str | None = None, start: str | None = None) -> list[Path]:
    if only and start:
        raise PipelineError("give either --only or --from, not both")
    if only:
        return [notebooks[find_notebook(notebooks, only)]]
    if start:
        return notebooks[find_notebook(notebooks, start):]
    return notebooks


# ---------------------------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class Parameter:
    """One line of a parameters cell: `name: kind [| None] = default`, and the profile field it overrides."""

    name: str
    kind: type
    optional: bool
    default: object
    target: tuple[str, str] | None = None  # (profile section, field) from the notebook's start() call

    @property
    def type_name(self) -> str:
        return self.kind.__name__ + (" | None" if self.optional else "")


def parse_annotation(node: ast.expr) -> tuple[type, bool] | None:
    """`int` -> (int, False); `int | None` or `None | int` -> (int, True); anything else -> None."""
    if isinstance(node, ast.Name) and node.id in KINDS:
        return KINDS[node.id], False
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        sides = [node.left, node.right]
        nones = [s for s in sides if isinstance(s, ast.Constant) and s.value is None]
        names = [s for s in sides if isinstance(s, ast.Name) and s.id in KINDS]
        if len(nones) == 1 and len(names) == 1:
            return KINDS[names[0].id], True
    return None


def read_notebook(path: Path) -> dict:
    """A notebook file as plain JSON with each cell's source joined into one string: enough to read parameters
    and compare sources without importing nbformat (whose schema validator takes seconds to import, which
    `--help` and `list` must not pay)."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PipelineError(f"{path} cannot be read as a notebook ({error})") from None
    for cell in nb.get("cells", []):
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
    return nb


def tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def parameters_cell(nb, notebook: Path):
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "parameters" in tags(cell):
            return cell
    raise PipelineError(f"{notebook.name} has no cell tagged 'parameters'")


def notebook_parameters(notebook: Path) -> dict[str, Parameter]:
    """The typed parameters a notebook declares; an unannotated or unsupported line is an error of the notebook."""
    nb = read_notebook(notebook)
    source = parameters_cell(nb, notebook)["source"]
    tree = ast.parse(source)
    targets = start_call_targets(nb)
    found = {}
    for node in tree.body:
        line = ast.get_source_segment(source, node) or ""
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None):
            raise PipelineError(f"{notebook.name}: parameters cell line {node.lineno} ({line!r}) is not a typed "
                                f"parameter; write e.g. `steps: int | None = None`")
        parsed = parse_annotation(node.annotation)
        if parsed is None:
            raise PipelineError(f"{notebook.name}: parameter {node.target.id} has the annotation "
                                f"{ast.unparse(node.annotation)!r}; use int, float, bool or str, optionally | None")
        try:
            default = ast.literal_eval(node.value)
        except ValueError:
            raise PipelineError(f"{notebook.name}: parameter {node.target.id} needs a literal default") from None
        parameter = Parameter(node.target.id, *parsed, default, targets.get(node.target.id))
        convert(parameter, default, notebook.name)  # a default of the wrong type is the notebook's error
        found[parameter.name] = parameter
    return found


def start_call_targets(nb) -> dict[str, tuple[str, str]]:
    """{parameter: (section, field)} read from `start(..., section={"field": parameter, ...})` in the notebook."""
    targets = {}
    for cell in nb["cells"]:
        if cell["cell_type"] != "code" or "parameters" in tags(cell):
            continue
        try:
            tree = ast.parse(cell["source"])
        except SyntaxError:  # IPython magics: such a cell holds no start() call of ours
            continue
        for node in ast.walk(tree):
            name = getattr(getattr(node, "func", None), "attr", None) or getattr(getattr(node, "func", None), "id", None)
            if not (isinstance(node, ast.Call) and name == "start"):
                continue
            for keyword in node.keywords:
                if isinstance(keyword.value, ast.Dict):
                    for key, value in zip(keyword.value.keys, keyword.value.values):
                        if isinstance(key, ast.Constant) and isinstance(value, ast.Name):
                            targets[value.id] = (keyword.arg, key.value)
    return targets


def declared_parameters(notebook: Path) -> set[str]:
    """Names declared in the cell tagged `parameters` (what papermill can override)."""
    return set(notebook_parameters(notebook))


def convert(parameter: Parameter, value: object, where: str = ""):
    """`value` (a `-p` string, or a Python value from the API) as the declared type, or a one-line refusal."""
    refusal = PipelineError(f"parameter {parameter.name} expects {parameter.kind.__name__}"
                            f"{' or None' if parameter.optional else ''}, got {value!r}"
                            + (f" (declared in {where})" if where else ""))
    if isinstance(value, str) and parameter.kind is not str:
        value = parse_text(value.strip(), parameter.kind)
    elif isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]  # -p 'name="x"' means the string x
    if value is None or (isinstance(value, str) and parameter.optional and value == "None"):
        if parameter.optional:
            return None
        raise refusal
    if parameter.kind is float and type(value) is int:
        value = float(value)
    if type(value) is not parameter.kind:  # bool is an int subclass: type() keeps them apart
        raise refusal
    return value


def parse_text(text: str, kind: type):
    """A `-p` string as int / float / bool; the text itself when it is none of them (refused by the caller)."""
    if text.lower() in ("none", "null"):
        return None
    if kind is bool:
        return True if text.lower() in TRUE_WORDS else False if text.lower() in FALSE_WORDS else text
    if kind is int and re.fullmatch(r"[+-]?\d+(_\d+)*", text):
        return int(text)
    if kind is float:
        try:
            number = float(text)
        except ValueError:
            return text
        return number if number == number and abs(number) != float("inf") else text
    return text


def parse_override(text: str) -> tuple[str, str]:
    """'steps=200' -> ('steps', '200'): the value stays text until it meets the type a notebook declares."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise PipelineError(f"parameter override {text!r} is not of the form name=value")
    return name.strip(), raw


def series_parameter(name: str) -> Parameter:
    """A data setting as a parameter of the whole series, of the type the DataConfig field is annotated with
    (`real_images: int | None = None` is an int, not the type of its default)."""
    field = next(f for f in dataclasses.fields(DataConfig) if f.name == name)
    annotation = parse_annotation(ast.parse(str(field.type), mode="eval").body)
    kind = annotation[0] if annotation else type(field.default)
    return Parameter(name, kind, True, None, ("data", name))


@dataclass
class Plan:
    """What each notebook receives and the data settings the whole run uses, and what is wrong with them."""

    parameters: dict[Path, dict]
    series: dict | None  # data-section values given with -p (image_size, n_images, ...); None: refused
    declared: dict[Path, dict[str, Parameter]]  # each notebook's typed parameters
    profiles: dict[Path, Profile | None]  # the profile each notebook's start() builds (None: refused)
    problems: list[str]  # one line each; the run is refused unless empty


def plan_parameters(notebooks: list[Path], profile: str, common: dict, overrides: dict) -> Plan:
    """Convert and check every override against the notebooks' declared types and the profile's ranges.

    Every problem with the request is collected in `Plan.problems` (a notebook that is itself malformed is
    raised at once: that is no request of the user's).
    """
    declared = {nb: notebook_parameters(nb) for nb in notebooks}
    for nb, params in declared.items():
        missing = [p for p in COMMON_PARAMETERS if p not in params]
        if missing:
            raise PipelineError(f"{nb.name}: parameters cell lacks the common parameters {missing}")
    problems = []
    clash = [k for k in overrides if k in COMMON_PARAMETERS]
    if clash:
        problems.append(f"set {clash} with their own options (--profile, --seed, ...), not -p")
    series = {name: attempt(problems, "", convert, series_parameter(name), value)
              for name, value in overrides.items() if name in SERIES_PARAMETERS}
    if REFUSED in series.values():
        series = None  # a value of the wrong type, refused above
    elif attempt(problems, "", get_profile(profile).replace, data=series) is REFUSED:
        problems[-1] += " (a setting of the whole run)"
        series = None  # refused once for the whole run, not again for every notebook
    for name in overrides:
        if name not in SERIES_PARAMETERS and not any(name in params for params in declared.values()):
            selected = ", ".join(nb.stem for nb in notebooks)
            problems.append(f"parameter {name!r} is not declared by any selected notebook ({selected}); "
                            f"`python -m dermgan list` shows each notebook's parameters")
    plan, profiles = {}, {}
    for nb, params in declared.items():
        values = {name: attempt(problems, "", convert, params[name], value, nb.name)
                  for name, value in overrides.items() if name in params and name not in SERIES_PARAMETERS}
        values = {name: value for name, value in values.items() if value is not REFUSED}
        values.update({name: value for name, value in (series or {}).items() if name in params})
        built = attempt(problems, f"{nb.name}: ", dry_run_profile, profile, params,
                        {**(series or {}), **values})
        profiles[nb] = None if built is REFUSED else built
        plan[nb] = {**common, **values}
    return Plan(plan, series, declared, profiles, problems)


REFUSED = object()  # what `attempt` returns for a refused value


def attempt(problems: list[str], prefix: str, action, *args, **kwargs):
    """action(*args, **kwargs), or REFUSED with its one-line reason added to `problems`."""
    try:
        return action(*args, **kwargs)
    except RunRefused as refused:
        problems.extend(prefix + problem for problem in refused.problems)
    except (PipelineError, ValueError) as error:
        problems.append(prefix + str(error))
    return REFUSED


def dry_run_profile(profile: str, params: dict[str, Parameter], values: dict) -> Profile:
    """The profile the notebook's start() will build from the values, so that a bad range fails now."""
    sections: dict[str, dict] = {}
    for name, value in values.items():
        target = params[name].target if name in params else series_parameter(name).target
        if target:
            sections.setdefault(target[0], {})[target[1]] = value
    return get_profile(profile).replace(**sections)


# ---------------------------------------------------------------------------------------------- checks

class RunRefused(PipelineError):
    """Everything wrong with a run request, found in one pass before anything is written; one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(dict.fromkeys(problems))  # in the order found, each once
        listed = "".join(f"\n  - {problem}" for problem in self.problems)
        many = f"{len(self.problems)} problems; nothing was run or written:{listed}"
        super().__init__(self.problems[0] if len(self.problems) == 1 else many)


@dataclass(frozen=True)
class Request:
    """A run as asked for on the command line, before anything is written."""

    profile: str
    seed: int
    device: str
    dataset: str
    data_root: str | None
    run_dir: Path  # absolute
    output_dir: Path
    notebooks_dir: Path
    kernel: str


@dataclass(frozen=True)
class Records:
    """The run's dataset as the checks need it, read without a pixel: class names, and per image its `label`,
    `malignant` flag and `split`."""

    name: str
    classes: tuple[str, ...]
    table: pd.DataFrame

    def train(self) -> pd.DataFrame:
        return self.table[self.table["split"] == "train"]


# Notebooks that train a classifier over the dataset's classes, which takes two of them at least: 05 (the
# domain features of every metric) and 07 (every arm). Numbered as in notebooks/.
CLASSIFIER_NOTEBOOKS = ("05", "07")


def refuse_bad_request(request: Request, notebooks: list[Path], plan: Plan) -> None:
    """Every check a notebook would otherwise make later, made now; RunRefused lists every problem found.

    Nothing is written: no run directory, no run.json, no output folder, no manifest.
    """
    problems = list(plan.problems) + setting_problems(request) + folder_problems(request)
    records = None
    if plan.series is not None and "n_images" in plan.series and request.dataset != "synthetic":
        problems.append(f"n_images sets the size of the synthetic dataset; {request.dataset} is used whole "
                        "unless capped by real_images (-p real_images=N)")
    if plan.series is not None:  # the data settings are valid: check the data and the run dir's record
        resolved = get_profile(request.profile).replace(data=plan.series)
        readable = request.dataset == "synthetic" or request.data_root is not None
        if dataset_known(request.dataset) and readable:
            records = attempt(problems, "", read_run_records, request, resolved.data)
            records = None if records is REFUSED else records
        if records is not None:
            resolved = settle_image_size(plan, resolved, request, records, problems)
            problems += data_problems(records, resolved.data, request)
        identity = run_identity(resolved, request.seed, request.dataset, request.data_root)
        attempt(problems, "", check_run_dir, request.run_dir, identity)
    for notebook in notebooks:
        if plan.profiles[notebook] is not None:
            problems += notebook_problems(notebook, plan.declared[notebook], plan.parameters[notebook],
                                          plan.profiles[notebook], records, request)
    if problems:
        raise RunRefused(problems)


def settle_image_size(plan: Plan, resolved: Profile, request: Request, records: Records,
                      problems: list[str]) -> Profile:
    """A real dataset's image size (dermgan.data.sizes): the profile's lowered to what its images hold, recorded
    in plan.series so that run.json and the manifest carry it; an explicit one larger than the images is a
    problem unless upsampling is allowed."""
    from dermgan.data.sizes import fit_image_size

    fitted = attempt(problems, "", fit_image_size, resolved, request.dataset, request.data_root,
                     "image_size" in plan.series, records.table)
    if fitted is REFUSED or fitted.data.image_size == resolved.data.image_size:
        return resolved
    plan.series = {**plan.series, "image_size": fitted.data.image_size}
    return fitted


def setting_problems(request: Request) -> list[str]:
    """The seed, the device, the kernel and the dataset's name."""
    problems = []
    if request.seed < 0:
        problems.append(f"--seed must be an integer >= 0 (numpy seeds the data splits with it), got "
                        f"{request.seed}")
    attempt(problems, "", pick_device, request.device)
    attempt(problems, "", check_kernel, request.kernel)
    if not dataset_known(request.dataset):
        from dermgan.data.sources import SOURCES

        problems.append(f"unknown dataset {request.dataset!r}; use synthetic or a real source: "
                        f"{', '.join(SOURCES)}")
    elif request.dataset != "synthetic" and request.data_root is None:
        problems.append(f"dataset {request.dataset} is read from a folder: give --data-root (the layouts are "
                        "in docs/real_datasets.md)")
    return problems


def dataset_known(name: str) -> bool:
    from dermgan.data.sources import SOURCES

    return name == "synthetic" or name in SOURCES


def folder_problems(request: Request) -> list[str]:
    """The output folder must not be the notebooks' own, and both folders must be writable."""
    problems = []
    notebooks, output = request.notebooks_dir.resolve(), request.output_dir.resolve()
    if output == notebooks or notebooks in output.parents:
        problems.append(f"--output-dir {request.output_dir} is inside the notebooks folder "
                        f"{request.notebooks_dir}: the executed copies would replace the sources; choose "
                        "another --output-dir")
    for what, folder, option in (("run dir", request.run_dir, "--run-dir"),
                                 ("output dir", request.output_dir, "--output-dir")):
        why = unwritable(folder)
        if why:
            problems.append(f"{what} {folder} cannot be written: {why}; choose another {option} or fix the "
                            f"permissions")
    return problems


def unwritable(folder: Path) -> str | None:
    """Why `folder` (or, where it does not exist yet, the folder it would be made in) cannot be written, or
    None; nothing is created to find out. A run writes into the subfolders it finds, so they count too."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    inside = [existing] + ([Path(top) / name for top, names, _ in os.walk(existing) for name in names]
                           if existing == Path(folder) else [])
    blocked = [str(path) for path in inside if not os.access(path, os.W_OK | os.X_OK)]
    if blocked:
        more = f" (and {len(blocked) - 1} more folders)" if len(blocked) > 1 else ""
        return f"{blocked[0]} is read-only{more}"
    return None


def read_run_records(request: Request, data: DataConfig) -> Records:
    """The dataset the run's notebooks will load, without rendering or decoding a pixel: the synthetic
    dataset's labels and splits, or a real dataset's record table (every problem of its folder listed, one
    line each)."""
    from dermgan.data.conditions import CONDITION_NAMES, MALIGNANT
    from dermgan.data.dataset import synthetic_labels_and_splits
    from dermgan.data.sources import SourceError, read_records
    from dermgan.data.sources.common import MAX_LISTED

    import numpy as np
    import pandas as pd

    if request.dataset == "synthetic":
        labels, splits = synthetic_labels_and_splits(data.n_images, request.seed, data.val_fraction,
                                                     data.test_fraction)
        table = pd.DataFrame({"label": labels, "malignant": np.asarray(MALIGNANT)[labels], "split": splits})
        return Records("synthetic", CONDITION_NAMES, table)
    root = Path(request.data_root).expanduser()
    if not root.is_dir():
        raise RunRefused([f"--data-root {request.data_root} is not a folder; give the folder that holds "
                          f"{request.dataset} (the layouts are in docs/real_datasets.md)"])
    try:
        table = read_records(request.dataset, root, n_images=data.real_images, val_fraction=data.val_fraction,
                             test_fraction=data.test_fraction)  # settings that cannot apply are refused here
    except SourceError as error:
        listed = [f"{request.dataset}: {source_problem(p)}" for p in error.problems[:MAX_LISTED]]
        more = len(error.problems) - MAX_LISTED
        tail = [f"{request.dataset}: ... and {more} more (dermgan.data.sources.verify lists them all)"]
        raise RunRefused(listed + (tail if more > 0 else [])) from None
    names = table.drop_duplicates("label").set_index("label")["condition"]
    classes = tuple(str(names.get(i, f"(class {i}: no images)")) for i in range(table["label"].max() + 1))
    return Records(request.dataset, classes, table)


def source_problem(problem) -> str:
    """A reader's Problem on one line: a layout drawn below its message is referred to, not repeated."""
    first = str(problem).splitlines()[0]
    return first[:-1] + " in docs/real_datasets.md" if first.endswith(":") else first


def data_problems(records: Records, data: DataConfig, request: Request) -> list[str]:
    """The synthetic dataset must have every class in every split, as its stratified split promises."""
    if records.name != "synthetic":
        return []
    missing = classes_missing_a_split(data.n_images, data, request.seed)
    if not missing:
        return []
    smallest = smallest_synthetic_size(data, request.seed)
    way_out = f"use n_images >= {smallest}" if smallest else "lower val_fraction / test_fraction"
    return [f"data.n_images = {data.n_images} is too few: the synthetic classes {', '.join(missing)} would "
            f"miss a train, val or test image; {way_out} (every class then has one in each split)"]


def classes_missing_a_split(n_images: int, data: DataConfig, seed: int) -> list[str]:
    """Synthetic classes without an image in a split that gets some (train always; val and test when their
    fraction is above 0), at n_images."""
    from dermgan.data.conditions import CONDITION_NAMES
    from dermgan.data.dataset import synthetic_labels_and_splits

    labels, splits = synthetic_labels_and_splits(n_images, seed, data.val_fraction, data.test_fraction)
    wanted = ["train"] + [s for s, f in (("val", data.val_fraction), ("test", data.test_fraction)) if f > 0]
    return [name for c, name in enumerate(CONDITION_NAMES)
            if not all(((labels == c) & (splits == split)).any() for split in wanted)]


def smallest_synthetic_size(data: DataConfig, seed: int) -> int | None:
    """The smallest n_images above data.n_images at which every synthetic class has an image in every split
    (None when there is none below 100 times it)."""
    return next((n for n in range(data.n_images + 1, 100 * data.n_images + 1000)
                 if not classes_missing_a_split(n, data, seed)), None)


def notebook_problems(notebook: Path, params: dict[str, Parameter], values: dict, profile: Profile,
                      records: Records | None, request: Request) -> list[str]:
    """What one notebook would refuse later: a training batch larger than the training split, a classifier
    over fewer than two classes, and its own parameters (PARAMETER_CHECKS)."""
    problems = []
    if records is not None:
        train = records.train()
        for section in trained_sections(params, profile):
            batch = getattr(profile, section).batch_size
            if len(train) < batch:
                problems.append(f"{notebook.name}: the {records.name} training split has {len(train)} "
                                f"images, fewer than one batch of {section}.batch_size = {batch}; use a "
                                "smaller batch_size or more images")
        if notebook.name[:2] in CLASSIFIER_NOTEBOOKS and train["label"].nunique() < 2:
            problems.append(f"{notebook.name}: trains a classifier over the classes, but the {records.name} "
                            f"training split has {train['label'].nunique()} class(es); it needs 2 at least")
    for name, check in PARAMETER_CHECKS.items():
        if name in params:
            value = values.get(name, params[name].default)
            attempt(problems, f"{notebook.name}: ", check, value, profile, records, request)
    return problems


def trained_sections(params: dict[str, Parameter], profile: Profile) -> list[str]:
    """The profile sections the notebook overrides that are training recipes (steps and a batch size)."""
    sections = {p.target[0] for p in params.values() if p.target}
    fields = {s: {f.name for f in dataclasses.fields(getattr(profile, s))} for s in sections}
    return sorted(s for s in sections if {"steps", "batch_size"} <= fields[s])


def check_rare_classes(value: str | None, profile: Profile, records: Records | None, *context) -> None:
    """07 tops up the classes named, or the rare malignant ones by its rule: either must exist in the data."""
    from dermgan.augmentation_experiment import rare_classes_of

    if records is not None:
        rare_classes_of(records.name, records.classes, records.train(), value.split(",") if value else None)


def check_model(value: str, profile: Profile, *context) -> None:
    from dermgan.models.dermgan import variants

    known = [*variants(profile.dermgan, ablation=True), *profile.compare.model_names]
    if re.sub(r"-(full-)?s\d+$", "", value) not in known:
        raise ValueError(f"model {value!r} is not one 02 trains; use one of {', '.join(known)}, or a seed run "
                         "<model>-s<seed> / <model>-full-s<seed>")


def check_weights(value: str | None, profile: Profile, records, request: Request) -> None:
    path = Path(value).expanduser() if value else None
    root = project_root()  # the notebooks' working directory
    if path is not None and not (path if path.is_absolute() else root / path).is_file():
        raise ValueError(f"weights {value!r}: no such file (a relative path is taken from {root})")


def check_responses(value: str | None, profile: Profile, records, request: Request) -> None:
    from dermgan.turing import response_files

    if value is not None:
        response_files(value, root=project_root())


# Checks of notebook parameters that no profile section range covers, by parameter name (whichever notebook
# declares it); each raises ValueError with its one-line reason.
PARAMETER_CHECKS = {"rare_classes": check_rare_classes, "model": check_model, "weights": check_weights,
                    "responses": check_responses}


# ---------------------------------------------------------------------------------------------- execution

def execute(notebook: Path, output: Path, parameters: dict, kernel: str, cwd: Path,
            watch: CellWatch | None = None) -> None:
    """Execute one notebook with papermill into a temporary file, moved to `output` only when it completed.

    A failing cell becomes a NotebookFailure naming it, with the partial copy kept as NN_name.failed.ipynb;
    Ctrl-C keeps it as NN_name.interrupted.ipynb. The last good `output` is never replaced by half a run.
    `watch` learns which cell runs (for the heartbeat line). The copy keeps the source's kernelspec (the
    project kernel), whichever kernel ran it.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    # In a hidden folder beside the output (same file system, so os.replace is atomic) where `*.ipynb` globs
    # of the output folder cannot mistake it for an executed notebook.
    temp = output.parent / f".partial-{os.getpid()}" / output.name
    temp.parent.mkdir(exist_ok=True)
    try:
        with quiet_unknown_parameter_warning():
            papermill.execute_notebook(str(notebook), str(temp), parameters=parameters, kernel_name=kernel,
                                       cwd=str(cwd), progress_bar=False, log_output=False,
                                       extra_arguments=KERNEL_ARGUMENTS, engine_name=watched_engine(),
                                       watch=watch)
    except PapermillExecutionError as error:
        if error.ename == "KeyboardInterrupt":  # the kernel got the terminal's Ctrl-C too
            raise interrupted(temp, output, notebook) from None
        kept = keep_aside(temp, output, "failed")
        cell = failed_cell_index(kept) if kept else None
        raise NotebookFailure(notebook.name, cell, one_line(error.ename, error.evalue), kept) from None
    except KeyboardInterrupt as stop:
        raise interrupted(temp, output, notebook, stop) from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    finally:
        remove_if_empty(temp.parent)
    os.replace(temp, output)
    remove_if_empty(temp.parent)


class CellWatch:
    """Which code cell of a notebook papermill is executing, and since when the notebook runs: the heartbeat
    line a long silence gets on the command line."""

    def __init__(self, notebook: Path):
        self.total = len(code_sources(read_notebook(notebook)))
        self.cell = 0
        self.began = time.monotonic()

    def started(self, cell) -> None:
        if cell.get("cell_type") == "code" and INJECTED_TAG not in tags(cell):
            self.cell += 1

    def describe(self) -> str:
        where = f"code cell {self.cell} of {self.total}" if self.cell else "starting its kernel"
        return f"    still running: {where}, {duration(time.monotonic() - self.began)} so far"


ENGINE = "dermgan-watched"


def watched_engine() -> str:
    """papermill's nbclient engine, telling a CellWatch (engine argument `watch`) as each cell starts;
    registered under ENGINE (again on every call: registering is idempotent)."""
    from papermill.engines import NBClientEngine, papermill_engines

    class WatchedEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, watch: CellWatch | None = None, **kwargs):
            if watch is not None:
                report = nb_man.cell_start

                def cell_start(cell, cell_index=None, **more):
                    watch.started(cell)
                    return report(cell, cell_index, **more)

                nb_man.cell_start = cell_start
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(ENGINE, WatchedEngine)
    return ENGINE


class UnknownParameterFilter(logging.Filter):
    """papermill's parser cannot read `x: int | None = ...` and calls such parameters unknown; ours checked them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passed unknown parameter")


@contextlib.contextmanager
def quiet_unknown_parameter_warning():
    papermill_log, quiet = logging.getLogger("papermill"), UnknownParameterFilter()
    papermill_log.addFilter(quiet)
    try:
        yield
    finally:
        papermill_log.removeFilter(quiet)


def keep_aside(temp: Path, output: Path, label: str) -> Path | None:
    """Move a partial copy to NN_name.<label>.ipynb beside the good one; None when there was none."""
    if not temp.exists():
        return None
    target = output.with_name(f"{output.stem}.{label}.ipynb")
    import nbformat

    try:  # the copy itself says it is not a complete run (papermill's metadata cannot know)
        nb = nbformat.read(temp, as_version=4)
        nb.metadata["dermgan"] = {"status": label}
        nbformat.write(nb, temp)
    except Exception:  # noqa: BLE001 - a copy cut off mid-write is still kept, under its telling name
        pass
    os.replace(temp, target)
    return target


def interrupted(temp: Path, output: Path, notebook: Path, stop: BaseException | None = None) -> Interrupted:
    kept = keep_aside(temp, output, "interrupted")
    good = f"{output.name} (the last complete run) is unchanged" if output.exists() else f"no {output.name} yet"
    partial = f"the partial copy is {kept}" if kept else "no partial copy was written"
    how = "stopped by SIGTERM" if isinstance(stop, Terminated) else "interrupted"
    return Interrupted(f"{how} during {notebook.name}; {partial}; {good}",
                       exit_code=143 if isinstance(stop, Terminated) else 130)


def remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (the copy is still there) or already gone
        pass


def remove_orphans(output_dir: Path, log=print) -> None:
    """Partial copies left by a run that was killed (its process is gone) are removed."""
    for folder in output_dir.glob(".partial-*"):
        pid = folder.name.rpartition("-")[2]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            log(f"note: removed {folder.name}/, left by a killed run")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def gist(text: str) -> str:
    """A message as one line: a multi-line one (e.g. torch's state_dict size mismatches) is cut to its gist."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    head = lines[0] + (" " + lines[1] if lines[0].endswith(":") else "")
    rest = len(lines) - (2 if lines[0].endswith(":") else 1)
    return head + (f" (+{rest} more lines)" if rest > 0 else "")


def one_line(ename: str, evalue: str) -> str:
    return f"{ename}: {gist(evalue)}" if gist(evalue) else ename


def failed_cell_index(executed: Path) -> int | None:
    """Index, in the SOURCE notebook, of the first cell whose outputs hold an error in the executed copy.

    Cells papermill added (injected parameters, error banners) are not counted, so the number is the one a
    reader sees when opening notebooks/<name>.ipynb.
    """
    if not executed.exists():
        return None
    nb = read_notebook(executed)
    added = {INJECTED_TAG, "papermill-error-cell-tag"}
    source_cells = [c for c in nb["cells"] if not added & set(tags(c))]
    for i, cell in enumerate(source_cells):
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            return i
    return None


def check_kernel(kernel: str) -> None:
    """An unknown Jupyter kernel is refused before anything runs."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(kernel)
    except NoSuchKernel:
        raise PipelineError(f"no Jupyter kernel named {kernel!r}; pass --kernel python3, or register one "
                            f"(make setup registers 'dermgan')") from None


HEARTBEAT_S = 30.0  # a notebook silent this long gets a heartbeat line, and again every 2 x as long


def run_series(profile: str, notebooks_dir: Path, output_dir: Path, run_dir: str, seed: int = 0,
               device: str = "auto", dataset: str = "synthetic", data_root: str | None = None,
               overrides: dict | None = None, only: str | None = None, start: str | None = None,
               kernel: str = "python3", log=print, references: bool = False,
               heartbeat_s: float = HEARTBEAT_S) -> dict:
    """Execute the selected notebooks in order; return the manifest (also written to output_dir).

    The kernels inherit the run's root ($DERMGAN_HOME = project_root() of this command), so every relative
    path of the run lands under it, whichever folder the notebooks come from; `references` tells them this
    run refreshes the committed references (notebook 09 then publishes to figures/).
    """
    get_profile(profile)  # an unknown profile fails before anything runs
    notebooks = select_notebooks(list_notebooks(notebooks_dir), only, start)
    common = dict(profile=profile, run_dir=run_dir, seed=seed, device=device, dataset=dataset,
                  data_root=data_root)
    plan = plan_parameters(notebooks, profile, common, overrides or {})
    root = project_root()
    folder = resolve_run_dir(run_dir, create=False)
    refuse_bad_request(Request(profile, seed, device, dataset, data_root, folder, Path(output_dir),
                               Path(notebooks_dir), kernel), notebooks, plan)
    # Checked: from here on the run writes.
    resolved = get_profile(profile).replace(data=plan.series)
    folder = resolve_run_dir(run_dir)
    with run_dir_lock(folder), kernel_environment(root, references):  # the kernels work under this lock
        claim_run_dir(folder, run_identity(resolved, seed, dataset, data_root))
        output_dir.mkdir(parents=True, exist_ok=True)
        remove_orphans(output_dir, log)
        earlier = earlier_entries(output_dir / "manifest.json", profile, log)
        clock = Estimate.of(earlier, reference_wall_times(code_checkout() or root, profile))
        manifest = new_manifest(profile, common, overrides or {}, plan.series, device, output_dir,
                                notebooks_dir)
        manifest["references"] = references
        with sigterm_stops_like_ctrl_c():
            record_series(notebooks, plan, manifest, earlier, clock, output_dir, kernel, root, folder,
                          log, heartbeat_s)
    return manifest


@contextlib.contextmanager
def kernel_environment(root: Path, references: bool):
    """Within: what the kernels of a series inherit. DERMGAN_BATCH=1 (no progress bars in executed notebooks),
    the run's root as $DERMGAN_HOME, and DERMGAN_REFERENCES=1 only when refreshing the committed references.
    The previous values come back afterwards."""
    values = {"DERMGAN_BATCH": "1", HOME_VARIABLE: str(root),
              REFERENCES_VARIABLE: "1" if references else None}
    previous = {name: os.environ.get(name) for name in values}

    def apply(settings):
        for name, value in settings.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    apply(values)
    try:
        yield
    finally:
        apply(previous)


def record_series(notebooks, plan, manifest, earlier, clock, output_dir, kernel, root, run_dir, log,
                  heartbeat_s: float = HEARTBEAT_S) -> None:
    """Execute the notebooks one by one, recording each in the manifest; the manifest is written as each
    notebook starts (a SIGKILL leaves it "running", which the next run marks "interrupted") and however the
    series ends (completed, a failure, Ctrl-C, SIGTERM or any other error: no entry stays "running"). After
    each notebook that completes, `models` records what trained every model of the run directory
    (dermgan.provenance.trained_models), so the committed manifest can be checked without runs/.

    A notebook silent for heartbeat_s gets a line (cell, elapsed time), and another every 2 x heartbeat_s."""
    try:
        for position, notebook in enumerate(notebooks, 1):
            log(f"[{position}/{len(notebooks)}] {notebook.name} ...", end=" ", flush=True)
            began = time.perf_counter()
            entry = {"notebook": notebook.name, "parameters": plan.parameters[notebook], "status": "running"}
            manifest["notebooks"].append(entry)
            write_manifest(manifest, earlier, output_dir)
            watch = CellWatch(notebook)
            beat = Heartbeat(watch.describe, every=2 * heartbeat_s, first=heartbeat_s,
                             write=lambda line: log(("" if beat.beats else "\n") + line, flush=True))

            def outcome(text: str) -> None:  # on the notebook's line, or under its heartbeat lines
                log(f"    {notebook.name} {text}" if beat.beats else text)

            try:
                with beat, notebook_environment(notebook, output_dir / "manifest.json"):
                    execute(notebook, output_dir / notebook.name, plan.parameters[notebook], kernel, root,
                            watch)
            except NotebookFailure as failure:
                entry.update(status="failed", cell=failure.cell, error=failure.error,
                             kept=failure.kept.name if failure.kept else None)
                outcome("FAILED")
                raise
            except Interrupted as interruption:
                entry.update(status="interrupted", error=str(interruption))
                outcome("INTERRUPTED")
                raise
            finally:
                entry["wall_s"] = round(time.perf_counter() - began, 1)
            entry["status"] = "ok"
            clock.done[notebook.name] = entry["wall_s"]
            manifest["models"] = trained_models(run_dir)
            outcome(f"ok ({entry['wall_s']:.0f} s{clock.remaining(notebooks[position:])})")
    except BaseException as error:  # anything else (a dead kernel, a full disk, a signal between notebooks)
        for entry in manifest["notebooks"]:
            if entry["status"] == "running":
                stopped = isinstance(error, KeyboardInterrupt)
                entry.update(status="interrupted" if stopped else "failed",
                             error=one_line(type(error).__name__, str(error)))
        raise
    finally:
        manifest["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_manifest(manifest, earlier, output_dir)


@contextlib.contextmanager
def notebook_environment(notebook: Path, manifest: Path):
    """Name, to the kernel papermill starts (it inherits the environment), the notebook it runs and the manifest
    of its series: models it trains record the notebook as their code path, and 09 reads the commits the other
    notebooks ran at (dermgan.provenance)."""
    names = {NOTEBOOK_VARIABLE: notebook.stem, MANIFEST_VARIABLE: str(manifest.resolve())}
    previous = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def write_manifest(manifest: dict, earlier: list[dict], output_dir: Path) -> None:
    """Write manifest.json (atomically) with its totals and the earlier entries it keeps."""
    manifest["total_wall_s"] = round(sum(e.get("wall_s", 0) for e in manifest["notebooks"]), 1)
    ran = {e["notebook"] for e in manifest["notebooks"] if e["status"] == "ok"}
    # A partial run (--only / --from, or one that stopped) keeps the record of the good executed
    # notebooks it did not replace.
    manifest["earlier_runs"] = [e for e in earlier if e["notebook"] not in ran and e.get("status") == "ok"
                                and (output_dir / e["notebook"]).exists()]
    write_text_atomic(output_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")


def reference_wall_times(root: Path, profile: str) -> dict[str, float]:
    """Wall time per notebook of the committed reference run of this profile (papermill_runs/<profile>, synthetic
    data): the remaining-time estimate of a first run, before this output folder has a manifest of its own."""
    try:
        manifest = json.loads((root / "papermill_runs" / profile / "manifest.json").read_text())
        entries = manifest["notebooks"] + manifest.get("earlier_runs", [])
        return {e["notebook"]: float(e["wall_s"]) for e in entries if e.get("status") == "ok"}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


@dataclass
class Estimate:
    """The time a series has left: the recorded wall time of each notebook left (the previous run in this
    output folder, else the profile's reference run), scaled by this run's pace so far (its measured times
    over the recorded times of the notebooks it has completed): a loaded machine is slower than the
    reference."""

    recorded: dict[str, float]
    source: str
    done: dict[str, float] = dataclasses.field(default_factory=dict)  # measured in this run

    @classmethod
    def of(cls, earlier: list[dict], reference: dict[str, float]) -> "Estimate":
        previous = {e["notebook"]: e["wall_s"] for e in reversed(earlier) if e.get("status") == "ok"}
        source = "the previous run's times" if previous else "the reference run's times"
        return cls({**reference, **previous}, source)

    def pace(self) -> float:
        """Measured over recorded time of the notebooks done that have a record (1 before there is one)."""
        timed = [name for name in self.done if self.recorded.get(name, 0) > 0]
        recorded = sum(self.recorded[name] for name in timed)
        return sum(self.done[name] for name in timed) / recorded if recorded else 1.0

    def remaining(self, notebooks: list[Path]) -> str:
        """'; about 6 min left (an estimate: ...)' when every notebook left has a recorded time, else ''."""
        if not notebooks or any(nb.name not in self.recorded for nb in notebooks):
            return ""
        pace = self.pace()
        seconds = pace * sum(self.recorded[nb.name] for nb in notebooks)
        left = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
        return f"; about {left} left (an estimate: {self.source} x {pace:.2g}, this run's pace so far)"


def earlier_entries(path: Path, profile: str, log=print) -> list[dict]:
    """Notebook entries of an existing manifest of the same profile, each with its run's commit and start.

    A manifest that cannot be parsed is not taken for an empty history: it is kept aside as
    manifest.corrupt-<time>.json and the run says so.
    """
    if not path.exists():
        return []
    try:
        previous = json.loads(path.read_text())
        problem = manifest_shape_problem(previous)
        if problem:
            raise ValueError(problem)
    except ValueError as error:
        aside = path.with_name(f"manifest.corrupt-{datetime.now():%Y%m%d-%H%M%S}.json")
        os.replace(path, aside)
        log(f"note: {path} could not be read ({error}); kept as {aside.name}, a new manifest starts here")
        return []
    if mark_dead_runs_interrupted(previous):
        write_text_atomic(path, json.dumps(previous, indent=2) + "\n")
        log(f"note: {path} had notebooks left 'running' by process {previous.get('pid')}, which has ended "
            "(killed); marked 'interrupted'")
    if previous.get("profile") != profile:
        return []
    current = [{**e, "git_commit": previous.get("git_commit"), "started": previous.get("started")}
               for e in previous.get("notebooks", [])]
    return current + previous.get("earlier_runs", [])


def manifest_shape_problem(manifest) -> str | None:
    """What makes parsed JSON not a manifest this module wrote (None when it is one)."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    for key in ("notebooks", "earlier_runs"):
        entries = manifest.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("notebook"), str)
                                                   and isinstance(e.get("status"), str) for e in entries):
            return f"'{key}' is not a list of entries with a notebook name and a status"
    return None


def mark_dead_runs_interrupted(manifest: dict) -> bool:
    """Mark the entries a killed run left "running" as "interrupted"; returns whether there were any. The run
    directory's lock is held here, so no live series of it writes this manifest; the recorded pid says whether
    its writer is gone."""
    pid = manifest.get("pid")
    if isinstance(pid, int) and pid != os.getpid() and process_alive(pid):
        return False
    stale = [e for e in manifest.get("notebooks", []) if e["status"] == "running"]
    for entry in stale:
        entry.update(status="interrupted", error="the series was killed while this notebook ran")
    return bool(stale)


def reported_run_problems(manifest: dict, notebooks: list[str] | None = None) -> list[str]:
    """Why an executed series may not be reported as one reproducible run, one line each (empty when it may):
    its good notebooks must come from one commit, a clean one, and, when `notebooks` is given, be all of them."""
    entries = completed_entries(manifest)
    by_commit: dict[str, list[str]] = {}
    for e in entries:
        by_commit.setdefault(str(e.get("git_commit")), []).append(e["notebook"][:2])
    problems = []
    if len(by_commit) > 1:
        problems.append("spans commits: " + "; ".join(f"{c[:7]}{'+dirty' if c.endswith('+dirty') else ''}: "
                                                     f"{' '.join(sorted(nbs))}" for c, nbs in sorted(by_commit.items())))
    problems += [f"notebooks at a commit with uncommitted changes: {' '.join(sorted(nbs))}"
                 for c, nbs in by_commit.items() if c.endswith("+dirty") or c == "None"]
    if notebooks is not None:
        missing = sorted(set(notebooks) - {e["notebook"] for e in entries})
        if missing:
            problems.append("not executed: " + ", ".join(missing))
    return problems


def training_code_problems(manifest: dict, root: Path) -> list[str]:
    """Models of a series whose weights may not come from the code the series reports, one line each: a model
    whose training is not recorded (an older version), trained at uncommitted code, or trained at a commit whose
    training code (TRAINING_CODE_PATHS) differs from the commit the series' notebooks ran at. Uses only the
    manifest's `models` and git's history, so a clean clone without runs/ can check it."""
    models = manifest.get("models")
    if models is None:
        return ["records no training commits of its models (made by an older version); re-run the series"]
    ran_at = sorted({c for c in notebook_commits(manifest).values() if c and not c.endswith("+dirty")})
    problems = []
    for model, entry in sorted(models.items()):
        if not entry.get("code"):
            why = entry.get("problem", "no code record")
            problems.append(f"{model}: its training is not recorded ({why}); retrain it")
            continue
        for commit in commits_of(entry["code"]):
            if commit is None:
                problems.append(f"{model}: part of its training is not recorded (resumed from an older "
                                "version, or outside a git checkout); retrain it")
            elif commit.endswith("+dirty"):
                problems.append(f"{model}: trained at {commit[:7]}+dirty (uncommitted code); retrain it at a "
                                "clean commit")
            else:
                for target in ran_at:
                    changed = changed_training_code(commit, target, root)
                    if changed:
                        files = ", ".join(changed[:3]) + (" ..." if len(changed) > 3 else "")
                        problems.append(f"{model}: trained at {commit[:7]}, but the training code differs at "
                                        f"{target[:7]} ({files}); retrain it")
    return problems


def stale_notebook_problems(series_dir: Path, notebooks_dir: Path) -> list[str]:
    """Executed notebooks of a series whose code cells differ from their source's (the injected-parameters cell
    aside), or that have no source any more, one line each."""
    problems = []
    for executed in list_notebooks(series_dir):
        source = notebooks_dir / executed.name
        if not source.is_file():
            problems.append(f"{executed.name}: no source notebook {source.name} in {notebooks_dir.name}/")
            continue
        problems += stale_reasons(source, executed)
    return problems


def series_problems(series_dir: Path, notebooks_dir: Path, root: Path, complete: bool = False) -> list[str]:
    """Everything that keeps an executed series (papermill_runs/<name>/) from being reported: what
    `reported_run_problems` finds in its manifest (with `complete`, every source notebook must have run), stale
    notebooks (`stale_notebook_problems`) and models trained by other code (`training_code_problems`)."""
    manifest = json.loads((series_dir / "manifest.json").read_text())
    sources = [p.name for p in list_notebooks(notebooks_dir)] if complete else None
    return (reported_run_problems(manifest, sources) + stale_notebook_problems(series_dir, notebooks_dir)
            + training_code_problems(manifest, root))


def new_manifest(profile, common, overrides, series, device, output_dir, notebooks_dir) -> dict:
    report = environment_report(device)
    return {
        "profile": profile,
        "profile_config": get_profile(profile).replace(data=series).as_dict(),
        "parameters": common,
        "overrides": overrides,
        "git_commit": report["git_commit"],
        "packages": report["packages"],
        "python": report["python"],
        "device": report["device"],
        "torch_threads": report["torch_threads"],
        "notebooks_dir": str(notebooks_dir),
        "output_dir": str(output_dir),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pid": os.getpid(),  # a later run tells a killed series' "running" entries by it
        "notebooks": [],
    }


# ---------------------------------------------------------------------------------------------- checks

def code_sources(nb) -> list[str]:
    """Sources of the code cells, without papermill's injected-parameters cell."""
    return [c["source"] for c in nb["cells"] if c["cell_type"] == "code" and INJECTED_TAG not in tags(c)]


def stale_reasons(source: Path, executed: Path) -> list[str]:
    """Why `executed` no longer matches `source` (empty when it is up to date)."""
    if not executed.exists():
        return [f"{executed} does not exist; run the series for this profile"]
    src = code_sources(read_notebook(source))
    done = code_sources(read_notebook(executed))
    if len(src) != len(done):
        return [f"{executed.name}: {len(done)} code cells, but {source.name} has {len(src)}"]
    return [f"{executed.name}: code cell {i} differs from the source" for i, (a, b) in enumerate(zip(src, done))
            if a != b]


def cells_with_outputs(notebook: Path) -> list[int]:
    """Indices of code cells that carry outputs or execution counts (sources are committed clean)."""
    nb = read_notebook(notebook)
    return [i for i, c in enumerate(nb["cells"])
            if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)]


# ---------------------------------------------------------------------------------------------- command line

RUN_EXAMPLES = """examples:
  python -m dermgan run --profile smoke                  the whole series, a few minutes on a CPU
  python -m dermgan run --profile cpu --only 02          one notebook (number, name or title)
  python -m dermgan run --profile cpu --from 05          from one notebook on
  python -m dermgan run -p steps=3000 -p resume=false    typed overrides (see `python -m dermgan list`)
  python -m dermgan run -p image_size=128                a data setting applies to the whole run
  python -m dermgan run --dataset ham10000 --data-root /data/HAM10000
  python -m dermgan run --profile smoke --references     (maintainers) refresh the committed references

Each notebook's parameters and their types: `python -m dermgan list`. Values are converted to the declared
type (bool: true/false, yes/no, on/off, 1/0; None for an optional one) and checked against the profile's
ranges before anything runs. Artefacts go to runs/<profile> (runs/<profile>-<dataset> for real data), the
executed notebooks to runs/<same name>/executed, all of it under the project root (the checkout, else
$DERMGAN_HOME, else the working directory), where git ignores it. Only --references writes the committed
references: papermill_runs/<same name> and, from notebook 09, figures/<profile>.
"""

SYNTHESIZE_EXAMPLES = """examples:
  python -m dermgan synthesize runs/cpu/checkpoints/dermgan my_data --n 50
  python -m dermgan synthesize runs/cpu/checkpoints/dermgan my_data --conditions melanoma,eczema \\
      --fitzpatrick 5,6
  python -m dermgan synthesize runs/cpu/checkpoints/lapgan-melanoma melanomas --n 500
  python -m dermgan run --dataset folder --data-root my_data     the result reads back as a dataset

A map-conditioned model (DermGAN, pix2pix, ...) draws new maps from the training data of its run directory
(the lesion of a training image of each condition, re-toned to each Fitzpatrick type); an unconditional model
(DCGAN, LAPGAN, DDGAN, Furger's) makes --n images of the one class it learnt. One image in Python:
  from dermgan.synthesis import one_image
  image, mask = one_image("runs/cpu/checkpoints/dermgan", "melanoma", size=0.08, x=0.4, y=0.6, skin=5)
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; every option's help ends with its default (unless it says it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        default = {True: "on", False: "off"}.get(action.default, "%(default)s") \
            if isinstance(action.default, bool) else "%(default)s"
        return f"{text} (default: {default})"


class Parser(argparse.ArgumentParser):
    """An epilog may be a function, called only when the help is shown: the train command's list of models
    comes from code that imports torch, which `--help` must not wait for."""

    def format_help(self) -> str:
        if callable(self.epilog):
            self.epilog = self.epilog()
        return super().format_help()


def train_epilog() -> str:
    from dermgan.models.dermgan import variants

    names = ", ".join(variants(get_profile("cpu").dermgan, ablation=True))
    return (f"profiles: {', '.join(PROFILES)}\nmodels: {names}\n\n"
            "Resume rule: when <run-dir>/checkpoints/<model>/last.pt exists, training continues from it "
            "(a checkpoint made with other settings is refused); --fresh starts again from step 0.\n"
            "example: torchrun --nproc_per_node 4 -m dermgan train --profile paper --model dermgan")


def add_data_options(command: argparse.ArgumentParser, seed_help: str) -> None:
    """The options `run` and `train` share: seed, device, dataset, data root, run directory."""
    command.add_argument("--seed", type=int, default=0, help=seed_help)
    command.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then the CPU), cpu, cuda, "
                                                          "cuda:N or mps")
    command.add_argument("--dataset", default="synthetic",
                         help="synthetic, or a real source such as ham10000 or folder "
                              "(docs/real_datasets.md)")
    command.add_argument("--data-root", default=None,
                         help="the folder holding a real dataset (default: none; real datasets need it)")
    command.add_argument("--run-dir", default=None,
                         help="artefacts folder (default: runs/<profile>[-<dataset>] under the project root)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m dermgan", formatter_class=HelpFormatter,
        description="dermgan: GAN synthesis of clinical skin images, run as a numbered notebook series.",
        epilog="`python -m dermgan COMMAND --help` describes each command. Everything a command writes goes "
               "under the project root: the checkout, else $DERMGAN_HOME, else the working directory.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    debug = argparse.ArgumentParser(add_help=False)  # --debug after the command too
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show full tracebacks instead of one-line errors (default: off)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str, epilog=None):
        return commands.add_parser(name, help=help, description=description, epilog=epilog, parents=[debug],
                                   formatter_class=HelpFormatter)

    run = command("run", "execute the notebook series with papermill (into runs/<profile>/)",
                  "Execute the numbered notebooks in order with papermill; stop at the first failure.",
                  RUN_EXAMPLES)
    run.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILES)}")
    run.add_argument("--only", help="run just this notebook, e.g. 02 or 02_dermgan_training (default: all)")
    run.add_argument("--from", dest="start", help="run from this notebook on (default: the first)")
    run.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                     help="override a notebook parameter; repeatable; `list` shows names and types (default: "
                          "none)")
    add_data_options(run, "seed of the data splits, initial weights and every random draw")
    run.add_argument("--output-dir", default=None, help="executed notebooks and manifest.json (default: "
                                                        "runs/<profile>[-<dataset>]/executed; with "
                                                        "--references papermill_runs/<profile>[-<dataset>])")
    run.add_argument("--notebooks-dir", default=str(packaged_notebooks()),
                     help="the notebooks to run (default: the ones that come with this code, %(default)s)")
    run.add_argument("--kernel", default="python3",
                     help="Jupyter kernel that executes them (default: python3, i.e. this interpreter; the "
                          "kernel the notebooks declare, 'Python (dermgan)', is the one JupyterLab opens)")
    run.add_argument("--references", action="store_true",
                     help="maintainers: refresh the references committed in the checkout (papermill_runs/"
                          "<profile>[-<dataset>], and figures/<profile> from 09) (default: off)")
    run.add_argument("--dry-run", action="store_true",
                     help="run the profile's dry run instead: paper-dry, the paper profile's sizes with every "
                          "count cut to a handful, into runs/paper-dry[-<dataset>] (default: off)")
    listing = command("list", "list the notebooks and their typed parameters, or with --profile their time "
                              "and memory", "Each notebook and the parameters `run -p NAME=VALUE` can set, with "
                      "types; with --profile, each notebook's expected time and peak memory on this device, from "
                      "measured costs (dermgan.estimate).")
    listing.add_argument("--profile", default=None, help="estimate this profile's series (default: none, list "
                                                         "the parameters)")
    listing.add_argument("--dataset", default="synthetic", help="with --profile: the data it would run on")
    listing.add_argument("--data-root", default=None, help="with --profile: the real dataset's folder")
    listing.add_argument("--device", default="auto", help="with --profile: the device to price (default: the "
                                                          "one here)")
    train = command("train", "train one DermGAN variant without a notebook (works under torchrun)",
                    "Train one DermGAN variant as notebook 02 does, on one device or under torchrun (DDP).",
                    train_epilog)
    train.add_argument("--profile", default="cpu", choices=list(PROFILES),
                       help="the profile's sizes and steps")
    train.add_argument("--model", default="dermgan", help="a variant name (listed below)")
    train.add_argument("--steps", type=int, default=None, help="training steps (default: the profile's)")
    train.add_argument("--batch-size", type=int, default=None, help="global batch (default: the profile's)")
    add_data_options(train, "seed of the data splits, initial weights and every random draw")
    train.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint instead of resuming")
    synthesize = command("synthesize", "write a labelled dataset made by a trained generator",
                         "Write images, lesion masks, semantic maps and labels.csv (readable by --dataset "
                         "folder) made by a trained generator, with provenance.json.", SYNTHESIZE_EXAMPLES)
    synthesize.add_argument("checkpoint", help="checkpoint folder of a trained generator, e.g. "
                                               "runs/cpu/checkpoints/dermgan")
    synthesize.add_argument("output", help="a new or empty folder for the dataset")
    synthesize.add_argument("--n", type=int, default=10, help="images per condition x Fitzpatrick type (an "
                                                               "unconditional model: images in all)")
    synthesize.add_argument("--conditions", default=None,
                            help="comma-separated class names (default: every class the generator knows)")
    synthesize.add_argument("--fitzpatrick", default="all",
                            help="'all' (every type in the training data), 'none' (skin as drawn from "
                                 "training images) or types such as 1,3,6")
    synthesize.add_argument("--seed", type=int, default=0, help="the same seed gives the same files")
    synthesize.add_argument("--batch-size", type=int, default=64, help="images generated at once")
    synthesize.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then the CPU), cpu, cuda")
    synthesize.add_argument("--run-dir", default=None,
                            help="the run directory it was trained in (default: two folders above the "
                                 "checkpoint folder, runs/<name>/checkpoints/<model>)")
    synthesize.add_argument("--overwrite", action="store_true",
                            help="replace a dataset synthesize wrote before in OUTPUT")
    return parser


def train_command(args) -> int:
    """Train like notebook 02 does; under `torchrun --nproc_per_node N` every rank runs this, DDP does the rest."""
    from dermgan.data import load_for_run
    from dermgan.models.dermgan import train_variant, variants
    from dermgan.runtime import start

    known = variants(get_profile(args.profile).dermgan, ablation=True)
    if args.model not in known:  # before the dataset is built
        raise PipelineError(f"unknown model {args.model!r}; choose one of: {', '.join(known)}")
    ctx = start(args.profile, args.run_dir, args.seed, args.device, args.dataset, args.data_root,
                dermgan={"steps": args.steps, "batch_size": args.batch_size})
    train_data = load_for_run(ctx).split("train")
    _, result = train_variant(args.model, ctx, train_data, resume=not args.fresh)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{args.model}: step {result.step} ({result.steps_this_run} this run, "
              f"{result.seconds_per_step:.3f} s/step) -> {result.checkpoint}")
    return 0


def list_command(args) -> int:
    if args.profile is not None:
        from dermgan.estimate import estimate_command

        return estimate_command(args.profile, args.dataset, args.data_root, args.device, packaged_notebooks())
    for nb in list_notebooks(packaged_notebooks()):
        params = notebook_parameters(nb)
        own = [f"{p.name}: {p.type_name}" for p in params.values() if p.name not in COMMON_PARAMETERS]
        print(f"{nb.stem}\n    {', '.join(own) if own else '(only the common parameters)'}")
    print(f"every notebook: {', '.join(COMMON_PARAMETERS)} (set with --profile, --run-dir, --seed, ...)")
    print(f"whole series (the data cache): {', '.join(f'{n}: {series_parameter(n).type_name}' for n in SERIES_PARAMETERS)}")
    return 0


def run_command(args) -> int:
    from dermgan.config import dry_run_name

    overrides = dict(parse_override(p) for p in args.parameter)
    if args.dry_run and args.references:
        raise PipelineError("a dry run is no reference: leave out --references or --dry-run")
    if args.dry_run:
        args.profile = dry_run_name(args.profile)
    get_profile(args.profile)
    root = project_root()
    if args.references and not is_checkout(root):
        raise PipelineError(f"--references refreshes the references committed in a dermgan checkout, and "
                            f"{root} is none; run it from the checkout (or leave it out)")
    if args.references and args.output_dir:
        raise PipelineError("--references writes papermill_runs/<profile>[-<dataset>]; leave out "
                            "--output-dir")
    name = run_name(args.profile, args.dataset)
    output_dir = Path(args.output_dir).resolve() if args.output_dir else executed_dir(name, args.references)
    run_dir = args.run_dir or f"runs/{name}"
    manifest = run_series(args.profile, Path(args.notebooks_dir), output_dir, run_dir=run_dir, seed=args.seed,
                          device=args.device, dataset=args.dataset, data_root=args.data_root,
                          overrides=overrides, only=args.only, start=args.start, kernel=args.kernel,
                          references=args.references)
    artefacts = shown(resolve_run_dir(run_dir, create=False))
    folders = [f"executed notebooks in {shown(output_dir)}",
               f"artefacts (data, checkpoints, samples, metrics, figures) in {artefacts}"]
    if args.references and args.profile != "smoke" and any(e["notebook"].startswith("09") for e in
                                                           manifest["notebooks"]):
        folders.append(f"published figures in {shown(root / 'figures' / args.profile)}")
    count = len(manifest["notebooks"])
    took = duration(manifest["total_wall_s"])
    print(f"done: {count} notebook{'s' * (count != 1)} in {took}; " + "; ".join(folders))
    return 0


def synthesize_command(args) -> int:
    from dermgan.synthesis import synthesize

    began = time.perf_counter()
    output = synthesize(args.checkpoint, args.output, n=args.n, conditions=args.conditions,
                        fitzpatrick=args.fitzpatrick, seed=args.seed, batch_size=args.batch_size,
                        device=args.device, overwrite=args.overwrite, run_dir=args.run_dir)
    print(f"done in {duration(time.perf_counter() - began)}: {shown(output)} (read it as a dataset with "
          f"--dataset folder --data-root {shown(output)})")
    return 0


def shown(path: Path) -> str:
    """A path as a user reads it: relative to the working directory when it lies inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve())) + "/"
    except ValueError:
        return str(path) + "/"


COMMANDS = {"run": run_command, "list": list_command, "train": train_command,
            "synthesize": synthesize_command}


def describe(error: BaseException) -> str | None:
    """One line for the errors a user can act on (None: a bug, shown with its traceback)."""
    from dermgan.train import CheckpointError, DiskFullError

    if isinstance(error, RunRefused):
        return str(error)  # one line per problem
    if isinstance(error, (PipelineError, CheckpointError, ValueError, RunDirBusy, DiskFullError)):
        return gist(str(error)) or type(error).__name__
    if isinstance(error, OSError):
        where = error.filename or "a file"
        if error.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            return f"cannot write {where}: {error.strerror}; choose a writable --run-dir / --output-dir"
        if error.errno == errno.ENOSPC:
            return f"no space left while writing {where}; free some space or choose another --run-dir"
        return f"{where}: {error.strerror or error}"
    if isinstance(error, RuntimeError) and "Error(s) in loading state_dict" in str(error):
        return (gist(str(error)) + "; a checkpoint made with another variant or width: train again "
                "with --fresh or use another --run-dir")
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # `python -m dermgan list | head`: the reader has gone, which is no error
        quiet_stdout()
        return 141  # as a process killed by SIGPIPE reports
    except KeyboardInterrupt as stop:
        print("error: " + ("stopped by SIGTERM" if isinstance(stop, Terminated) else "interrupted"), file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    except Exception as error:  # noqa: BLE001 - turned into one line, or re-raised when it is a bug
        message = describe(error)
        if message is None or args.debug:
            raise
        print(f"error: {message}", file=sys.stderr)
        return error.exit_code if isinstance(error, Interrupted) else 1


def quiet_stdout() -> None:
    """Point stdout at /dev/null: the interpreter's last flush would fail again on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
