"""The series runs unchanged on a real dataset: a HAM10000 fixture written in its own on-disk layout."""

import json
import sys
from pathlib import Path

import nbformat

from dermgan import pipeline

sys.path.insert(0, str(Path(__file__).parent))
from test_sources import make_ham  # noqa: E402  (the fixture writer of the reader tests)

ROOT = Path(__file__).resolve().parents[1]


def test_series_runs_on_a_ham10000_folder_and_labels_it_real(tmp_path):
    make_ham(tmp_path / "ham", n_lesions=14)
    out, run = tmp_path / "executed", tmp_path / "run"
    manifest = pipeline.run_series("smoke", ROOT / "notebooks", out, run_dir=str(run), dataset="ham10000",
                                   data_root=str(tmp_path / "ham"), start="01", overrides={"steps": 4},
                                   log=lambda *a, **k: None)
    assert {e["status"] for e in manifest["notebooks"]} == {"ok"}
    executed = nbformat.read(out / "01_data.ipynb", as_version=4)
    assert "dataset: ham10000" in json.dumps([c.get("outputs", []) for c in executed.cells])
    notes = {json.loads(p.read_text())["data"] for p in (run / "figures").glob("*.json")}
    assert notes == {"real dataset: ham10000"}  # no figure of real images claims to be synthetic
    assert sorted(p.parent.name for p in (run / "samples").glob("*/samples.npz")) == ["dermgan", "pix2pix"]
