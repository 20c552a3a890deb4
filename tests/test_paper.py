"""Issue 29: the paper profile a GPU user can trust. Its dry run (the paper profile's sizes, counts cut), the
time and memory estimates, the image size a real dataset allows, the batch prefetch, and the prepared GPU
session's CPU path."""

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dermgan import config, estimate, pipeline, runtime
from dermgan import train as loop
from dermgan.data import sizes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "benchmarks"))
from test_sources import make_dermamnist, make_ham, write_csv, write_image  # noqa: E402

PAPER, DRY = config.get_profile("paper"), config.get_profile("paper-dry")


# ---------------------------------------------------------------------------------------------- the dry run

def test_the_dry_run_differs_from_the_paper_profile_only_in_the_counts_it_cuts():
    for section, values in dataclasses.asdict(PAPER).items():
        if not isinstance(values, dict):
            continue
        cut = config.DRY_RUN_CUTS.get(section, {})
        for name, value in values.items():
            dry = getattr(getattr(DRY, section), name)
            if name not in cut:  # sizes, widths, architectures, settings: the paper's own
                assert dry == value, (section, name)
            else:  # a count: a handful, never more than the paper's (0 / None there mean "all")
                assert dry == cut[name] and (not value or dry <= value), (section, name, dry, value)
    assert DRY.name == "paper-dry" and not DRY.publish and PAPER.publish
    # what the issue names: 256 px, 64 filters, 5,000-sample settings, 25-per-model pages; 07's classifier is
    # EfficientNet-Lite0 (issue 26) where issue 29 named ResNet-18
    assert (DRY.data.image_size, DRY.dermgan.base_filters, DRY.augmentation.architecture) == \
        (256, 64, "efficientnet_lite0")
    assert (DRY.metrics.kid_subset_size, DRY.metrics.inception_precision, DRY.turing.n_per_model) == \
        (1000, "fp32", 25)


def test_dry_run_names():
    assert config.dry_run_name("paper") == config.dry_run_name("paper-dry") == "paper-dry"
    with pytest.raises(ValueError, match="profile 'cpu' has no dry run; --dry-run is for: paper"):
        config.dry_run_name("cpu")


def test_dry_run_option_runs_the_dry_profile_outside_papermill_runs(monkeypatch):
    asked = {}
    monkeypatch.setattr(pipeline, "run_series", lambda *args, **kwargs: asked.update(args=args, **kwargs)
                        or {"notebooks": [], "total_wall_s": 0})
    assert pipeline.main(["run", "--profile", "paper", "--dry-run", "--only", "00"]) == 0
    profile, _, output_dir = asked["args"]
    assert profile == "paper-dry" and asked["run_dir"] == "runs/paper-dry"
    assert output_dir == runtime.project_root() / "runs" / "paper-dry" / "executed"  # not a reported series
    assert pipeline.main(["run", "--profile", "cpu", "--dry-run"]) == 1  # refused in one line


@pytest.mark.paper
def test_the_paper_dry_run_executes_every_notebook(tmp_path):
    """`make test-paper`: every notebook at 256 px, 64 filters, ResNet-18, ... (tens of minutes, 2 cores)."""
    manifest = pipeline.run_series("paper-dry", ROOT / "notebooks", tmp_path / "executed",
                                   run_dir=str(tmp_path / "run"), log=lambda *a, **k: None)
    assert [e["status"] for e in manifest["notebooks"]] == ["ok"] * 10
    samples = np.load(tmp_path / "run" / "samples" / "dermgan" / "samples.npz")["images"]
    assert samples.shape[1:] == (256, 256, 3)


# ---------------------------------------------------------------------------------------------- image sizes

def test_largest_power_of_two():
    sides = (1, 31, 32, 150, 255, 256, 257)
    assert [sizes.largest_power_of_two(n) for n in sides] == [1, 16, 32, 128, 128, 256, 256]


def ham_of_side(root: Path, width: int, height: int) -> pd.DataFrame:
    """A HAM10000 folder (images and masks) whose images are width x height."""
    from test_sources import write_mask

    frame = make_ham(root, n_lesions=14)
    for path in root.rglob("*.jpg"):
        write_image(path, size=(width, height))
    for path in root.rglob("*_segmentation.png"):
        write_mask(path, size=(width, height), box=(2, 2, 10, 10))
    return frame


def profile_at(size: int, **data) -> config.Profile:
    return config.get_profile("cpu").replace(data={"image_size": size, **data})


