"""Run the numbered notebook series with papermill: `python -m dermgan run --profile smoke`.

Each notebook in notebooks/ is executed in order into papermill_runs/<profile>/, with the common parameters
(profile, run_dir, seed, device, dataset, data_root) and any `-p name=value` overrides injected. The run stops at
the first failing notebook and names it and the cell; a manifest.json beside the executed notebooks records
parameters, git commit, package versions, device and wall time per notebook.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import nbformat

from dermgan.config import PROFILES, get_profile
from dermgan.runtime import environment_report, project_root

COMMON_PARAMETERS = ("profile", "run_dir", "seed", "device", "dataset", "data_root")
INJECTED_TAG = "injected-parameters"


class PipelineError(RuntimeError):
    """A problem with the run request or a notebook that failed; the message says which and where."""


@dataclass
class NotebookFailure(PipelineError):
    notebook: str
    cell: int | None  # index among all cells of the executed notebook
    error: str

    def __str__(self) -> str:
        where = f"cell {self.cell} (counting from 0)" if self.cell is not None else "an unknown cell"
        return f"notebook {self.notebook} failed in {where}: {self.error}"


# ---------------------------------------------------------------------------------------------- discovery

def list_notebooks(notebooks_dir: Path) -> list[Path]:
    """The numbered notebooks (NN_name.ipynb) in order."""
    found = sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
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


def declared_parameters(notebook: Path) -> set[str]:
    """Names assigned in the cell tagged `parameters` (what papermill can override)."""
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            tree = ast.parse(cell.source)
            names = set()
            for node in tree.body:
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                names.update(t.id for t in targets if isinstance(t, ast.Name))
            return names
    raise PipelineError(f"{notebook.name} has no cell tagged 'parameters'")


# ---------------------------------------------------------------------------------------------- parameters

def parse_override(text: str) -> tuple[str, object]:
    """'steps=200' -> ('steps', 200); values are Python literals when they parse as one, else strings."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise PipelineError(f"parameter override {text!r} is not of the form name=value")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return name.strip(), value


def parameters_for(notebooks: list[Path], common: dict, overrides: dict) -> dict[Path, dict]:
    """The parameters each notebook receives; an override that no selected notebook declares is an error."""
    declared = {nb: declared_parameters(nb) for nb in notebooks}
    for nb, names in declared.items():
        missing = [p for p in COMMON_PARAMETERS if p not in names]
        if missing:
            raise PipelineError(f"{nb.name}: parameters cell lacks the common parameters {missing}")
    for name in overrides:
        if not any(name in names for names in declared.values()):
            selected = ", ".join(nb.stem for nb in notebooks)
            raise PipelineError(f"parameter {name!r} is not declared by any selected notebook ({selected})")
    return {nb: {**common, **{k: v for k, v in overrides.items() if k in names}} for nb, names in declared.items()}


# ---------------------------------------------------------------------------------------------- execution

def execute(notebook: Path, output: Path, parameters: dict, kernel: str, cwd: Path) -> None:
    """Execute one notebook with papermill; a failing cell becomes a NotebookFailure naming it."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    try:
        papermill.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name=kernel,
                                   cwd=str(cwd), progress_bar=False, log_output=False)
    except PapermillExecutionError as error:
        raise NotebookFailure(notebook.name, failed_cell_index(output), f"{error.ename}: {error.evalue}") from None


def failed_cell_index(executed: Path) -> int | None:
    """Index, in the SOURCE notebook, of the first cell whose outputs hold an error in the executed copy.

    Cells papermill added (injected parameters, error banners) are not counted, so the number is the one a
    reader sees when opening notebooks/<name>.ipynb.
    """
    if not executed.exists():
        return None
    nb = nbformat.read(executed, as_version=4)
    added = {INJECTED_TAG, "papermill-error-cell-tag"}
    source_cells = [c for c in nb.cells if not added & set(c.metadata.get("tags", []))]
    for i, cell in enumerate(source_cells):
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            return i
    return None


def run_series(profile: str, notebooks_dir: Path, output_dir: Path, run_dir: str, seed: int = 0,
               device: str = "auto", dataset: str = "synthetic", data_root: str | None = None,
               overrides: dict | None = None, only: str | None = None, start: str | None = None,
               kernel: str = "python3", log=print) -> dict:
    """Execute the selected notebooks in order; return the manifest (also written to output_dir)."""
    get_profile(profile)  # an unknown profile fails before anything runs
    notebooks = select_notebooks(list_notebooks(notebooks_dir), only, start)
    common = dict(profile=profile, run_dir=run_dir, seed=seed, device=device, dataset=dataset,
                  data_root=data_root)
    plan = parameters_for(notebooks, common, overrides or {})
    output_dir.mkdir(parents=True, exist_ok=True)
    os.environ["DERMGAN_BATCH"] = "1"  # inherited by the kernels: no progress bars in executed notebooks

    earlier = earlier_entries(output_dir / "manifest.json", profile)
    manifest = new_manifest(profile, common, overrides or {}, device, output_dir, notebooks_dir)
    try:
        for position, notebook in enumerate(notebooks, 1):
            log(f"[{position}/{len(notebooks)}] {notebook.name} ...", end=" ", flush=True)
            began = time.perf_counter()
            entry = {"notebook": notebook.name, "parameters": plan[notebook], "status": "running"}
            manifest["notebooks"].append(entry)
            try:
                execute(notebook, output_dir / notebook.name, plan[notebook], kernel, project_root(notebooks_dir))
            except NotebookFailure as failure:
                entry.update(status="failed", cell=failure.cell, error=failure.error)
                log("FAILED")
                raise
            finally:
                entry["wall_s"] = round(time.perf_counter() - began, 1)
            entry["status"] = "ok"
            log(f"ok ({entry['wall_s']:.0f} s)")
    finally:
        manifest["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        manifest["total_wall_s"] = round(sum(e.get("wall_s", 0) for e in manifest["notebooks"]), 1)
        ran = {e["notebook"] for e in manifest["notebooks"]}
        # A partial run (--only / --from) keeps the record of the executed notebooks it did not replace.
        manifest["earlier_runs"] = [e for e in earlier if e["notebook"] not in ran
                                    and (output_dir / e["notebook"]).exists()]
        (output_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def earlier_entries(path: Path, profile: str) -> list[dict]:
    """Notebook entries of an existing manifest of the same profile, each with its run's commit and start."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if previous.get("profile") != profile:
        return []
    current = [{**e, "git_commit": previous.get("git_commit"), "started": previous.get("started")}
               for e in previous.get("notebooks", [])]
    return current + previous.get("earlier_runs", [])


