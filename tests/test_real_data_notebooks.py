"""The series runs unchanged on a real dataset: a HAM10000 fixture written in its own on-disk layout."""

import json
import sys
from pathlib import Path

import nbformat

from dermgan import pipeline

sys.path.insert(0, str(Path(__file__).parent))
from test_sources import HAM_MASKS, H, W, make_ham, write_mask  # noqa: E402  (the reader tests' fixtures)

ROOT = Path(__file__).resolve().parents[1]


def test_series_runs_on_a_ham10000_folder_and_labels_it_real(tmp_path):
    # HAM10000's imbalance: nevi are most lesions, so that 07 finds rare malignant classes in the (stratified)
    # training split by its rule; every class keeps a lesion, and test gets 5 images (05 needs more than 3)
    dx = ["nv"] * 12 + ["mel"] * 3 + ["bkl", "bcc", "akiec", "vasc", "df"]
    truth = make_ham(tmp_path / "ham", n_lesions=len(dx))
    truth["dx"] = truth["lesion_id"].map(lambda lesion: dx[int(lesion[4:])])
    truth.to_csv(tmp_path / "ham" / "HAM10000_metadata.csv", index=False)
    # Six official HAM10000 masks cover the whole image; such an image stopped 02 (no skin colour to measure).
    write_mask(tmp_path / "ham" / HAM_MASKS / f"{truth['image_id'][0]}_segmentation.png", box=(0, 0, W, H))
    out, run = tmp_path / "executed", tmp_path / "run"
    manifest = pipeline.run_series("smoke", ROOT / "notebooks", out, run_dir=str(run), dataset="ham10000",
                                   data_root=str(tmp_path / "ham"), start="01", overrides={"steps": 4},
                                   log=lambda *a, **k: None)
    assert {e["status"] for e in manifest["notebooks"]} == {"ok"}
    executed = nbformat.read(out / "01_data.ipynb", as_version=4)
    outputs = json.dumps([c.get("outputs", []) for c in executed.cells])
    assert "dataset: ham10000" in outputs
    # synthetic-only views are skipped with one line each, not drawn empty
    assert "no Fitzpatrick types in ham10000: the skin-type table, heatmap and grid are skipped" in outputs
    assert "no Fitzpatrick types in ham10000" in json.dumps(
        [c.get("outputs", []) for c in nbformat.read(out / "05_metrics.ipynb", as_version=4).cells])
    notes = {json.loads(p.read_text())["data"] for p in (run / "figures").glob("*.json")}
    assert notes == {"real dataset: ham10000"}  # no figure of real images claims to be synthetic
    made = {p.parent.name for p in (run / "samples").glob("*/samples.npz")}
    # 02's main model and its ablation runs (pix2pix trains only there), 03's unconditional baselines
    assert {"dermgan", "pix2pix-s0", "dcgan", "lapgan", "ddgan-upsample", "ddgan-deconv", "furger-dcgan"} <= made
    recorded = {json.loads(p.read_text()).get("dataset") for p in (run / "samples").glob("*/meta.json")}
    assert recorded == {"ham10000"}  # every sample set says which data its model learnt from
