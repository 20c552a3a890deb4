"""Provenance: every trained model names the code path and the commits that trained it, every reader refuses
models and samples of other data, a figure's sidecar lists every commit its numbers come from, and notebook 02
and `python -m dermgan train` train the same model from the same settings."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import dermgan.runtime as runtime
import dermgan.train as loop
from dermgan import pipeline, provenance, turing, viz
from dermgan.integrity import write_with_digest
from dermgan.models import dermgan as dg
from dermgan.train import CheckpointError, load_checkpoint, save_atomic, train

sys.path.insert(0, str(Path(__file__).parent))
from test_train import Crash, ToyPairs, _config, _stop_at, tiny_recipe  # noqa: E402  (the loop tests' fixtures)

ROOT = Path(__file__).resolve().parents[1]
A, B = "a" * 40, "b" * 40


def git(folder, *args) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True, text=True, env=env).stdout


def write(folder: Path, name: str, text: str = "1") -> Path:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def at(monkeypatch, commit, notebook=None):
    """Make this process's code record say `commit` and, when given, the notebook the pipeline runs."""
    monkeypatch.setattr(provenance, "git_commit", lambda root=None: commit)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    if notebook is None:
        monkeypatch.delenv(provenance.NOTEBOOK_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(provenance.NOTEBOOK_VARIABLE, notebook)


# -- the commit and "+dirty" ---------------------------------------------------------------------------------


def test_untracked_code_marks_the_commit_dirty_but_a_runs_own_records_do_not(tmp_path):
    for name in ("dermgan/code.py", "notebooks/02_x.ipynb", "papermill_runs/cpu/manifest.json",
                 "figures/cpu/a.csv"):
        write(tmp_path, name)
    write(tmp_path, ".gitignore", "runs/\ndata/\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "x")
    head = runtime.git_commit(tmp_path)
    assert len(head) == 40
    # new records of a run: executed notebooks, figures, artefacts (git ignores runs/ and data/)
    for name in ("papermill_runs/cpu/03_y.ipynb", "figures/cpu/b.png", "runs/cpu/checkpoints/x/generator.pt",
                 "data/ham10000/a.jpg"):
        write(tmp_path, name)
    assert runtime.git_commit(tmp_path) == head
    untracked = write(tmp_path, "dermgan/new_module.py")  # code the commit does not have
    assert runtime.git_commit(tmp_path) == head + "+dirty"
    untracked.unlink()
    write(tmp_path, "notebooks/03_new.ipynb")
    assert runtime.git_commit(tmp_path) == head + "+dirty"


def test_the_commit_is_the_codes_checkout_wherever_runs_are_written(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.HOME_VARIABLE, str(tmp_path))  # runs go outside the checkout, not into git
    head = git(ROOT, "rev-parse", "HEAD").strip()
    assert runtime.git_commit() in (head, head + "+dirty")
    assert runtime.environment_report("cpu")["git_commit"] == runtime.git_commit()


# -- the code record of a trained model ----------------------------------------------------------------------


def test_a_checkpoint_records_the_code_path_and_commit_it_was_started_and_resumed_at(tmp_path, monkeypatch):
    at(monkeypatch, A, notebook="02_dermgan_training")
    with pytest.raises(Crash):
        train(tiny_recipe(), ToyPairs(), _config(), tmp_path, on_step=_stop_at(2))
    started = {"by": "notebook 02_dermgan_training", "commit": A, "step": 0}
    assert load_checkpoint(tmp_path / "last.pt")["code"] == [started]

    at(monkeypatch, B)  # resumed by a command at another commit
    train(tiny_recipe(), ToyPairs(), _config(), tmp_path)
    resumed = {"by": runtime.command_line(), "commit": B, "step": 2}
    generator = load_checkpoint(tmp_path / "generator.pt")
    assert load_checkpoint(tmp_path / "last.pt")["code"] == generator["code"] == [started, resumed]
    assert provenance.read_training_record(tmp_path / "generator.pt") == {"data": None,
                                                                          "code": [started, resumed]}
    assert provenance.commits_of(generator["code"]) == [A, B]

    at(monkeypatch, "c" * 40)  # a finished run opened again trains nothing: the record stays
    assert train(tiny_recipe(), ToyPairs(), _config(), tmp_path).steps_this_run == 0
    assert load_checkpoint(tmp_path / "generator.pt")["code"] == [started, resumed]


def test_resuming_at_the_same_commit_adds_nothing_and_an_older_checkpoint_is_refused(tmp_path, monkeypatch):
    at(monkeypatch, A)
    with pytest.raises(Crash):
        train(tiny_recipe(), ToyPairs(), _config(), tmp_path / "same", on_step=_stop_at(2))
    train(tiny_recipe(), ToyPairs(), _config(), tmp_path / "same")
    assert load_checkpoint(tmp_path / "same" / "generator.pt")["code"] == [provenance.origin(0)]

    with pytest.raises(Crash):
        train(tiny_recipe(), ToyPairs(), _config(), tmp_path / "old", on_step=_stop_at(2))
    older = load_checkpoint(tmp_path / "old" / "last.pt")
    del older["code"]  # what a version before code records wrote
    save_atomic(older, tmp_path / "old" / "last.pt")
    at(monkeypatch, B)
    with pytest.raises(CheckpointError, match=r"last.pt records no training code \(written by an older version\); "
                                              r"resuming would mix two versions"):
        train(tiny_recipe(), ToyPairs(), _config(), tmp_path / "old")
    assert not (tmp_path / "old" / "generator.pt").exists()
    assert provenance.commits_of([provenance.UNRECORDED, provenance.origin(2)]) == [None, B]


def test_a_checkpoint_trained_by_other_training_code_is_refused_and_one_of_other_evaluation_code_resumed(
        tmp_path, monkeypatch):
    """In a checkout of its own: a checkpoint made at a commit resumes after a change to a module that only
    evaluates (dermgan/viz.py), and is refused, naming the file, once the loop's module differs."""
    code = tmp_path / "code"
    for name in ("dermgan/train.py", "dermgan/viz.py"):
        write(code, name, "# v1\n")
    git(code, "init", "-q")
    git(code, "add", ".")
    git(code, "commit", "-qm", "v1")
    head = git(code, "rev-parse", "HEAD").strip()
    monkeypatch.setattr(provenance, "code_checkout", lambda: code)
    at(monkeypatch, head)
    with pytest.raises(Crash):
        train(tiny_recipe(), ToyPairs(), _config(), tmp_path / "run", on_step=_stop_at(2))
    write(code, "dermgan/viz.py", "# v2: plots differently\n")
    with pytest.raises(Crash):  # resumed: it trains on to its next checkpoint
        train(tiny_recipe(), ToyPairs(), _config(), tmp_path / "run", on_step=_stop_at(4))
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 4
    write(code, "dermgan/train.py", "# v2: trains differently\n")
    with pytest.raises(CheckpointError, match=rf"was trained at {head[:7]} and the training code has changed "
                                              r"since \(dermgan/train.py\); resuming would mix"):
        train(tiny_recipe(), ToyPairs(), _config(), tmp_path / "run")
    assert train(tiny_recipe(), ToyPairs(), _config(), tmp_path / "run", resume=False).steps_this_run > 0


def test_a_training_record_of_another_version_of_the_file_is_not_believed(tmp_path, monkeypatch):
    at(monkeypatch, A)
    train(tiny_recipe(), ToyPairs(), _config(steps=2), tmp_path / "checkpoints" / "m")
    generator = tmp_path / "checkpoints" / "m" / "generator.pt"
    assert provenance.trained_models(tmp_path) == {
        "checkpoints/m/generator.pt": {"code": [provenance.origin(0)], "dataset": None}}
    save_atomic({"replaced": torch.zeros(1)}, generator)  # a generator.pt its record does not describe
    found = provenance.trained_models(tmp_path)["checkpoints/m/generator.pt"]
    assert found["code"] is None and "describes another version of generator.pt" in found["problem"]
    provenance.record_path(generator).unlink()
    assert "trained by an older version" in provenance.trained_models(tmp_path)["checkpoints/m/generator.pt"][
        "problem"]


def test_the_metrics_classifier_records_the_code_that_trained_it_and_keeps_it_when_reused(tmp_path, monkeypatch):
    from dermgan.classify import metrics_classifier
    from dermgan.config import ClassifierConfig
    from dermgan.data.dataset import make_synthetic

    data = make_synthetic(32, 60, seed=0, workers=1)
    train_split, val = data.split("train"), data.split("val")
    cfg, path = ClassifierConfig(width=4, epochs=1, batch_size=16), tmp_path / "metrics_classifier" / "model.pt"
    at(monkeypatch, A, notebook="05_metrics")
    assert "trained" in metrics_classifier(train_split, val, cfg, path, seed=0)[1]
    trained = [{"by": "notebook 05_metrics", "commit": A, "step": 0}]
    assert load_checkpoint(path)["code"] == trained
    assert provenance.read_training_record(path) == {"data": loop.data_fingerprint(train_split), "code": trained}
    at(monkeypatch, B, notebook="05_metrics")
    assert "reused" in metrics_classifier(train_split, val, cfg, path, seed=0)[1]
    assert provenance.read_training_record(path)["code"] == trained  # trained at A, whoever reuses it


# -- readers check the data a model was trained on -----------------------------------------------------------


@pytest.fixture(scope="module")
def two_datas():
    from dermgan.data.dataset import make_synthetic

    first, second = (make_synthetic(32, 60, seed=seed, workers=1).split("train") for seed in (3, 4))
    n = min(len(first), len(second))  # the same count and size: only the pixels and ids tell them apart
    return first.select(np.arange(n)), second.select(np.arange(n))


def test_generators_and_samples_of_other_data_are_refused_by_every_reader(tmp_path, two_datas):
    first, second = two_datas
    ctx = runtime.start("smoke", str(tmp_path), 0, "cpu", "synthetic", None,
                        dermgan={"steps": 2, "batch_size": 4, "base_filters": 4, "checkpoint_every": 0,
                                 "sample_every": 0, "log_every": 1})
    dg.train_variant("pix2pix", ctx, first)
    folder, trained_on, changed = tmp_path / "checkpoints" / "pix2pix", loop.data_fingerprint(first), \
        loop.data_fingerprint(second)
    G, meta = dg.evaluated_generator(folder, trained_on=trained_on)
    assert meta["training"] == {"data": trained_on, "code": load_checkpoint(folder / "generator.pt")["code"]}
    with pytest.raises(CheckpointError, match=r"generator\.pt was trained with data\.sha256="):
        dg.evaluated_generator(folder, trained_on=changed)

    images = np.zeros((3, 32, 32, 3), np.uint8)
    path = dg.write_samples(tmp_path, "pix2pix", images, [0, 1, 2], [1, 1, 1], [0, 1, 2],
                            {"training": meta["training"]})
    assert np.array_equal(dg.read_samples(path, trained_on)["images"], images)
    readers = {"read_samples": lambda p, d: dg.read_samples(p, d),
               "turing pool": lambda p, d: turing.pool_from_samples(p, (32, 32, 3), d)}
    for name, read in readers.items():
        with pytest.raises(provenance.ProvenanceError) as refused:
            read(path, changed)
        message = str(refused.value)
        assert "\n" not in message and str(path) in message and "data.sha256=" in message, name
        assert "notebook 02" in message, name  # the way out: who makes them anew
    meta_file = path.parent / "meta.json"
    meta_file.write_text(json.dumps({"model": "pix2pix", "steps": 2}))  # samples of a version before the record
    with pytest.raises(provenance.ProvenanceError, match="records no training data"):
        dg.read_samples(path, trained_on)


def test_a_lesion_editor_of_other_data_is_refused(tmp_path, two_datas):
    from dermgan.models import lesion_edit as le

    first, second = two_datas
    ctx = runtime.start("smoke", str(tmp_path), 0, "cpu", "synthetic", None,
                        lesion_edit={"steps": 2, "batch_size": 2})
    le.train_method("masked-remove", ctx, first)
    key = le.run_key(ctx.profile.lesion_edit, first)
    folder = tmp_path / "checkpoints" / "lesion_edit" / key / "masked-remove"
    editor = le.load_editor(folder, trained_on=loop.data_fingerprint(first))
    assert editor.training["data"] == loop.data_fingerprint(first)
    with pytest.raises(CheckpointError, match=r"generator\.pt was trained with data\.sha256="):
        le.load_editor(folder, trained_on=loop.data_fingerprint(second))


CHECKED_READERS = {"read_samples": 1, "evaluated_generator": None, "pool_from_samples": 2, "load_editor": None}


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")),
                         ids=lambda p: p.stem)
def test_every_notebook_checks_models_and_samples_against_its_data(notebook):
    """Each read of samples or a generator in a notebook passes the run's training data (`trained_on`), never
    None: 05 and 06 scored samples and generators of changed data because nothing checked them."""
    import ast

    import nbformat

    cells = [c.source for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"]
    for call in (node for tree in map(ast.parse, cells) for node in ast.walk(tree) if isinstance(node, ast.Call)):
        name = getattr(call.func, "attr", getattr(call.func, "id", None))
        if name not in CHECKED_READERS:
            continue
        position = CHECKED_READERS[name]
        given = {k.arg: k.value for k in call.keywords}.get("trained_on")
        if given is None and position is not None and len(call.args) > position:
            given = call.args[position]
        assert given is not None and not (isinstance(given, ast.Constant) and given.value is None), \
            f"{notebook.name}: {ast.unparse(call)} does not check the data the model was trained on"


# -- figures name every commit their numbers come from -------------------------------------------------------


def test_a_ham10000_figure_sidecar_lists_its_training_evaluation_and_drawing_commits(tmp_path):
    """A figure of HAM10000 samples and 05's scores: the sidecar names the commit 09 drew it at, the commits
    02 and 05 ran at (from the HAM10000 series manifest) and the commits that trained each model shown."""
    run = tmp_path / "runs" / "cpu-ham10000"
    dermgan_file = run / "checkpoints" / "dermgan" / "generator.pt"
    started, resumed = ({"by": "notebook 02_dermgan_training", "commit": "1" * 40, "step": 0},
                        {"by": "python -m dermgan train --profile cpu", "commit": "2" * 40, "step": 1500})
    digest = write_with_digest(dermgan_file, lambda f: f.write(b"weights"))
    provenance.write_training_record(dermgan_file, digest, {"dataset": "ham10000"}, [started, resumed])
    write(run, "samples/dcgan/meta.json", json.dumps(
        {"model": "dcgan", "training": {"data": {"dataset": "ham10000"},
                                        "code": [{"by": "notebook 03_melanogan_baselines", "commit": "3" * 40,
                                                  "step": 0}]}}))
    manifest = {"git_commit": "5" * 40, "notebooks": [{"notebook": "05_metrics.ipynb", "status": "ok"},
                                                    {"notebook": "09_figures.ipynb", "status": "running"}],
                "earlier_runs": [{"notebook": "02_dermgan_training.ipynb", "status": "ok",
                                  "git_commit": "4" * 40},
                                 {"notebook": "05_metrics.ipynb", "status": "ok", "git_commit": "6" * 40}]}
    commits = provenance.figure_commits(run, manifest, ["02", "05"], ["dermgan", "dcgan", "metrics_classifier"])
    viz.save_table(pd.DataFrame({"kid": ["0.19 [0.18, 0.20]"]}), tmp_path / "figures",
                   "09_metrics_ham10000", {"notebook": "09", "profile": "cpu", "dataset": "ham10000",
                                           "commits": commits}, "caption")
    sidecar = json.loads((tmp_path / "figures" / "09_metrics_ham10000.json").read_text())
    assert sidecar["data"] == "real dataset: ham10000"
    assert sidecar["commits"] == {
        "drawn": runtime.git_commit(),  # the commit 09 ran at
        "evaluated": {"02": "4" * 40, "05": "5" * 40},  # 05's own run replaces its earlier one
        "trained": {"dermgan": ["1" * 40, "2" * 40], "dcgan": ["3" * 40],
                    "metrics_classifier": [None]},  # a model without a record is named, unknown
    }
    assert viz.check_outputs(tmp_path / "figures", tables=["09_metrics_ham10000"]) == []


# -- the pipeline names the notebook to its kernel and records what trained every model ----------------------


def test_a_series_records_the_training_code_of_every_model_in_its_manifest(tmp_path):
    from test_pipeline import write_notebook

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "00_trains.ipynb", "\n".join([
        "import dermgan.runtime, dermgan.provenance as p, dermgan.train as t, torch",
        "ctx = dermgan.runtime.start(profile, run_dir, seed, device, dataset, data_root)",
        "path = ctx.path('checkpoints', 'm', 'generator.pt')",
        "p.write_training_record(path, t.save_atomic({'w': torch.zeros(1)}, path), None, p.continued(None, 0))"]))
    manifest = pipeline.run_series("smoke", notebooks, tmp_path / "out", run_dir=str(tmp_path / "run"),
                                   log=lambda *a, **k: None)
    (model, record), = manifest["models"].items()
    assert model == "checkpoints/m/generator.pt"
    assert record["code"] == [{"by": "notebook 00_trains", "commit": runtime.git_commit(), "step": 0}]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["models"] == manifest["models"]
    assert provenance.NOTEBOOK_VARIABLE not in os.environ  # named to the kernel only


# -- notebook 02 and `python -m dermgan train` ---------------------------------------------------------------


def test_notebook_02_and_the_train_command_train_the_same_model_bit_for_bit(tmp_path):
    """The README's "train outside, then run --from 02" workflow: both paths must train the identical model from
    identical settings (each resumes the other's checkpoint, so anything else would silently mix two models).
    They differed while weights were drawn from the global RNG after whatever the caller drew first (02 builds
    every variant for its parameter table before training)."""
    settings = ["-p", "steps=4", "-p", "seeds=1", "-p", "ablation_steps=1"]
    notebook = subprocess.run([sys.executable, "-m", "dermgan", "run", "--profile", "smoke", "--only", "02",
                               "--device", "cpu", "--run-dir", str(tmp_path / "nb"), "--output-dir",
                               str(tmp_path / "executed"), *settings], cwd=ROOT, capture_output=True, text=True)
    assert notebook.returncode == 0, notebook.stderr
    command = subprocess.run([sys.executable, "-m", "dermgan", "train", "--profile", "smoke", "--steps", "4",
                              "--device", "cpu", "--run-dir", str(tmp_path / "cli")], cwd=ROOT,
                             capture_output=True, text=True)
    assert command.returncode == 0, command.stderr
    for name in ("last.pt", "generator.pt"):
        a, b = (load_checkpoint(tmp_path / run / "checkpoints" / "dermgan" / name) for run in ("nb", "cli"))
        for part in ("generator", "ema", "discriminator", "opt_g", "opt_d", "critic"):
            if part in a:
                assert _same(a[part], b[part]), f"{name}: {part} differs"
        assert a["provenance"] == b["provenance"] and a["step"] == b["step"] == 4
        assert [e["by"] for e in a["code"]] == ["notebook 02_dermgan_training"]
        assert b["code"][0]["by"].startswith("python -m dermgan train --profile smoke")


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


# -- a seed fixes every network's initial weights ------------------------------------------------------------


def _first_weights(monkeypatch, build, draws: int) -> dict:
    """The initial weights of the networks `build()` trains: the loop (or the classifier's) is stopped before
    its first step. `draws` random numbers are drawn first, after any run context was made (which seeds
    everything): what a caller draws before building (02 builds every variant for its table) must not change
    them."""
    import dermgan.classify as classify
    from dermgan.models.classifier import SkinClassifier as real_classifier

    seen = {}

    def stop_loop(recipe, *args, **kwargs):
        seen.update({f"G.{k}": v.clone() for k, v in recipe.generator.state_dict().items()})
        seen.update({f"D.{k}": v.clone() for k, v in recipe.discriminator.state_dict().items()})
        raise Crash

    def stop_classifier(*args, **kwargs):
        model = real_classifier(*args, **kwargs)
        seen.update({k: v.clone() for k, v in model.state_dict().items()})
        raise Crash

    monkeypatch.setattr(loop, "train", stop_loop)
    monkeypatch.setattr(classify, "SkinClassifier", stop_classifier)
    torch.rand(draws), np.random.rand(draws)
    with pytest.raises(Crash):
        build()
    return seen


def _builders(tmp_path, data) -> dict:
    """network -> (seed -> a build with that seed, its run context made)."""
    from dermgan.classify import train_classifier
    from dermgan.config import ClassifierConfig
    from dermgan.models import lesion_edit as le
    from dermgan.models import melanogan as mg

    def in_run(train_one):
        def prepare(seed):
            ctx = runtime.start("smoke", str(tmp_path / f"run{seed}"), seed, "cpu", "synthetic", None)
            return lambda: train_one(ctx)
        return prepare

    pools = turing.pool_from_split(data)
    small = ClassifierConfig(width=4, epochs=1, batch_size=8)
    return {
        "dermgan (02, train)": in_run(lambda ctx: dg.train_variant("dermgan", ctx, data)),
        "melanogan (03)": in_run(lambda ctx: mg.train_model("dcgan", ctx, data)),
        "lesion editor (04)": in_run(lambda ctx: le.train_method("cyclegan-mask", ctx, data)),
        "classifier (04, 05, 07)": lambda seed: lambda: train_classifier(data, None, small, seed=seed),
        "two-sample classifier (08)": lambda seed: lambda: turing.classifier_two_sample_test(
            pools, pools, small, seed=seed, steps=1),
    }


@pytest.mark.parametrize("network", ["dermgan (02, train)", "melanogan (03)", "lesion editor (04)",
                                     "classifier (04, 05, 07)", "two-sample classifier (08)"])
def test_a_seed_fixes_the_initial_weights_of_every_trained_network(tmp_path, monkeypatch, two_datas, network):
    prepare = _builders(tmp_path, two_datas[0])[network]
    once, again, other = (_first_weights(monkeypatch, prepare(seed), draws) for seed, draws in ((7, 3), (7, 11),
                                                                                                (8, 3)))
    assert once and once.keys() == again.keys() == other.keys()
    assert all(torch.equal(once[k], again[k]) for k in once)
    assert any(not torch.equal(once[k], other[k]) for k in once if once[k].is_floating_point())
