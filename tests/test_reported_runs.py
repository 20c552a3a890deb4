"""The executed series committed under papermill_runs/ are what the README reports. Each, synthetic or real,
must be one run of one clean commit (no notebook left over from an older commit or made from uncommitted code),
its executed notebooks must have the code cells of the sources (no stale notebook), and every model it used
must have been trained by the training code of that commit (the manifest records the commits that trained each
model; git says whether the training code changed since). The synthetic series must also be complete, so that
`make reproduce` at that commit regenerates every reported number. Everything here reads only what is committed.
"""

import json
import os
import subprocess
from pathlib import Path

import nbformat
import pytest

from dermgan import pipeline

ROOT = Path(__file__).resolve().parents[1]
SERIES = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REPORTED = sorted(p.parent.name for p in (ROOT / "papermill_runs").glob("*/manifest.json"))
COMPLETE = {"smoke", "cpu"}  # the synthetic series: every notebook runs there


def entry(notebook, status="ok", commit=None):
    return {"notebook": notebook, "status": status, **({"git_commit": commit} if commit else {})}


def test_the_check_finds_spanned_dirty_and_incomplete_runs():
    a, b = "a" * 40, "b" * 40
    one = {"git_commit": a, "notebooks": [entry("00_x.ipynb"), entry("01_y.ipynb")], "earlier_runs": []}
    assert pipeline.reported_run_problems(one, ["00_x.ipynb", "01_y.ipynb"]) == []
    # a --only call on top of an older run: the earlier entry keeps its own commit
    spanned = {"git_commit": b, "notebooks": [entry("01_y.ipynb")], "earlier_runs": [entry("00_x.ipynb", commit=a)]}
    assert pipeline.reported_run_problems(spanned) == ["spans commits: aaaaaaa: 00; bbbbbbb: 01"]
    dirty = {**one, "git_commit": a + "+dirty"}
    assert pipeline.reported_run_problems(dirty) == ["notebooks at a commit with uncommitted changes: 00 01"]
    # a failed notebook is not a result; its good copy from before would be an earlier entry
    failed = {"git_commit": a, "notebooks": [entry("00_x.ipynb"), entry("01_y.ipynb", "failed")], "earlier_runs": []}
    assert pipeline.reported_run_problems(failed, ["00_x.ipynb", "01_y.ipynb"]) == ["not executed: 01_y.ipynb"]


# -- models trained by code that has changed since --------------------------------------------------------------


def git(folder, *args) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True, text=True, env=env).stdout


def commit(repo: Path, changes: dict[str, str]) -> str:
    for name, text in changes.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "change")
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def history(tmp_path):
    """A repository whose commits change, in turn: nothing yet, the evaluation code, the training code."""
    git(tmp_path, "init", "-q")
    files = {"dermgan/train.py": "1", "dermgan/viz.py": "1", "dermgan/metrics/core.py": "1",
             "notebooks/02_dermgan_training.ipynb": "1", "notebooks/09_figures.ipynb": "1"}
    trained = commit(tmp_path, files)
    evaluation = commit(tmp_path, {"dermgan/viz.py": "2", "dermgan/metrics/core.py": "2",
                                   "notebooks/09_figures.ipynb": "2"})
    training = commit(tmp_path, {"dermgan/train.py": "2"})
    notebook = commit(tmp_path, {"notebooks/02_dermgan_training.ipynb": "2"})
    return tmp_path, trained, evaluation, training, notebook


def code(*commits, by="notebook 02_dermgan_training"):
    return [{"by": by, "commit": c, "step": 100 * i} for i, c in enumerate(commits)]


def series_at(commit_id, models):
    return {"git_commit": commit_id, "notebooks": [entry("02_dermgan_training.ipynb"), entry("09_figures.ipynb")],
            "earlier_runs": [], "models": models}


def test_models_trained_by_the_same_training_code_may_be_reported(history):
    repo, trained, evaluation, training, notebook = history
    # trained at `trained`; the series then ran at `evaluation`, which changed only plotting and metrics
    manifest = series_at(evaluation, {"checkpoints/dermgan/generator.pt": {"code": code(trained)}})
    assert pipeline.training_code_problems(manifest, repo) == []


def test_a_model_trained_before_its_training_code_changed_is_found(history):
    repo, trained, evaluation, training, notebook = history
    models = {"checkpoints/dermgan/generator.pt": {"code": code(trained)},
              "checkpoints/dcgan/generator.pt": {"code": code(training)},  # trained at the series' training code
              "checkpoints/lapgan/generator.pt": {"code": code(trained, training)}}  # resumed across the change
    assert pipeline.training_code_problems(series_at(training, models), repo) == [
        f"checkpoints/dermgan/generator.pt: trained at {trained[:7]}, but the training code differs at "
        f"{training[:7]} (dermgan/train.py); retrain it",
        f"checkpoints/lapgan/generator.pt: trained at {trained[:7]}, but the training code differs at "
        f"{training[:7]} (dermgan/train.py); retrain it"]
    # a training notebook counts as training code
    found = pipeline.training_code_problems(series_at(notebook, {"m": {"code": code(training)}}), repo)
    assert found == [f"m: trained at {training[:7]}, but the training code differs at {notebook[:7]} "
                     "(notebooks/02_dermgan_training.ipynb); retrain it"]


