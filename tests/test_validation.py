"""Issue 24: every parameter of the committed notebooks refused before anything runs, and nothing written by a
refused command.

The checks run on the committed notebooks themselves (their declared parameters and start() calls); papermill is
replaced by a stand-in that fails the test if any notebook would be executed, so a request the checks let through
by mistake fails here instead of running the series.
"""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch

from dermgan import pipeline, runtime
from dermgan.augmentation_experiment import mark_rare, recorded_rare
from dermgan.data.synth import class_counts

sys.path.insert(0, str(Path(__file__).parent))
from test_sources import make_ham, write_csv, write_image  # noqa: E402  (the fixture writers of the reader tests)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


class Executed(Exception):
    """Raised by the papermill stand-in: the checks let the request through."""


@pytest.fixture(autouse=True)
def never_execute(monkeypatch):
    import papermill

    def execute_notebook(source, output, **kwargs):
        raise Executed(Path(source).name)

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)


def request(tmp_path, overrides=None, notebooks=NOTEBOOKS, **options):
    """run_series on the smoke profile with scratch run and output folders (the options override them)."""
    settings = {"run_dir": str(tmp_path / "run"), "device": "cpu", **options}
    output = Path(settings.pop("output_dir", tmp_path / "out"))
    return pipeline.run_series("smoke", notebooks, output, overrides=overrides or {}, log=lambda *a, **k: None,
                               **settings)


def refusal(tmp_path, overrides=None, **options) -> list[str]:
    """The problems a refused request names; asserts that it wrote nothing."""
    with pytest.raises(pipeline.RunRefused) as caught:
        request(tmp_path, overrides, **options)
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()
    assert all("\n" not in problem for problem in caught.value.problems)
    return caught.value.problems


def assert_names(problems: list[str], *parts: str) -> None:
    assert any(all(part in problem for part in parts) for problem in problems), problems


@pytest.mark.parametrize("overrides, only, expected", [
    ({"c2st_steps": "0"}, "08", "08_turing_test.ipynb: turing.c2st_steps must be an integer >= 1, got 0"),
    ({"seeds": "0"}, "07", "07_augmentation.ipynb: augmentation.seeds must be an integer >= 1, got 0"),
    ({"steps": "0"}, "03", "03_melanogan_baselines.ipynb: melanogan.steps must be an integer >= 1, got 0"),
    ({"steps": "-3"}, "04", "04_lesion_add_remove.ipynb: lesion_edit.steps must be an integer >= 1, got -3"),
    ({"epochs": "0"}, "07", "augmentation.epochs must be an integer >= 1, got 0"),
    ({"architecture": "foo"}, "07", "augmentation.architecture must be one of 'efficientnet_lite0', 'small', 'resnet18', got 'foo'"),
    ({"n_per_model": "0"}, "08", "turing.n_per_model must be an integer >= 1, got 0"),
    ({"image_size": "16"}, None, "data.image_size must be a power of two in [32, 512]"),
    ({"rare_classes": "nosuch"}, "07", "rare_classes ['nosuch'] are not classes of synthetic"),
    ({"n_probe": "0"}, "06", "06_controllability.ipynb: controllability.n_probe must be an integer >= 1, got 0"),
    ({"model": "foo"}, "06", "model 'foo' is not one 02 trains"),
    ({"responses": "no/such/folder"}, "08", "responses 'no/such/folder': no CSV files there"),
    ({"architecture": "resnet18", "weights": "no_such_weights.pt"}, "07", "weights 'no_such_weights.pt': no such file"),
])
def test_a_value_a_notebook_would_refuse_later_is_refused_up_front(tmp_path, overrides, only, expected):
    assert_names(refusal(tmp_path, overrides, only=only), expected)


def test_every_problem_of_a_request_is_named_in_one_pass(tmp_path):
    problems = refusal(tmp_path, {"c2st_steps": "0", "seeds": "0", "rare_classes": "nosuch", "n_probe": "0"},
                       seed=-1, kernel="no-such-kernel")
    for expected in ("turing.c2st_steps", "augmentation.seeds", "dermgan.seeds", "n_probe",
                     "--seed must be an integer >= 0", "no Jupyter kernel named 'no-such-kernel'"):
        assert_names(problems, expected)


