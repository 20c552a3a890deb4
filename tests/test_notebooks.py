"""The committed notebooks: sources are clean, and papermill_runs/smoke (the nbval references) is current."""

from pathlib import Path

import pytest

from dermgan import pipeline

ROOT = Path(__file__).resolve().parents[1]
SOURCES = pipeline.list_notebooks(ROOT / "notebooks")


@pytest.mark.parametrize("notebook", SOURCES, ids=lambda p: p.stem)
def test_source_notebook_is_committed_without_outputs(notebook):
    assert pipeline.cells_with_outputs(notebook) == [], f"clear the outputs of {notebook.name}"


@pytest.mark.parametrize("notebook", SOURCES, ids=lambda p: p.stem)
def test_smoke_run_is_current(notebook):
    executed = ROOT / "papermill_runs" / "smoke" / notebook.name
    reasons = pipeline.stale_reasons(notebook, executed)
    assert not reasons, "; ".join(reasons) + " -> re-run: make references PROFILE=smoke"


@pytest.mark.parametrize("notebook", SOURCES, ids=lambda p: p.stem)
def test_notebook_declares_the_common_parameters(notebook):
    missing = set(pipeline.COMMON_PARAMETERS) - pipeline.declared_parameters(notebook)
    assert not missing


def test_every_executed_smoke_notebook_has_a_source():
    executed = {p.name for p in (ROOT / "papermill_runs" / "smoke").glob("*.ipynb")}
    assert executed <= {p.name for p in SOURCES}


@pytest.mark.parametrize("notebook", SOURCES, ids=lambda p: p.stem)
def test_every_parameter_is_typed(notebook):
    """Each parameters line reads `name: type = default` (pipeline.notebook_parameters raises otherwise); papermill's
    own parser cannot read `int | None`, so the pipeline checks and converts `-p` values itself."""
    params = pipeline.notebook_parameters(notebook)
    assert all(p.kind in (int, float, bool, str) for p in params.values())


@pytest.mark.parametrize("notebook", SOURCES, ids=lambda p: p.stem)
def test_notebook_declares_the_project_kernel(notebook):
    """JupyterLab opens it on "Python (dermgan)" (registered by `make setup`) without asking for a kernel."""
    spec = pipeline.read_notebook(notebook)["metadata"]["kernelspec"]
    assert (spec["name"], spec["display_name"]) == ("dermgan", "Python (dermgan)")


def test_make_setup_registers_the_declared_kernel():
    assert 'ipykernel install --sys-prefix --name dermgan --display-name "Python (dermgan)"' in \
        (ROOT / "Makefile").read_text()


def test_nbval_as_make_test_runs_it_uses_this_environment_whatever_kernel_a_notebook_declares(tmp_path):
    # the executed references declare "dermgan", which a fresh environment may not have registered yet
    import os
    import subprocess
    import sys

    import nbformat

    flags = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("NBVAL :="))
    flags = flags.split(":=", 1)[1].split()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "no-such-kernel", "display_name": "Python (elsewhere)",
                                 "language": "python"}
    cell = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nimport sys\nprint(sys.prefix == %r)" % sys.prefix)
    cell.execution_count = 1
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="True\n")]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "declared.ipynb")
    flags = [f.replace("tests/", str(ROOT / "tests") + "/") for f in flags]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *flags,
                             str(tmp_path / "declared.ipynb")], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "DERMGAN_BATCH": "1"})
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 passed" in result.stdout
