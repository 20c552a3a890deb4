"""The papermill pipeline: bad requests, a failing notebook, the manifest, and the notebook hygiene checks."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dermgan import pipeline

ROOT = Path(__file__).resolve().parents[1]
COMMON = 'profile = "smoke"\nrun_dir = None\nseed = 0\ndevice = "cpu"\ndataset = "synthetic"\ndata_root = None\n'


def write_notebook(path: Path, *sources: str, extra_parameters: str = "") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(COMMON + extra_parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), params] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "dermgan", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def series(tmp_path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "00_first.ipynb", "print('first', seed)", extra_parameters="steps = None\n")
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


def test_override_values_parse_as_literals():
    assert pipeline.parse_override("steps=200") == ("steps", 200)
    assert pipeline.parse_override("name=pix2pix") == ("name", "pix2pix")
    assert pipeline.parse_override("ablation=False") == ("ablation", False)
    with pytest.raises(pipeline.PipelineError, match="name=value"):
        pipeline.parse_override("steps")


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