def test_the_command_line_prints_every_problem_on_a_line_of_its_own(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dermgan", "run", "--profile", "smoke", "--device", "cpu",
                             "--run-dir", str(tmp_path / "run"), "--output-dir", str(tmp_path / "out"),
                             "-p", "c2st_steps=0", "-p", "architecture=foo", "--dataset", "nosuch"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert lines[0] == "error: 3 problems; nothing was run or written:"
    assert [line.split(": ")[0] for line in lines[1:]] == ["  - 07_augmentation.ipynb", "  - 08_turing_test.ipynb",
                                                          "  - unknown dataset 'nosuch'; use synthetic or a real source"]
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- data

def test_too_few_synthetic_images_are_refused_with_the_smallest_number_that_works(tmp_path):
    # Independent truth: the stratified split gives a class one image per split from 3 images on (its docstring),
    # and class_counts gives the synthetic class sizes; the smallest n whose smallest class has 3 is the minimum.
    smallest = next(n for n in range(1, 1000) if class_counts(n).min() >= 3)
    assert_names(refusal(tmp_path, {"n_images": "5"}, only="01"), "data.n_images = 5 is too few",
                 f"use n_images >= {smallest}")
    assert_names(refusal(tmp_path, {"n_images": str(smallest - 1)}, only="01"), "too few")
    with pytest.raises(Executed):  # accepted: the stand-in was reached
        request(tmp_path, {"n_images": str(smallest)}, only="01")


def test_a_training_batch_larger_than_the_training_split_is_refused(tmp_path):
    # By hand: 86 images are classes of 31, 13, 11, 11, 10, 4, 3, 3 (class_counts); val and test take
    # round(0.15 c), at least 1, each: 5+5, 2+2, 2+2, 2+2, 2+2, 1+1, 1+1, 1+1, which leaves 54 for training
    problems = refusal(tmp_path, {"n_images": "86", "batch_size": "64"}, start="02")
    for notebook, section in (("02_dermgan_training", "dermgan"), ("03_melanogan_baselines", "melanogan"),
                              ("04_lesion_add_remove", "lesion_edit")):
        assert_names(problems, f"{notebook}.ipynb: the synthetic training split has 54 images, fewer than one "
                               f"batch of {section}.batch_size = 64")
    with pytest.raises(Executed):  # one batch of 54 fits
        request(tmp_path, {"n_images": "86", "batch_size": "54"}, only="02")


def test_an_unknown_dataset_or_a_missing_data_root_is_refused(tmp_path):
    assert_names(refusal(tmp_path, dataset="nosuch"), "unknown dataset 'nosuch'")
    assert_names(refusal(tmp_path, dataset="ham10000"), "dataset ham10000 is read from a folder: give --data-root")
    assert_names(refusal(tmp_path, dataset="ham10000", data_root=str(tmp_path / "missing")),
                 f"--data-root {tmp_path / 'missing'} is not a folder")


def test_a_data_root_without_the_datasets_files_is_refused_naming_each_file(tmp_path):
    (tmp_path / "ham").mkdir()
    problems = refusal(tmp_path, dataset="ham10000", data_root=str(tmp_path / "ham"))
    assert_names(problems, "HAM10000_metadata.csv not found", "docs/real_datasets.md")
    assert_names(problems, "HAM10000_images_part_1", "folder not found")


def test_a_real_dataset_in_its_own_layout_passes_the_checks(tmp_path):
    make_ham(tmp_path / "ham", n_lesions=14)
    with pytest.raises(Executed):
        request(tmp_path, dataset="ham10000", data_root=str(tmp_path / "ham"), only="01")


def make_folder_dataset(root: Path, labels: list[str], malignant: bool | None = None) -> Path:
    rows = []
    for i, label in enumerate(labels):
        write_image(root / "images" / f"img{i}.jpg", seed=i)
        rows.append({"image": f"images/img{i}.jpg", "label": label})
    write_csv(root / "labels.csv", rows)
    return root


def test_a_one_class_folder_is_refused_for_the_notebooks_that_train_a_classifier(tmp_path):
    root = make_folder_dataset(tmp_path / "folder", ["eczema"] * 20)
    problems = refusal(tmp_path, dataset="folder", data_root=str(root))
    for notebook in ("05_metrics", "07_augmentation"):
        assert_names(problems, f"{notebook}.ipynb: trains a classifier over the classes", "1 class(es)")
    with pytest.raises(Executed):  # 01 trains no classifier: the same folder is fine for it
        request(tmp_path, dataset="folder", data_root=str(root), only="01")


def test_07_on_a_folder_without_malignancy_needs_rare_classes_and_checks_them(tmp_path):
    root = make_folder_dataset(tmp_path / "folder", ["eczema"] * 12 + ["acne"] * 12)
    assert_names(refusal(tmp_path, dataset="folder", data_root=str(root), only="07"),
                 "no malignant class", "rare_classes parameter")
    assert_names(refusal(tmp_path, {"rare_classes": "melanoma"}, dataset="folder", data_root=str(root), only="07"),
                 "rare_classes ['melanoma'] are not classes of folder")
    with pytest.raises(Executed):
        request(tmp_path, {"rare_classes": "acne"}, dataset="folder", data_root=str(root), only="07")


def test_09_takes_the_rare_classes_07_chose_from_its_table(tmp_path):
    # 07 on a folder without malignancy tops up the classes named by rare_classes; 09 has no such parameter and
    # must read them from 07's table (it asked for rare_classes, which it does not declare)
    classes = ("eczema", "acne", "psoriasis")
    table = pd.DataFrame({"arm": "real", "metric": ["balanced_accuracy"] + [f"recall_{c}" for c in classes]})
    path = tmp_path / "07_augmentation.csv"
    mark_rare(table, classes, [2, 1]).to_csv(path, index=False)
    assert recorded_rare(pd.read_csv(path), classes) == [1, 2]
    assert recorded_rare(table, classes) is None  # a table from before the column: said, not guessed


@pytest.mark.parametrize("notebook", pipeline.list_notebooks(NOTEBOOKS), ids=lambda p: p.stem)
def test_only_a_notebook_that_declares_rare_classes_applies_the_rule_that_asks_for_it(notebook):
    source = "\n".join(c.source for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code")
    if "rare_malignant_classes(" in source:
        assert "rare_classes" in pipeline.notebook_parameters(notebook)


# ---------------------------------------------------------------------------------------------- folders

def checksums(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("inside", ["", "executed"])
def test_an_output_dir_inside_the_notebooks_folder_is_refused_and_the_sources_stay(tmp_path, inside):
    notebooks = shutil.copytree(NOTEBOOKS, tmp_path / "notebooks")  # a copy: the real sources are never at risk
    before = checksums(notebooks)
    with pytest.raises(pipeline.RunRefused, match="is inside the notebooks folder"):
        request(tmp_path, notebooks=notebooks, output_dir=notebooks / inside, only="00")
    assert checksums(notebooks) == before and not (tmp_path / "run").exists()


@pytest.mark.parametrize("option", ["run_dir", "output_dir"])
def test_a_folder_that_cannot_be_created_is_refused_before_anything_is_written(tmp_path, option):
    (tmp_path / "a_file").write_text("not a folder")
    folder = tmp_path / "a_file" / "runs"
    with pytest.raises(pipeline.RunRefused, match=f"cannot be written: {tmp_path / 'a_file'} is a file"):
        request(tmp_path, only="00", **{option: str(folder)})
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


@pytest.mark.skipif(sys.platform == "win32" or __import__("os").geteuid() == 0,
                    reason="permissions do not bind root (checked by hand on a read-only mount)")
@pytest.mark.parametrize("option", ["run_dir", "output_dir"])
def test_a_read_only_folder_is_refused_before_anything_runs(tmp_path, option):
    folder = tmp_path / "ro"
    (folder / "metrics").mkdir(parents=True)
    (folder / "metrics").chmod(0o555)  # a run writes into the subfolders it finds
    try:
        with pytest.raises(pipeline.RunRefused, match=f"{folder / 'metrics'} is read-only"):
            request(tmp_path, only="00", **{option: str(folder)})
        assert sorted(p.name for p in folder.rglob("*")) == ["metrics"]
    finally:
        (folder / "metrics").chmod(0o755)


def test_a_run_dir_made_with_other_settings_is_named_among_the_other_problems(tmp_path):
    run = tmp_path / "run"
    runtime.claim_run_dir(run, {"profile": "cpu", "dataset": "synthetic"})
    before = checksums(run)
    with pytest.raises(pipeline.RunRefused) as caught:
        request(tmp_path, {"c2st_steps": "0"}, only="08")
    assert_names(caught.value.problems, "was made with other settings", "profile: 'cpu' in run.json")
    assert_names(caught.value.problems, "turing.c2st_steps")
    assert checksums(run) == before and not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_writes_nothing(tmp_path):
    assert_names(refusal(tmp_path, device="cuda", only="00"), "CUDA is not available")


def test_a_notebooks_start_refused_for_a_bad_value_leaves_no_run_dir(tmp_path):
    # what `python -m dermgan train --steps 0` and a notebook run by hand go through
    with pytest.raises(ValueError, match="dermgan.steps must be an integer >= 1, got 0"):
        runtime.start("smoke", str(tmp_path / "run"), device="cpu", dermgan={"steps": 0})
    assert not (tmp_path / "run").exists()