def test_a_real_dataset_gets_the_largest_power_of_two_its_images_hold(tmp_path):
    ham_of_side(tmp_path / "ham", 100, 75)  # like HAM10000's 200 x 150: the centre square is 75 px
    lines = []
    fitted = sizes.fit_image_size(profile_at(256), "ham10000", tmp_path / "ham", False, log=lines.append)
    assert fitted.data.image_size == 64 and "image_size 64 px" in lines[0] and "75 px" in lines[0]
    kept = sizes.fit_image_size(profile_at(64), "ham10000", tmp_path / "ham", explicit=True)
    assert kept.data.image_size == 64  # 64 <= 75: downsampled, as asked
    assert sizes.fit_image_size(profile_at(256), "synthetic", None, explicit=True).data.image_size == 256


def test_an_explicit_size_beyond_the_images_is_refused_unless_upsampling_is_allowed(tmp_path):
    ham_of_side(tmp_path / "ham", 100, 75)
    with pytest.raises(sizes.UpsamplingRefused) as refused:
        sizes.fit_image_size(profile_at(128), "ham10000", tmp_path / "ham", explicit=True)
    message = str(refused.value)
    assert "\n" not in message and "75 px" in message and "image_size 128" in message
    assert "image_size <= 64" in message and "allow_upsampling" in message
    allowed = sizes.fit_image_size(profile_at(128, allow_upsampling=True), "ham10000", tmp_path / "ham", True)
    assert allowed.data.image_size == 128


def test_images_below_the_smallest_size_are_refused_even_at_the_profiles_size(tmp_path):
    make_dermamnist(tmp_path / "derma", side=28)  # in-memory source: its largest resolution counts
    with pytest.raises(sizes.UpsamplingRefused, match="28 px .* no image size of at least 32 px fits them"):
        sizes.fit_image_size(profile_at(64), "dermamnist", tmp_path / "derma", explicit=False)


def test_the_pipeline_refuses_an_enlarging_size_up_front_and_records_the_fitted_one(tmp_path, monkeypatch):
    ham_of_side(tmp_path / "ham", 100, 75)
    common = dict(run_dir=str(tmp_path / "run"), dataset="ham10000", data_root=str(tmp_path / "ham"),
                  only="00", log=lambda *a, **k: None)
    with pytest.raises(pipeline.RunRefused) as refused:
        pipeline.run_series("cpu", ROOT / "notebooks", tmp_path / "out", overrides={"image_size": "128"},
                            **common)
    assert len(refused.value.problems) == 1 and "75 px" in refused.value.problems[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()  # nothing written
    monkeypatch.setattr(pipeline, "execute", lambda notebook, output, *args: output.write_text("{}"))
    manifest = pipeline.run_series("paper", ROOT / "notebooks", tmp_path / "out", **common)
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())["data"]
    assert recorded["image_size"] == 64 and manifest["profile_config"]["data"]["image_size"] == 64
    # a notebook of that run directory adopts the recorded size
    assert runtime.start("paper", str(tmp_path / "run"), 0, "cpu", "ham10000",
                         str(tmp_path / "ham")).profile.data.image_size == 64
    runtime.release_run_dir(tmp_path / "run")


def test_a_run_json_older_than_allow_upsampling_stays_valid(tmp_path):
    profile = config.get_profile("smoke")
    identity = runtime.run_identity(profile, 0, "synthetic", None)
    older = {**identity, "data": {k: v for k, v in identity["data"].items() if k != "allow_upsampling"}}
    (tmp_path / "run.json").write_text(json.dumps(older))
    assert runtime.check_run_dir(tmp_path, identity) is False  # accepted: it has a record
    changed = runtime.run_identity(profile.replace(data={"allow_upsampling": True}), 0, "synthetic", None)
    with pytest.raises(runtime.RunDirMismatch, match="allow_upsampling: False in run.json, True asked for"):
        runtime.check_run_dir(tmp_path, changed)


# ---------------------------------------------------------------------------------------------- estimates

UNIT = {"s_per_step": 2.0, "s_per_image": 0.5, "peak_mb": 100.0}


