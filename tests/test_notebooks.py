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