def test_unrecorded_uncommitted_and_unknown_training_is_found(history):
    repo, trained, evaluation, training, notebook = history
    models = {"a": {"code": None, "problem": "no generator.training.json (trained by an older version)"},
              "b": {"code": code(None, training)},
              "c": {"code": code(training + "+dirty")},
              "d": {"code": code("f" * 40)}}  # a commit this clone does not have
    problems = pipeline.training_code_problems(series_at(training, models), repo)
    assert problems[:3] == [
        "a: its training is not recorded (no generator.training.json (trained by an older version)); retrain it",
        "b: part of its training is not recorded (resumed from an older version, or outside a git checkout); "
        "retrain it",
        f"c: trained at {training[:7]}+dirty (uncommitted code); retrain it at a clean commit"]
    assert problems[3].startswith("d: trained at fffffff, but the training code differs at") and \
        "cannot compare" in problems[3] and len(problems) == 4
    older = {k: v for k, v in series_at(training, {}).items() if k != "models"}
    assert pipeline.training_code_problems(older, repo) == [
        "records no training commits of its models (made by an older version); re-run the series"]


# -- stale executed notebooks ---------------------------------------------------------------------------------


def notebook_with(path: Path, *sources: str, injected: str | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    cells = [nbformat.v4.new_code_cell(s) for s in sources]
    if injected is not None:  # papermill's cell after the parameters
        cell = nbformat.v4.new_code_cell(injected)
        cell.metadata["tags"] = ["injected-parameters"]
        cells.insert(1, cell)
    nb.cells = [nbformat.v4.new_markdown_cell("# x"), *cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_stale_executed_notebooks_are_found_and_injected_parameters_are_not_code(tmp_path):
    sources, series = tmp_path / "notebooks", tmp_path / "papermill_runs" / "cpu-ham10000"
    notebook_with(sources / "02_a.ipynb", "seed = 0", "train()")
    notebook_with(sources / "05_b.ipynb", "seed = 0", "score()")
    notebook_with(series / "02_a.ipynb", "seed = 0", "train()", injected="seed = 3")  # current
    notebook_with(series / "05_b.ipynb", "seed = 0", "score(old=True)", injected="seed = 3")  # stale
    notebook_with(series / "07_gone.ipynb", "x = 1")  # its source was removed
    notebook_with(series / "02_a.failed.ipynb", "anything")  # a kept partial copy is not a result
    assert pipeline.stale_notebook_problems(series, sources) == [
        "05_b.ipynb: code cell 1 differs from the source",
        "07_gone.ipynb: no source notebook 07_gone.ipynb in notebooks/"]


def test_series_problems_combine_the_manifest_staleness_and_training_code(history):
    repo, trained, evaluation, training, notebook = history
    sources, series = repo / "notebooks", repo / "papermill_runs" / "cpu"
    for name in ("02_dermgan_training.ipynb", "09_figures.ipynb"):
        notebook_with(sources / name, "x = 1")
        notebook_with(series / name, "x = 1")
    models = {"checkpoints/dermgan/generator.pt": {"code": code(trained)}}
    (series / "manifest.json").write_text(json.dumps(series_at(evaluation, models)))
    assert pipeline.series_problems(series, sources, repo, complete=True) == []
    notebook_with(series / "09_figures.ipynb", "x = 2")
    (series / "manifest.json").write_text(json.dumps(series_at(training, models)))
    assert pipeline.series_problems(series, sources, repo, complete=True) == [
        "09_figures.ipynb: code cell 0 differs from the source",
        f"checkpoints/dermgan/generator.pt: trained at {trained[:7]}, but the training code differs at "
        f"{training[:7]} (dermgan/train.py); retrain it"]


# -- the committed series ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("run", REPORTED)
def test_every_reported_series_is_current_and_one_clean_commit_of_its_training_code(run):
    """Fails for a series made by older code until it is run again (the lead re-runs them): stale notebooks,
    several commits, or models trained before their training code changed are listed, one line each."""
    problems = pipeline.series_problems(ROOT / "papermill_runs" / run, ROOT / "notebooks", ROOT,
                                        complete=run in COMPLETE)
    assert problems == [], "\n".join(problems)


def test_the_nbval_references_are_reported():
    # The cpu series is complete when committed (COMPLETE); since 2026-12-07 it is withdrawn until re-run
    # (archive/withdrawn-2026-12-07/README.md), so only the smoke series must be here
    assert "smoke" in REPORTED