def test_each_notebooks_work_is_counted_from_the_profile():
    smoke = config.get_profile("smoke")
    c = estimate.counts_of(smoke)
    assert c.n_train + c.n_val + c.n_test == 400 and c.synthetic and c.masks and c.healthy
    items = estimate.work_of("02", smoke, c)
    # main DermGAN 30 steps; no ablation at smoke: pix2pix and dermgan, 2 seeds x 10 steps each; the comparison
    # (1 seed, the main schedule: its dermgan run is the main one) adds OASIS and the projected D, 30 steps each;
    # each of the 1 + 2 x 2 + 2 runs samples the whole test split (n_eval 0)
    assert [(w.unit, w.count) for w in items] == [("dermgan/dermgan", 30), ("dermgan/pix2pix", 20),
                                                  ("dermgan/dermgan", 20), ("oasis/oasis", 30),
                                                  ("dermgan/dermgan-projected", 30), ("sample/dermgan", 7 * c.n_test)]
    priced = estimate.price("02", items, {"dermgan/dermgan": UNIT, "dermgan/pix2pix": UNIT, "oasis/oasis": UNIT,
                                          "dermgan/dermgan-projected": UNIT,
                                          "sample/dermgan": {**UNIT, "peak_mb": 300.0}})
    assert priced.seconds == (30 + 20 + 20 + 30 + 30) * 2 + 7 * c.n_test * 0.5 and priced.peak_mb == 300
    # 07: 7 arms, and the imbalance protocol's 4 + one per melanoma-only model (4) + one per candidate cut (2),
    # 2 seeds, 1 epoch each, with EfficientNet; and the small CNN's baseline, 2 seeds of 1 epoch
    assert c.melanoma_train >= smoke.melanogan.batch_size
    assert [(w.unit, w.count) for w in estimate.work_of("07", smoke, c)] == [
        ("classifier/efficientnet_lite0", (7 + 4 + 4 + 2) * 2 * (1 * (c.n_train + c.n_val) + c.n_test)),
        ("classifier/small", 2 * (1 * (c.n_train + c.n_val) + c.n_test))]
    assert estimate.work_of("04", smoke, dataclasses.replace(c, masks=False)) == []  # no masks: 04 skips


def test_05_prices_inception_for_the_sets_03_has_not_cached():
    """With Inception on, 05 extracts the real reference, the three test-split references, the main DermGAN and
    02's compared runs; the MelanoGAN sets are 03's, read from the run's feature cache."""
    smoke = config.get_profile("smoke").replace(metrics={"inception": True}, compare={"seeds": 3, "steps": 10})
    c = estimate.counts_of(smoke)
    n = smoke.metrics.n_samples  # 60, below every split's size
    assert n < min(c.n_train, c.n_test)
    # the comparison at 10 steps is not the main schedule (30): 3 dermgan + 3 OASIS + 3 projected runs
    assert [(w.unit, w.count) for w in estimate.work_of("05", smoke, c)] == [
        ("classifier/small", smoke.classifier.epochs * (c.n_train + c.n_val)),
        ("inception", (1 + 3 + 1 + 9) * n)]
    assert estimate.held_images("05", smoke, c) == (1 + 3 + 1 + 9 + 9) * n  # held: the MelanoGAN sets too
    assert len(estimate._melanogan_models(smoke, c)) == 9


def test_an_unmeasured_unit_makes_the_time_a_lower_bound_and_says_so():
    smoke = config.get_profile("smoke")
    found = estimate.price("02", estimate.work_of("02", smoke, estimate.counts_of(smoke)),
                           {"dermgan/dermgan": UNIT})
    # pix2pix and the projected D, unmeasured here, are priced as DermGAN (estimate.STAND_INS); OASIS and the
    # samples cannot be priced
    assert found.unmeasured == ["oasis/oasis", "sample/dermgan"] and found.seconds == (30 + 20 + 20 + 30) * 2
    lines = estimate.report(smoke, estimate.counts_of(smoke), ["02_dermgan_training"], torch.device("cpu"),
                            {"smoke": {"cpu": {"units": {"dermgan/dermgan": UNIT}, "machine": {}}}})
    assert ">= 3.3 min" in lines[3] and "not measured here: oasis/oasis, sample/dermgan" in lines[3]  # 200 s
    assert lines[-1].startswith("total") and ">= 3.3 min" in lines[-1]
    none = estimate.report(smoke, estimate.counts_of(smoke), ["02_dermgan_training"], torch.device("cpu"), {})
    assert "no unit costs of the smoke profile measured on cpu" in none[1] and "not measured" in none[3]
    # another profile's costs are other sizes' costs: never used, only named
    other = estimate.report(smoke, estimate.counts_of(smoke), ["02_dermgan_training"], torch.device("cpu"),
                            {"paper": {"cpu": {"units": {"dermgan/dermgan": UNIT}, "machine": {}}}})
    assert "(measured: paper on cpu)" in other[1] and "not measured" in other[3]


