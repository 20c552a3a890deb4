"""The papermill pipeline: typed parameters, series-wide settings, run isolation, atomic records, clean errors."""

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from dermgan import pipeline

sys.path.insert(0, str(Path(__file__).parent))
from test_sources import make_ham  # noqa: E402  (the fixture writer of the reader tests)

ROOT = Path(__file__).resolve().parents[1]
COMMON = ('profile: str = "smoke"\nrun_dir: str | None = None\nseed: int = 0\ndevice: str = "cpu"\n'
          'dataset: str = "synthetic"\ndata_root: str | None = None\n')
QUIET = (lambda *a, **k: None)


def write_notebook(path: Path, *sources: str, extra_parameters: str = "") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(COMMON + extra_parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), params] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


def run_cli(*args, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, "-m", "dermgan", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


@pytest.fixture
def series(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "00_first.ipynb", "print('first', seed)", extra_parameters="steps: int | None = None\n")
    write_notebook(notebooks / "01_broken.ipynb", "x = 1", "raise ValueError('deliberate failure')")
    write_notebook(notebooks / "02_never.ipynb", "print('not reached')")
    return notebooks


def test_failing_cell_stops_the_run_and_is_named(series, tmp_path):
    out = tmp_path / "out"
    result = run_cli("run", "--profile", "smoke", "--notebooks-dir", str(series), "--output-dir", str(out),
                     "--run-dir", str(tmp_path / "run"))
    assert result.returncode != 0
    assert "notebook 01_broken.ipynb failed in cell" in result.stderr
    assert "ValueError: deliberate failure" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    statuses = [(e["notebook"], e["status"]) for e in manifest["notebooks"]]
    assert statuses == [("00_first.ipynb", "ok"), ("01_broken.ipynb", "failed")]
    failed = manifest["notebooks"][1]
    assert failed["cell"] == 3  # markdown, parameters, "x = 1", then the raising cell, as in the source
    assert f"failed in cell {failed['cell']}" in result.stderr
    source = nbformat.read(series / "01_broken.ipynb", as_version=4)
    assert "deliberate failure" in source.cells[failed["cell"]].source
    assert not (out / "02_never.ipynb").exists()
    # the half-run copy is kept beside where the good one goes, never in its place
    assert failed["kept"] == "01_broken.failed.ipynb" and not (out / "01_broken.ipynb").exists()
    assert "deliberate failure" in (out / "01_broken.failed.ipynb").read_text()
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_manifest_records_parameters_versions_device_and_times(series, tmp_path):
    out = tmp_path / "out"
    manifest = pipeline.run_series("smoke", series, out, run_dir=str(tmp_path / "run"), only="00",
                                   overrides={"steps": 5}, log=lambda *a, **k: None)
    saved = json.loads((out / "manifest.json").read_text())
    assert saved == manifest
    entry = saved["notebooks"][0]
    assert entry["status"] == "ok" and entry["wall_s"] >= 0
    assert entry["parameters"]["steps"] == 5 and entry["parameters"]["profile"] == "smoke"
    assert saved["device"] and saved["packages"]["torch"] and "git_commit" in saved
    executed = nbformat.read(out / "00_first.ipynb", as_version=4)
    assert "first 0" in json.dumps([c.get("outputs") for c in executed.cells])


def test_unknown_profile_is_a_clear_error(series):
    result = run_cli("run", "--profile", "gigantic", "--notebooks-dir", str(series))
    assert result.returncode == 1 and "unknown profile 'gigantic'" in result.stderr


def test_unknown_notebook_is_a_clear_error(series):
    with pytest.raises(pipeline.PipelineError, match="unknown notebook '07'.*00_first"):
        pipeline.run_series("smoke", series, series.parent / "o", run_dir="r", only="07")


def test_undeclared_parameter_is_a_clear_error(series):
    with pytest.raises(pipeline.PipelineError, match="parameter 'stepz' is not declared"):
        pipeline.run_series("smoke", series, series.parent / "o", run_dir="r", only="00", overrides={"stepz": 1})
    # declared by 00 only: reaching 01 alone is an error too
    with pytest.raises(pipeline.PipelineError, match="'steps' is not declared by any selected notebook"):
        pipeline.run_series("smoke", series, series.parent / "o", run_dir="r", only="01", overrides={"steps": 1})


def test_notebook_selection_by_number_title_and_from():
    notebooks = [Path("00_environment.ipynb"), Path("01_data.ipynb"), Path("02_dermgan_training.ipynb")]
    assert pipeline.select_notebooks(notebooks, only="01") == [notebooks[1]]
    assert pipeline.select_notebooks(notebooks, only="dermgan_training") == [notebooks[2]]
    assert pipeline.select_notebooks(notebooks, start="01_data") == notebooks[1:]


def test_override_is_split_at_the_first_equals_sign_and_stays_text():
    assert pipeline.parse_override("steps=200") == ("steps", "200")
    assert pipeline.parse_override("weights=a=b.pt") == ("weights", "a=b.pt")
    with pytest.raises(pipeline.PipelineError, match="name=value"):
        pipeline.parse_override("steps")


def typed(name, kind, optional=False):
    return pipeline.Parameter(name, kind, optional, None)


def test_override_strings_are_converted_to_the_declared_type():
    # issue 8: "false" and "no" used to arrive as truthy strings
    assert pipeline.convert(typed("resume", bool), "false") is False
    assert pipeline.convert(typed("ablation", bool, True), "no") is False
    assert pipeline.convert(typed("ablation", bool, True), "True") is True
    assert pipeline.convert(typed("ablation", bool, True), "None") is None
    assert pipeline.convert(typed("steps", int, True), "3_000") == 3000
    assert pipeline.convert(typed("lr", float), "2e-4") == 2e-4 and type(pipeline.convert(typed("lr", float), 1)) is float
    assert pipeline.convert(typed("model", str), "dermgan") == "dermgan"
    assert pipeline.convert(typed("model", str), '"pix2pix"') == "pix2pix"


@pytest.mark.parametrize("kind, optional, value", [
    (int, True, "abc"), (int, True, "3.5"), (int, False, "None"), (int, True, True), (bool, False, "maybe"),
    (bool, False, 1), (float, False, "nan"), (float, False, "x"), (str, False, None)])
def test_values_of_another_type_are_refused_in_one_line(kind, optional, value):
    with pytest.raises(pipeline.PipelineError, match=f"parameter p expects {kind.__name__}.*got {value!r}"):
        pipeline.convert(typed("p", kind, optional), value)


def test_steps_abc_is_refused_before_anything_runs(series, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(pipeline.PipelineError, match="parameter steps expects int or None, got 'abc'"):
        pipeline.run_series("smoke", series, out, run_dir=str(tmp_path / "run"), overrides={"steps": "abc"})
    assert not out.exists() and not (tmp_path / "run").exists()


def test_annotations_and_the_start_call_give_type_and_profile_field(tmp_path):
    path = write_notebook(tmp_path / "02_t.ipynb", "ctx = start(profile, dermgan={'steps': steps, 'lr': rate})",
                          extra_parameters="steps: int | None = None\nrate: None | float = None\nresume: bool = True\n")
    params = pipeline.notebook_parameters(path)
    assert (params["steps"].kind, params["steps"].optional, params["steps"].target) == (int, True, ("dermgan", "steps"))
    assert (params["rate"].kind, params["rate"].target) == (float, ("dermgan", "lr"))
    assert (params["resume"].kind, params["resume"].optional, params["resume"].target) == (bool, False, None)
    assert params["profile"].type_name == "str" and params["run_dir"].type_name == "str | None"


@pytest.mark.parametrize("line, problem", [
    ("steps = None", "not a typed parameter"), ("steps: list = []", "annotation 'list'"),
    ("steps: int = 'ten'", "parameter steps expects int"), ("import os", "not a typed parameter")])
def test_a_parameter_without_a_supported_annotation_is_an_error_of_the_notebook(tmp_path, line, problem):
    path = write_notebook(tmp_path / "00_bad.ipynb", "print(1)", extra_parameters=line + "\n")
    with pytest.raises(pipeline.PipelineError, match=problem) as caught:
        pipeline.notebook_parameters(path)
    assert "00_bad.ipynb" in str(caught.value)


@pytest.mark.parametrize("notebook", pipeline.list_notebooks(ROOT / "notebooks"), ids=lambda p: p.stem)
def test_every_committed_notebook_declares_typed_parameters(notebook):
    params = pipeline.notebook_parameters(notebook)  # raises on an unannotated line
    assert params["seed"].kind is int and params["run_dir"].optional


def test_out_of_range_values_are_refused_before_anything_runs(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "00_t.ipynb", "ctx = start(profile, dermgan={'steps': steps})",
                   extra_parameters="steps: int | None = None\n")
    out, run = tmp_path / "out", tmp_path / "run"
    with pytest.raises(pipeline.PipelineError, match="00_t.ipynb: dermgan.steps must be an integer >= 1, got 0"):
        pipeline.run_series("smoke", notebooks, out, run_dir=str(run), overrides={"steps": "0"})
    with pytest.raises(pipeline.PipelineError, match="data.image_size must be a power of two.*got 48"):
        pipeline.run_series("smoke", notebooks, out, run_dir=str(run), overrides={"image_size": "48"})
    assert not out.exists() and not run.exists()


def test_staleness_check_flags_a_changed_cell(tmp_path):
    source = write_notebook(tmp_path / "00_a.ipynb", "print(1)")
    executed = tmp_path / "run" / "00_a.ipynb"
    executed.parent.mkdir()
    nb = nbformat.read(source, as_version=4)
    injected = nbformat.v4.new_code_cell('profile = "smoke"')
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(2, injected)
    nbformat.write(nb, executed)
    assert pipeline.stale_reasons(source, executed) == []  # the injected cell does not count
    write_notebook(source, "print(2)")
    assert pipeline.stale_reasons(source, executed) == ["00_a.ipynb: code cell 1 differs from the source"]
    write_notebook(source, "print(1)", "print(3)")
    assert "code cells" in pipeline.stale_reasons(source, executed)[0]
    assert "does not exist" in pipeline.stale_reasons(source, tmp_path / "missing.ipynb")[0]


def test_clean_source_check_flags_outputs_and_execution_counts(tmp_path):
    path = write_notebook(tmp_path / "00_a.ipynb", "print(1)", "2")
    assert pipeline.cells_with_outputs(path) == []
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.cells[3].execution_count = 4
    nbformat.write(nb, path)
    assert pipeline.cells_with_outputs(path) == [2, 3]


def test_train_command_trains_then_resumes_instead_of_repeating(tmp_path):
    args = ("train", "--profile", "smoke", "--model", "pix2pix", "--steps", "3", "--device", "cpu",
            "--run-dir", str(tmp_path / "run"))
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "pix2pix: step 3 (3 this run" in first.stdout
    assert (tmp_path / "run" / "checkpoints" / "pix2pix" / "last.pt").is_file()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "pix2pix: step 3 (0 this run" in again.stdout


def test_partial_run_keeps_the_record_of_notebooks_it_did_not_replace(series, tmp_path):
    out, quiet = tmp_path / "out", (lambda *a, **k: None)
    (series / "01_broken.ipynb").unlink()
    pipeline.run_series("smoke", series, out, run_dir=str(tmp_path / "run"), log=quiet)
    again = pipeline.run_series("smoke", series, out, run_dir=str(tmp_path / "run"), only="02", log=quiet)
    assert [e["notebook"] for e in again["notebooks"]] == ["02_never.ipynb"]
    assert [e["notebook"] for e in again["earlier_runs"]] == ["00_first.ipynb"]
    assert again["earlier_runs"][0]["status"] == "ok" and "started" in again["earlier_runs"][0]


# ---------------------------------------------------------------------------------------------- whole-series settings

def write_two_notebooks(folder: Path) -> Path:
    """00 declares image_size (and a bool); 01 declares neither and reads the data settings through start()."""
    folder.mkdir()
    write_notebook(folder / "00_declares.ipynb",
                   "from dermgan import runtime\n"
                   "ctx = runtime.start(profile, run_dir, seed, device, dataset, data_root, data={'image_size': image_size})\n"
                   "print('size', ctx.profile.data.image_size, 'resume', type(resume).__name__, resume)",
                   extra_parameters="image_size: int | None = None\nresume: bool = True\n")
    write_notebook(folder / "01_plain.ipynb",
                   "from dermgan import runtime\n"
                   "ctx = runtime.start(profile, run_dir, seed, device, dataset, data_root)\n"
                   "print('size', ctx.profile.data.image_size)")
    return folder


def printed(executed: Path) -> str:
    nb = nbformat.read(executed, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def test_a_data_setting_reaches_every_notebook_and_typed_values_arrive_typed(tmp_path):
    notebooks, out, run = write_two_notebooks(tmp_path / "notebooks"), tmp_path / "out", tmp_path / "run"
    args = ("run", "--profile", "smoke", "--notebooks-dir", str(notebooks), "--output-dir", str(out),
            "--run-dir", str(run), "-p", "image_size=64", "-p", "resume=false")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "size 64 resume bool False" in printed(out / "00_declares.ipynb")
    assert "size 64" in printed(out / "01_plain.ipynb")  # issue 8: it used to run at the profile's 32
    assert json.loads((run / "run.json").read_text())["data"]["image_size"] == 64
    # console: one line per notebook (with heartbeat lines under it if it ran long), none of the kernel's
    # harmless warnings, no papermill "unknown parameter"
    assert first.stdout.splitlines()[0].startswith("[1/2] 00_declares.ipynb ...")
    assert "00_declares.ipynb ... ok (" in first.stdout or "    00_declares.ipynb ok (" in first.stdout
    for noise in ("without encryption", "KeyboardInterrupt", "unknown parameter", "Traceback"):
        assert noise not in first.stderr + first.stdout
    second = run_cli(*args)
    assert second.returncode == 0 and "left (an estimate: the previous run's times x" in second.stdout
    # the same run directory at the profile's size is refused, naming the difference and the way out
    plain = run_cli(*args[:-4])
    assert plain.returncode == 1
    assert "data.image_size: 64 in run.json, 32 asked for now" in plain.stderr and "--run-dir" in plain.stderr


def checksums(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_real_data_run_leaves_the_synthetic_results_untouched(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "00_data.ipynb",
                   "from dermgan import runtime\nfrom dermgan.data import load_for_run\n"
                   "ctx = runtime.start(profile, run_dir, seed, device, dataset, data_root)\n"
                   "data = load_for_run(ctx)\n"
                   "(ctx.run_dir / 'marker.txt').write_text(f'{data.name} {len(data.images)}')")
    make_ham(tmp_path / "ham", n_lesions=14)
    home = {"DERMGAN_HOME": str(tmp_path / "home")}
    common = ("run", "--profile", "smoke", "--notebooks-dir", str(notebooks))
    synthetic = run_cli(*common, "-p", "n_images=86", env=home)  # the smallest with every class in every split
    assert synthetic.returncode == 0, synthetic.stderr
    # a user's run: artefacts in runs/<series>, executed notebooks in runs/<series>/executed, under one root
    runs = tmp_path / "home" / "runs"
    executed = {name: runs / name / "executed" for name in ("smoke", "smoke-ham10000")}
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["runs"]
    assert synthetic.stdout.splitlines()[-1].endswith(
        f"executed notebooks in {executed['smoke']}/; artefacts (data, checkpoints, samples, metrics, "
        f"figures) in {runs / 'smoke'}/")
    before = checksums(runs / "smoke")
    assert (runs / "smoke" / "marker.txt").read_text() == "synthetic 86"
    real = run_cli(*common, "--dataset", "ham10000", "--data-root", str(tmp_path / "ham"), env=home)
    assert real.returncode == 0, real.stderr
    assert checksums(runs / "smoke") == before
    assert (runs / "smoke-ham10000" / "marker.txt").read_text().startswith("ham10000 ")
    assert (executed["smoke-ham10000"] / "00_data.ipynb").is_file()
    # pointing the real run at the synthetic run directory is refused, naming the dataset
    mixed = run_cli(*common, "--dataset", "ham10000", "--data-root", str(tmp_path / "ham"),
                    "--run-dir", str(runs / "smoke"), "--output-dir", str(tmp_path / "elsewhere"), env=home)
    assert mixed.returncode == 1 and "dataset: 'synthetic' in run.json, 'ham10000' asked for now" in mixed.stderr
    assert checksums(runs / "smoke") == before


# ---------------------------------------------------------------------------------------------- records

@pytest.fixture
def fake_papermill(monkeypatch):
    """papermill.execute_notebook replaced: writes a copy marked `text`, then does what `then` says."""
    import papermill

    behaviour = {"text": "complete", "then": None}

    def execute_notebook(source, output, **kwargs):
        nb = nbformat.read(source, as_version=4)
        nb.cells[-1].outputs = [nbformat.v4.new_output("stream", name="stdout", text=behaviour["text"])]
        nbformat.write(nb, output)
        if behaviour["then"] is not None:
            raise behaviour["then"]

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    return behaviour


def test_ctrl_c_keeps_the_good_copy_and_the_partial_one_beside_it(series, tmp_path, fake_papermill):
    out, run = tmp_path / "out", str(tmp_path / "run")
    pipeline.run_series("smoke", series, out, run_dir=run, only="00", log=QUIET)
    good = (out / "00_first.ipynb").read_bytes()
    fake_papermill.update(text="half a run", then=KeyboardInterrupt())
    with pytest.raises(pipeline.Interrupted, match="interrupted during 00_first.ipynb.*00_first.interrupted.ipynb"):
        pipeline.run_series("smoke", series, out, run_dir=run, only="00", log=QUIET)
    assert (out / "00_first.ipynb").read_bytes() == good
    assert "half a run" in (out / "00_first.interrupted.ipynb").read_text()
    assert nbformat.read(out / "00_first.interrupted.ipynb", as_version=4).metadata["dermgan"]["status"] == "interrupted"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["notebooks"][0]["status"] == "interrupted"
    assert [e["notebook"] for e in manifest["earlier_runs"]] == ["00_first.ipynb"]  # the good copy's record
    assert not list(out.glob(".partial*"))


def test_sigterm_during_a_series_keeps_the_records_of_the_notebooks_it_completed(tmp_path):
    # A batch scheduler stops a job with SIGTERM. The default action kills the process before the manifest is
    # written, losing the entries of the notebooks that completed; it must stop the way Ctrl-C does.
    import signal
    import time

    notebooks, out = tmp_path / "notebooks", tmp_path / "out"
    notebooks.mkdir()
    write_notebook(notebooks / "00_quick.ipynb", "print('done')")
    write_notebook(notebooks / "01_slow.ipynb", "import time\ntime.sleep(120)")
    process = subprocess.Popen([sys.executable, "-m", "dermgan", "run", "--profile", "smoke", "--notebooks-dir",
                                str(notebooks), "--output-dir", str(out), "--run-dir", str(tmp_path / "run")],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        printed = ""
        while "01_slow" not in printed:  # "[2/2] 01_slow.ipynb ..." has no newline until the notebook ends
            printed += process.stdout.read(1) or pytest.fail(f"the series ended early: {printed!r}")
        time.sleep(4)  # inside the second notebook
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, stderr
    assert "stopped by SIGTERM during 01_slow.ipynb" in stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(e["notebook"], e["status"]) for e in manifest["notebooks"]] == [("00_quick.ipynb", "ok"),
                                                                           ("01_slow.ipynb", "interrupted")]
    assert (out / "00_quick.ipynb").is_file() and not (out / "01_slow.ipynb").exists()


def test_the_remaining_time_comes_from_the_profiles_reference_run_until_this_folder_has_its_own(tmp_path):
    reference = tmp_path / "papermill_runs" / "smoke"
    reference.mkdir(parents=True)
    (reference / "manifest.json").write_text(json.dumps({"notebooks": [
        {"notebook": "01_b.ipynb", "status": "ok", "wall_s": 100.0},
        {"notebook": "02_c.ipynb", "status": "failed", "wall_s": 5.0}],
        "earlier_runs": [{"notebook": "02_c.ipynb", "status": "ok", "wall_s": 200.0}]}))
    times = pipeline.reference_wall_times(tmp_path, "smoke")
    assert times == {"01_b.ipynb": 100.0, "02_c.ipynb": 200.0}
    clock = pipeline.Estimate.of([], times)
    assert clock.remaining([Path("01_b.ipynb"), Path("02_c.ipynb")]) == (
        "; about 5 min left (an estimate: the reference run's times x 1, this run's pace so far)")
    assert clock.remaining([Path("03_d.ipynb")]) == ""  # a notebook with no time: no guess
    previous = pipeline.Estimate.of([{"notebook": "02_c.ipynb", "status": "ok", "wall_s": 20.0}], times)
    assert previous.recorded["02_c.ipynb"] == 20.0 and previous.source == "the previous run's times"
    assert pipeline.reference_wall_times(tmp_path, "cpu") == {}
    (reference / "manifest.json").write_text("{truncated")
    assert pipeline.reference_wall_times(tmp_path, "smoke") == {}


def test_the_remaining_time_scales_with_this_runs_pace_and_says_it_is_an_estimate():
    clock = pipeline.Estimate.of([], {"00_a.ipynb": 100.0, "01_b.ipynb": 200.0, "02_c.ipynb": 300.0})
    left = [Path("01_b.ipynb"), Path("02_c.ipynb")]
    clock.done["00_a.ipynb"] = 150.0  # 1.5 x the reference: a loaded machine
    # (200 + 300) x 150 / 100 = 750 s = 12.5 min
    assert clock.remaining(left) == ("; about 12 min left (an estimate: the reference run's times x 1.5, "
                                     "this run's pace so far)")
    clock.done["01_b.ipynb"] = 100.0  # (150 + 100) / (100 + 200): the pace of everything done so far
    assert clock.pace() == pytest.approx(250 / 300)
    assert clock.remaining(left[1:]) == ("; about 4 min left (an estimate: the reference run's times x 0.83, "
                                         "this run's pace so far)")
    clock.done["99_new.ipynb"] = 1000.0  # a notebook without a recorded time says nothing about the pace
    assert clock.pace() == pytest.approx(250 / 300)


def test_a_runs_own_records_do_not_mark_its_commit_dirty_but_a_code_change_does(tmp_path):
    from dermgan.runtime import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True,
                       env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})

    for name in ("dermgan/code.py", "papermill_runs/cpu/manifest.json", "figures/cpu/a.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("1")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "x")
    head = git_commit(tmp_path)
    assert len(head) == 40
    (tmp_path / "papermill_runs/cpu/manifest.json").write_text("2")  # the previous --only call's record
    (tmp_path / "figures/cpu/a.csv").write_text("2")
    assert git_commit(tmp_path) == head
    (tmp_path / "dermgan/code.py").write_text("2")
    assert git_commit(tmp_path) == head + "+dirty"


def test_a_kernel_interrupt_is_an_interruption_not_a_failure(series, tmp_path, fake_papermill):
    from papermill.exceptions import PapermillExecutionError

    fake_papermill.update(then=PapermillExecutionError(3, 1, "x", "KeyboardInterrupt", "", []))
    with pytest.raises(pipeline.Interrupted, match="no 00_first.ipynb yet"):
        pipeline.run_series("smoke", series, tmp_path / "out", run_dir=str(tmp_path / "run"), only="00", log=QUIET)


def test_a_truncated_manifest_is_kept_aside_not_taken_for_an_empty_history(series, tmp_path, fake_papermill):
    out, notes = tmp_path / "out", []
    out.mkdir()
    (out / "manifest.json").write_text('{"profile": "smoke", "notebooks": [{"notebook"')
    (out / ".partial-999999999").mkdir()
    (out / ".partial-999999999" / "00_first.ipynb").write_text("left by a killed run")
    pipeline.run_series("smoke", series, out, run_dir=str(tmp_path / "run"), only="00",
                        log=lambda *a, **k: notes.append(" ".join(map(str, a))))
    aside = list(out.glob("manifest.corrupt-*.json"))
    assert len(aside) == 1 and aside[0].read_text().startswith('{"profile": "smoke", "notebooks": [{')
    assert any("could not be read" in n and aside[0].name in n for n in notes)
    assert json.loads((out / "manifest.json").read_text())["notebooks"][0]["status"] == "ok"
    assert not (out / ".partial-999999999").exists()


# ---------------------------------------------------------------------------------------------- clean errors

def size_mismatch() -> RuntimeError:
    try:
        torch.nn.Linear(2, 3).load_state_dict(torch.nn.Linear(2, 4).state_dict())
    except RuntimeError as error:
        return error
    raise AssertionError("torch accepted a state_dict of another size")


def checkpoint_error():
    from dermgan.train import CheckpointError

    return CheckpointError("runs/x/checkpoints/dermgan/last.pt is truncated; delete it or train with --fresh")


@pytest.mark.parametrize("make_error, expected", [
    (lambda: PermissionError(errno.EACCES, "Permission denied", "/r/manifest.json"),
     "cannot write /r/manifest.json: Permission denied; choose a writable --run-dir"),
    (lambda: OSError(errno.EROFS, "Read-only file system", "/r/data"), "cannot write /r/data: Read-only"),
    (lambda: OSError(errno.ENOSPC, "No space left on device", "/r/last.pt"), "no space left while writing /r/last.pt"),
    (checkpoint_error, "last.pt is truncated; delete it or train with --fresh"),
    (size_mismatch, "Error(s) in loading state_dict for Linear: size mismatch for weight"),
    (lambda: pipeline.NotebookFailure("02_x.ipynb", 5, "RuntimeError: boom", Path("/o/02_x.failed.ipynb")),
     "notebook 02_x.ipynb failed in cell 5 (counting from 0): RuntimeError: boom; the traceback is in"),
])
def test_cli_errors_are_one_line_naming_the_problem(monkeypatch, capsys, make_error, expected):
    def fail(*args, **kwargs):
        raise make_error()

    monkeypatch.setattr(pipeline, "run_series", fail)
    assert pipeline.main(["run", "--profile", "smoke"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err
    with pytest.raises(type(make_error())):  # --debug shows the real exception and its traceback
        pipeline.main(["--debug", "run", "--profile", "smoke"])


def test_a_multi_line_notebook_error_becomes_one_line():
    text = pipeline.one_line("RuntimeError", str(size_mismatch()))
    assert "\n" not in text and text.startswith("RuntimeError: Error(s) in loading state_dict for Linear: size")
    assert text.endswith("(+1 more lines)")


def test_an_unknown_kernel_is_refused_before_anything_runs(series, tmp_path):
    with pytest.raises(pipeline.PipelineError, match="no Jupyter kernel named 'nosuchkernel'"):
        pipeline.run_series("smoke", series, tmp_path / "out", run_dir=str(tmp_path / "run"), kernel="nosuchkernel")
    assert not (tmp_path / "out").exists()


def test_train_checks_the_model_name_before_building_the_dataset(tmp_path):
    result = run_cli("train", "--profile", "smoke", "--model", "dermgan-nonsense", "--dataset", "ham10000",
                     "--data-root", str(tmp_path / "missing"), "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "unknown model 'dermgan-nonsense'; choose one of: pix2pix, dermgan" in result.stderr
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- help

def help_text(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as done:
        pipeline.main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_help_describes_every_command_and_points_to_the_parameters(capsys):
    top = help_text(capsys)
    for command in ("run", "list", "train"):
        assert f"    {command} " in top
    run = help_text(capsys, "run")
    assert "examples:" in run and "python -m dermgan list" in run and "-p resume=false" in run
    train = help_text(capsys, "train")
    assert "profiles: smoke, cpu, paper" in train and "dermgan-onehot" in train and "Resume rule" in train


def test_list_shows_each_parameter_with_its_type(capsys):
    assert pipeline.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "steps: int | None" in listed and "resume: bool" in listed and "image_size: int | None" in listed


def test_a_data_setting_whose_default_is_none_takes_the_type_it_is_annotated_with(capsys):
    # real_images: int | None = None used to be typed NoneType: `-p real_images=500` was refused
    assert pipeline.convert(pipeline.series_parameter("real_images"), "500") == 500
    assert pipeline.convert(pipeline.series_parameter("real_images"), "None") is None
    assert pipeline.main(["list"]) == 0
    assert "real_images: int | None" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- kernels

def test_a_series_writes_under_the_commands_root_with_this_interpreter_and_says_so_while_silent(tmp_path,
                                                                                               monkeypatch):
    # Installed use (the package outside any checkout) with the notebooks taken from a checkout: the kernels
    # used to run in the checkout and write there; every output must land under the command's root.
    from dermgan import runtime

    monkeypatch.delenv("DERMGAN_HOME", raising=False)
    monkeypatch.setattr(runtime, "__file__", str(tmp_path / "site-packages" / "dermgan" / "runtime.py"))
    checkout, work = tmp_path / "checkout", tmp_path / "work"
    (checkout / "notebooks").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text('[project]\nname = "dermgan"\n')
    work.mkdir()
    monkeypatch.chdir(work)
    write_notebook(checkout / "notebooks" / "00_where.ipynb",
                   "import os, sys, time\nfrom dermgan import runtime\n"
                   "folder = runtime.resolve_run_dir(run_dir)\n"
                   "(folder / 'marker.txt').write_text(f\"{sys.executable}|{os.environ['DERMGAN_HOME']}\")\n"
                   "time.sleep(4)")
    source = nbformat.read(checkout / "notebooks" / "00_where.ipynb", as_version=4)
    source.metadata["kernelspec"] = {"name": "dermgan", "display_name": "Python (dermgan)",
                                     "language": "python"}
    nbformat.write(source, checkout / "notebooks" / "00_where.ipynb")
    lines = []
    manifest = pipeline.run_series("smoke", checkout / "notebooks", runtime.executed_dir("smoke"),
                                   "runs/smoke", device="cpu", heartbeat_s=1.0,
                                   log=lambda *a, **k: lines.append(a[0]))
    executable, home = (work / "runs" / "smoke" / "marker.txt").read_text().split("|")
    assert Path(executable).resolve() == Path(sys.executable).resolve()  # kernel python3: this interpreter
    assert home == str(work)
    assert sorted(str(p.relative_to(checkout)) for p in checkout.rglob("*")) == [
        "notebooks", "notebooks/00_where.ipynb", "pyproject.toml"]  # nothing written into the checkout
    executed = work / "runs" / "smoke" / "executed" / "00_where.ipynb"
    assert manifest["notebooks"][0]["status"] == "ok" and executed.is_file()
    # executed by this interpreter's kernel (python3) although the source declares the project kernel, which
    # the copy keeps: JupyterLab opens it with "Python (dermgan)"
    assert nbformat.read(executed, as_version=4).metadata["kernelspec"]["display_name"] == "Python (dermgan)"
    beats = [line for line in lines if "still running:" in line]
    assert beats[0].startswith("\n    still running: ")  # the first one starts a line of its own
    assert "code cell 2 of 2" in beats[-1] and beats[-1].endswith("so far")  # the parameters cell is cell 1
    assert lines[-1].startswith("    00_where.ipynb ok (")  # under its heartbeat lines


def test_the_kernels_learn_the_root_and_whether_this_is_a_references_run(series, tmp_path, monkeypatch,
                                                                          fake_papermill):
    seen = []
    import papermill

    fake = papermill.execute_notebook
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: (seen.append(
        {name: os.environ.get(name) for name in ("DERMGAN_HOME", "DERMGAN_REFERENCES", "DERMGAN_BATCH")}),
        fake(*a, **k)))
    monkeypatch.setenv("DERMGAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DERMGAN_REFERENCES", "1")  # inherited from elsewhere: only --references sets it
    pipeline.run_series("smoke", series, tmp_path / "out", "runs/smoke", only="00", log=QUIET)
    pipeline.run_series("smoke", series, tmp_path / "out", "runs/smoke", only="00", log=QUIET,
                        references=True)
    home = str(tmp_path / "home")
    assert seen == [{"DERMGAN_HOME": home, "DERMGAN_REFERENCES": None, "DERMGAN_BATCH": "1"},
                    {"DERMGAN_HOME": home, "DERMGAN_REFERENCES": "1", "DERMGAN_BATCH": "1"}]
    assert os.environ["DERMGAN_REFERENCES"] == "1"  # restored afterwards


def test_references_go_to_the_committed_folders_only_when_asked(tmp_path, monkeypatch):
    from dermgan import runtime

    monkeypatch.setenv("DERMGAN_HOME", str(tmp_path))
    monkeypatch.delenv("DERMGAN_REFERENCES", raising=False)
    assert runtime.executed_dir("cpu") == tmp_path / "runs" / "cpu" / "executed"
    assert runtime.executed_dir("cpu", references=True) == tmp_path / "papermill_runs" / "cpu"
    for manifest in ("runs/cpu-ham10000/executed", "papermill_runs/cpu-isic2017", "runs/smoke-ddi/executed"):
        (tmp_path / manifest).mkdir(parents=True)
        (tmp_path / manifest / "manifest.json").write_text("{}")
    assert runtime.executed_manifests("cpu-*") == [tmp_path / "runs/cpu-ham10000/executed/manifest.json"]
    monkeypatch.setenv("DERMGAN_REFERENCES", "1")  # what a references run's kernels see
    assert runtime.refreshing_references()
    assert runtime.executed_manifests("cpu-*") == [tmp_path / "papermill_runs/cpu-isic2017/manifest.json"]


def test_references_are_refused_outside_a_checkout_and_with_an_output_dir(tmp_path, capsys):
    outside = run_cli("run", "--profile", "smoke", "--references", env={"DERMGAN_HOME": str(tmp_path)})
    assert outside.returncode == 1 and not list(tmp_path.iterdir())
    assert "--references refreshes the references committed in a dermgan checkout" in outside.stderr
    assert pipeline.main(["run", "--references", "--output-dir", str(tmp_path / "x")]) == 1
    assert "leave out --output-dir" in capsys.readouterr().err


def test_git_ignores_every_place_a_users_commands_write_and_not_the_references():
    from dermgan import runtime

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0

    runs = ROOT / "runs"
    user = [runtime.executed_dir("cpu", references=False), runs / "cpu" / "checkpoints" / "x.pt",
            runs / "benchmarks" / "results" / "train_step.md", runs / "benchmarks" / "README.md",
            runs / "nbval" / "runs" / "smoke" / "run.json"]
    assert all(ignored(str(Path(p).relative_to(ROOT) / "manifest.json")) for p in user)
    references = ["papermill_runs/cpu/manifest.json", "figures/cpu/09_metrics_synthetic.csv",
                  "benchmarks/results/train_step.md", "benchmarks/README.md"]
    assert not any(ignored(p) for p in references)


# ---------------------------------------------------------------------------------------------- command line

def test_debug_is_accepted_before_and_after_the_command():
    parse = pipeline.build_parser().parse_args
    assert parse(["--debug", "list"]).debug and parse(["list", "--debug"]).debug
    assert parse(["run", "--profile", "smoke", "--debug"]).debug and not parse(["run"]).debug
    assert parse(["synthesize", "a", "b", "--debug"]).debug


def subcommands(parser):
    import argparse

    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_option_has_help_that_states_its_default():
    parser = pipeline.build_parser()
    for name, command in [("", parser), *subcommands(parser).items()]:
        formatter = command._get_formatter()
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            text = formatter._get_help_string(action) or ""
            assert "default" in text, f"{name} {action.option_strings[0]}: {text!r}"
    run = subcommands(parser)["run"].format_help()
    assert "(default: cpu)" in run and "(default: 0)" in run and "(default: off)" in run


def test_a_closed_pipe_ends_the_listing_quietly():
    process = subprocess.Popen([sys.executable, "-m", "dermgan", "list"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, bufsize=0)
    process.stdout.read(5)  # like `| head -c 5`: the reader goes away
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) in (0, 141) and stderr == ""


def test_help_and_list_import_neither_torch_nor_nbformat():
    probe = ("import sys, contextlib, io\n"
             "from dermgan import pipeline\n"
             "for argv in (['--help'], ['run', '--help'], ['synthesize', '--help']):\n"
             "    with contextlib.redirect_stdout(io.StringIO()):\n"
             "        try:\n"
             "            pipeline.main(argv)\n"
             "        except SystemExit:\n"
             "            pass\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             "    pipeline.main(['list'])\n"
             "print(sorted(m for m in ('torch', 'nbformat', 'pandas', 'papermill') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