def new_manifest(profile, common, overrides, device, output_dir, notebooks_dir) -> dict:
    report = environment_report(device)
    return {
        "profile": profile,
        "profile_config": get_profile(profile).as_dict(),
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
        "notebooks": [],
    }


# ---------------------------------------------------------------------------------------------- checks

def code_sources(nb) -> list[str]:
    """Sources of the code cells, without papermill's injected-parameters cell."""
    return [c.source for c in nb.cells
            if c.cell_type == "code" and INJECTED_TAG not in c.metadata.get("tags", [])]


def stale_reasons(source: Path, executed: Path) -> list[str]:
    """Why `executed` no longer matches `source` (empty when it is up to date)."""
    if not executed.exists():
        return [f"{executed} does not exist; run the series for this profile"]
    src = code_sources(nbformat.read(source, as_version=4))
    done = code_sources(nbformat.read(executed, as_version=4))
    if len(src) != len(done):
        return [f"{executed.name}: {len(done)} code cells, but {source.name} has {len(src)}"]
    return [f"{executed.name}: code cell {i} differs from the source" for i, (a, b) in enumerate(zip(src, done))
            if a != b]


def cells_with_outputs(notebook: Path) -> list[int]:
    """Indices of code cells that carry outputs or execution counts (sources are committed clean)."""
    nb = nbformat.read(notebook, as_version=4)
    return [i for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]


# ---------------------------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    root = project_root()
    parser = argparse.ArgumentParser(prog="python -m dermgan", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute the notebook series with papermill")
    run.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILES)} (default cpu)")
    run.add_argument("--only", help="run just this notebook (e.g. 02 or 02_dermgan_training)")
    run.add_argument("--from", dest="start", help="run from this notebook on")
    run.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                     help="override a notebook parameter (repeatable)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N")
    run.add_argument("--dataset", default="synthetic", help="synthetic or a real source, e.g. ham10000")
    run.add_argument("--data-root", default=None, help="folder holding the real dataset")
    run.add_argument("--run-dir", default=None, help="artefacts folder (default runs/<profile>)")
    run.add_argument("--output-dir", default=None, help="executed notebooks (default papermill_runs/<profile>)")
    run.add_argument("--notebooks-dir", default=str(root / "notebooks"))
    run.add_argument("--kernel", default="python3", help="Jupyter kernel (default: this interpreter's)")
    commands.add_parser("list", help="list the notebooks and their parameters")
    train = commands.add_parser("train", help="train one DermGAN variant without a notebook (works under torchrun)")
    train.add_argument("--profile", default="cpu")
    train.add_argument("--model", default="dermgan", help="pix2pix, dermgan or an ablation variant")
    train.add_argument("--steps", type=int, default=None, help="default: the profile's")
    train.add_argument("--batch-size", type=int, default=None, help="global batch; default: the profile's")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto")
    train.add_argument("--dataset", default="synthetic")
    train.add_argument("--data-root", default=None)
    train.add_argument("--run-dir", default=None, help="default runs/<profile>")
    train.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint instead of resuming")
    return parser


def train_command(args) -> int:
    """Train like notebook 02 does; under `torchrun --nproc_per_node N` every rank runs this, DDP does the rest."""
    from dermgan.data import load_for_run
    from dermgan.models.dermgan import train_variant
    from dermgan.runtime import start

    ctx = start(args.profile, args.run_dir, args.seed, args.device, args.dataset, args.data_root,
                dermgan={"steps": args.steps, "batch_size": args.batch_size})
    train_data = load_for_run(ctx).split("train")
    _, result = train_variant(args.model, ctx, train_data, resume=not args.fresh)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{args.model}: step {result.step} ({result.steps_this_run} this run, "
              f"{result.seconds_per_step:.3f} s/step) -> {result.checkpoint}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = project_root()
    try:
        if args.command == "list":
            for nb in list_notebooks(root / "notebooks"):
                print(f"{nb.stem:32s} {', '.join(sorted(declared_parameters(nb)))}")
            return 0
        if args.command == "train":
            return train_command(args)
        overrides = dict(parse_override(p) for p in args.parameter)
        clash = [k for k in overrides if k in COMMON_PARAMETERS]
        if clash:
            raise PipelineError(f"set {clash} with their own options (--profile, --seed, ...), not -p")
        get_profile(args.profile)
        output_dir = Path(args.output_dir or root / "papermill_runs" / args.profile)
        manifest = run_series(args.profile, Path(args.notebooks_dir), output_dir,
                              run_dir=args.run_dir or f"runs/{args.profile}", seed=args.seed, device=args.device,
                              dataset=args.dataset, data_root=args.data_root, overrides=overrides,
                              only=args.only, start=args.start, kernel=args.kernel)
    except (PipelineError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"done: {len(manifest['notebooks'])} notebooks in {manifest['total_wall_s']:.0f} s -> {output_dir}")
    return 0