def test_a_cached_trunk_priced_per_epoch_makes_the_time_an_upper_bound_and_says_so():
    smoke = config.get_profile("smoke")
    c = estimate.counts_of(smoke)
    units = {"classifier/efficientnet_lite0": UNIT, "classifier/small": UNIT}
    assert estimate.price("07", estimate.work_of("07", smoke, c), units).upper
    small = dataclasses.replace(smoke, augmentation=dataclasses.replace(smoke.augmentation, architecture="small"))
    assert not estimate.price("07", estimate.work_of("07", small, c), units).upper  # nothing cached: exact
    lines = estimate.report(smoke, c, ["07_augmentation"], torch.device("cpu"),
                            {"smoke": {"cpu": {"units": units, "machine": {}}}})
    assert lines[3].split()[1] == "<=" and "an upper bound" in lines[3]
    assert lines[-1].split()[1] == "<="


def test_the_committed_costs_price_every_unit_of_the_paper_profile_on_the_cpu():
    costs = estimate.load_costs()["paper"]
    units = costs["cpu"]["units"]
    counts = estimate.counts_of(PAPER)
    for number in estimate.WORK:
        found = estimate.price(number, estimate.work_of(number, PAPER, counts), units)
        assert found.unmeasured == [], number
    assert costs["cpu"]["profile"] == "paper"
    assert any(key.startswith("cuda:") for key in costs)  # the H100 DermGAN step, from cuda_train_step.json


def test_list_with_a_profile_prints_every_notebook_and_the_total(capsys):
    assert pipeline.main(["list", "--profile", "paper", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [line.split()[0] for line in lines[3:-1]] == notebooks and lines[-1].startswith("total")
    assert lines[1].startswith("unit costs: cpu (")


# ---------------------------------------------------------------------------------------------- the loop

def test_batches_on_the_device_are_the_loaders_batches_in_order():
    data = torch.utils.data.TensorDataset(torch.arange(40.0).reshape(20, 2), torch.arange(20))
    loader = torch.utils.data.DataLoader(data, batch_sampler=loop.StepBatches(20, 4, 0, 0, 7))
    moved = list(loop._on_device(loader, torch.device("cpu"), channels_last=False))
    expected = list(loader)
    assert len(moved) == 7 and all(torch.equal(a, b) for m, e in zip(moved, expected) for a, b in zip(m, e))


def test_the_benchmarks_plain_step_is_the_loops_math():
    """bench_train_step's loop/plain ratio compares like with like: the same losses, bit for bit."""
    import bench_train_step as bench

    data = bench.fake_batches(32)
    _, logged = bench.loop_run(32, 3, data)
    _, plain = bench.plain_run(32, 3, data)
    assert set(logged) <= set(plain) and bench.loss_match(logged, plain) == 0.0


# ---------------------------------------------------------------------------------------------- GPU session

def make_isic2017(root: Path, per_part=(("Training", 30), ("Validation", 6), ("Test_v2", 12))) -> None:
    n = 0
    for part, count in per_part:
        rows = []
        for k in range(count):
            name = ("melanoma", "seborrheic_keratosis", "nevus")[k % 3]
            rows.append({"image_id": f"ISIC_{n:07d}", "melanoma": float(name == "melanoma"),
                         "seborrheic_keratosis": float(name == "seborrheic_keratosis")})
            write_image(root / f"ISIC-2017_{part}_Data" / f"ISIC_{n:07d}.jpg", size=(40, 40), seed=n)
            n += 1
        write_csv(root / f"ISIC-2017_{part}_Part3_GroundTruth.csv", rows)


def test_the_gpu_session_runs_its_cpu_path_and_writes_named_results(tmp_path, monkeypatch):
    import _report
    import gpu_paper_run

    make_isic2017(tmp_path / "isic")
    make_ham(tmp_path / "ham", n_lesions=30)
    monkeypatch.setattr(_report, "RESULTS", tmp_path / "results")
    found = gpu_paper_run.session(str(tmp_path / "isic"), str(tmp_path / "ham"), gpu_paper_run.TINY, "cpu")
    assert found["name"].startswith("gpu_paper_run_cpu_")
    record = json.loads((tmp_path / "results" / f"{found['name']}.json").read_text())
    rows = pd.DataFrame(record["rows"])
    assert list(rows["model"]) == ["real train (floor)", "dcgan", "lapgan", "ddgan-upsample", "ddgan-deconv",
                                   "real train (floor)", "dermgan"]
    assert np.isfinite(rows[["kid", "precision", "colour_jsd"]].to_numpy(float)).all()
    assert rows.loc[rows.model == "dcgan", "reported JSD (unverified)"].item() == 0.00458
    assert np.isfinite(record["loop_plain"]["loop/plain"]) and record["card"] == "cpu"
    from PIL import Image

    grid = Image.open(tmp_path / "results" / f"{found['name']}_isic2017.png")
    assert grid.size[1] == 5 * (32 + 2) + 2  # four models and the real test images, one row each, 32 px
