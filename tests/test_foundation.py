"""Profiles, seeding, device choice, image conversions and the pinned environment."""

import dataclasses
import errno
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dermgan import config, imageops, runtime

sys.path.insert(0, str(Path(__file__).parent))
from test_sources import make_ham  # noqa: E402  (the reader tests' HAM10000 fixture)

ROOT = Path(__file__).resolve().parents[1]


def test_seed_everything_makes_numpy_and_torch_draws_identical():
    runtime.seed_everything(123)
    first = (np.random.rand(5), torch.rand(5), torch.randn(2, 3))
    runtime.seed_everything(123)
    second = (np.random.rand(5), torch.rand(5), torch.randn(2, 3))
    assert np.array_equal(first[0], second[0])
    assert torch.equal(first[1], second[1]) and torch.equal(first[2], second[2])
    runtime.seed_everything(124)
    assert not torch.equal(torch.rand(5), first[1])


def test_seed_everything_returns_a_generator_seeded_alike():
    a = runtime.seed_everything(7)
    b = runtime.seed_everything(7)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))


def test_pick_device_auto_prefers_cuda_and_falls_back_to_cpu():
    expected = "cuda" if torch.cuda.is_available() else None
    chosen = runtime.pick_device("auto")
    if expected:
        assert chosen.type == expected
    else:
        assert chosen.type in ("mps", "cpu")
    assert runtime.pick_device("cpu") == torch.device("cpu")


def test_pick_device_rejects_unknown_and_unavailable_devices():
    with pytest.raises(ValueError, match="unknown device"):
        runtime.pick_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            runtime.pick_device("cuda")


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown profile 'huge'.*cpu, paper, paper-dry, smoke"):
        config.get_profile("huge")


def test_profile_overrides_skip_none_and_reject_unknown_fields():
    base = config.get_profile("smoke")
    changed = base.replace(data={"image_size": 64, "n_images": None})
    assert changed.data.image_size == 64 and changed.data.n_images == base.data.n_images
    with pytest.raises(ValueError, match="unknown field.*'imagesize'"):
        base.replace(data={"imagesize": 48})
    with pytest.raises(ValueError, match="unknown profile section"):
        base.replace(nonsense={"x": 1})


@pytest.mark.parametrize("sections, message", [
    ({"data": {"image_size": 48}}, "data.image_size must be a power of two in \\[32, 512\\].*got 48"),
    ({"data": {"image_size": 1024}}, "data.image_size must be a power of two.*got 1024"),
    ({"data": {"image_size": 16}}, "data.image_size .*got 16"),
    ({"data": {"n_images": 0}}, "data.n_images must be an integer >= 1, got 0"),
    ({"data": {"val_fraction": 1.5}}, "data.val_fraction must be a number in \\[0, 1\\], got 1.5"),
    ({"data": {"val_fraction": 0.5, "test_fraction": 0.5}}, "val_fraction \\+ data.test_fraction must be < 1"),
    ({"dermgan": {"steps": 0}}, "dermgan.steps must be an integer >= 1, got 0"),
    ({"dermgan": {"steps": 2.5}}, "dermgan.steps must be an integer >= 1, got 2.5"),
    ({"dermgan": {"dropout": -0.1}}, "dermgan.dropout must be a number in \\[0, 1\\]"),
    ({"dermgan": {"gan_loss": "wgan"}}, "dermgan.gan_loss must be one of 'vanilla', 'lsgan', 'hinge', got 'wgan'"),
    ({"dermgan": {"lr": "fast"}}, "dermgan.lr must be a number > 0, got 'fast'"),
    ({"metrics": {"kid_subset_size": 1}}, "metrics.kid_subset_size must be an integer >= 2, got 1"),
    ({"classifier": {"epochs": 0}}, "classifier.epochs must be an integer >= 1, got 0"),
    # issue 24: these sections had no range checks at all
    ({"turing": {"c2st_steps": 0}}, "turing.c2st_steps must be an integer >= 1, got 0"),
    ({"turing": {"n_per_model": 0}}, "turing.n_per_model must be an integer >= 1, got 0"),
    ({"augmentation": {"seeds": 0}}, "augmentation.seeds must be an integer >= 1, got 0"),
    ({"augmentation": {"epochs": 0}}, "augmentation.epochs must be an integer >= 1, got 0"),
    ({"augmentation": {"architecture": "foo"}},
     "augmentation.architecture must be one of 'efficientnet_lite0', 'small', 'resnet18'"),
    ({"augmentation": {"weights": "w.pt"}}, "augmentation.weights is a ResNet-18 state dict, but architecture"),
    ({"augmentation": {"melanoma_keep": 1.5}}, "augmentation.melanoma_keep must be None or a number in \\(0, 1\\)"),
    ({"augmentation": {"melanoma_keep": 0}}, "augmentation.melanoma_keep must be None or a number in \\(0, 1\\)"),
    ({"lesion_edit": {"steps": -3}}, "lesion_edit.steps must be an integer >= 1, got -3"),
    ({"lesion_edit": {"gan_loss": "wgan"}}, "lesion_edit.gan_loss must be one of"),
    ({"melanogan": {"steps": 0}}, "melanogan.steps must be an integer >= 1, got 0"),
    ({"melanogan": {"pyramid_levels": 1}}, "melanogan.pyramid_levels must be an integer >= 2"),
    ({"dermgan": {"seeds": 0}}, "dermgan.seeds must be an integer >= 1, got 0"),
    ({"dermgan": {"beta1": 1.0}}, "dermgan.beta1 must be a number in \\[0, 1\\), got 1.0"),  # Adam refuses 1
    ({"dermgan": {"dropout": True}}, "dermgan.dropout must be a number in \\[0, 1\\], got True"),
    ({"classifier": {"width": 1}}, "classifier.width must be an integer >= 2"),  # SkinClassifier's minimum
])
def test_profile_sections_refuse_values_out_of_range(sections, message):
    with pytest.raises(ValueError, match=message):
        config.get_profile("smoke").replace(**sections)


def test_ranges_accept_the_limits_and_every_shipped_profile():
    smoke = config.get_profile("smoke")
    assert smoke.replace(data={"image_size": 32}).data.image_size == 32
    assert smoke.replace(data={"image_size": 512}).data.image_size == 512
    assert smoke.replace(dermgan={"dropout": 0.0, "decay_start": 1.0}).dermgan.dropout == 0.0
    assert smoke.replace(dermgan={"steps": np.int64(3)}).dermgan.steps == 3  # numpy integers are integers
    assert set(config.PROFILES) == {"smoke", "cpu", "paper", "paper-dry"}  # constructing them ran every check


def test_every_bad_value_of_a_request_is_named_at_once():
    with pytest.raises(ValueError) as caught:
        config.get_profile("smoke").replace(turing={"c2st_steps": 0, "n_per_model": 0},
                                            augmentation={"seeds": 0})
    message = str(caught.value)
    assert "\n" not in message
    for name in ("turing.c2st_steps", "turing.n_per_model", "augmentation.seeds"):
        assert f"{name} must be an integer >= 1, got 0" in message


def test_a_section_field_without_a_range_rule_is_a_programming_error():
    @dataclasses.dataclass(frozen=True)
    class Section:
        steps: int = 1
        forgotten: int = 0

        def __post_init__(self):
            config._validate(self, "section", steps=config.AT_LEAST_1)

    with pytest.raises(TypeError, match=r"Section fields \['forgotten'\] have no range rule"):
        Section()


@pytest.mark.parametrize("size", [16, 32, 64, 512, 1024])
def test_the_profiles_and_the_renderer_accept_the_same_power_of_two_sizes(size):
    from dermgan.data import synth

    def accepted(check):
        try:
            check()
            return True
        except ValueError:
            return False

    assert accepted(lambda: config.DataConfig(image_size=size)) == accepted(lambda: synth.check_size(size))


def test_every_profile_fills_every_section():
    for profile in config.PROFILES.values():
        for section in ("data", "dermgan", "classifier", "metrics"):
            assert getattr(profile, section) is not None
    assert config.PROFILES["smoke"].data.image_size < config.PROFILES["cpu"].data.image_size
    assert config.PROFILES["paper"].data.image_size == 256


def test_image_conversion_round_trip_is_exact_for_uint8():
    images = np.random.default_rng(0).integers(0, 256, size=(3, 5, 7, 3), dtype=np.uint8)
    tensor = imageops.to_model(images)
    assert tensor.shape == (3, 3, 5, 7) and tensor.dtype == torch.float32
    assert torch.allclose(tensor, torch.from_numpy(images / 127.5 - 1).float().permute(0, 3, 1, 2), atol=1e-6)
    assert np.array_equal(imageops.to_uint8(tensor), images)


def test_image_conversion_known_values_and_clipping():
    assert imageops.to_model(np.array([[[0, 255, 0]]], dtype=np.uint8)).flatten().tolist() == [-1.0, 1.0, -1.0]
    out = imageops.to_uint8(torch.tensor([-3.0, 0.0, 3.0]).view(1, 3, 1, 1))
    assert out.flatten().tolist() == [0, 128, 255]  # 127.5 rounds half to even -> 128
    with pytest.raises(TypeError, match="uint8"):
        imageops.to_model(np.zeros((2, 2, 3), dtype=np.float32))


def test_run_directories_resolve_against_the_project_root(tmp_path, monkeypatch):
    monkeypatch.delenv("DERMGAN_HOME", raising=False)
    monkeypatch.chdir(ROOT / "notebooks")
    assert runtime.resolve_run_dir("runs/x", create=False) == ROOT / "runs" / "x"
    assert runtime.resolve_run_dir(tmp_path / "abs", create=True).is_dir()


def test_outside_a_checkout_runs_go_to_the_working_directory_and_it_says_so(tmp_path, monkeypatch, capsys):
    # a non-editable install: the package lives in site-packages, with no pyproject.toml above it
    monkeypatch.delenv("DERMGAN_HOME", raising=False)
    monkeypatch.setattr(runtime, "__file__", str(tmp_path / "site-packages" / "dermgan" / "runtime.py"))
    monkeypatch.setattr(runtime, "_announced_home", set())
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert runtime.project_root() == work
    assert runtime.resolve_run_dir("runs/x", create=False) == work / "runs" / "x"
    note = capsys.readouterr().err
    assert "not inside a dermgan checkout" in note and "DERMGAN_HOME" in note and note.count("\n") == 1
    monkeypatch.setenv("DERMGAN_HOME", str(tmp_path / "home"))
    assert runtime.project_root() == tmp_path / "home"


def test_default_run_dir_names_the_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("DERMGAN_HOME", str(tmp_path))
    assert runtime.start("smoke", device="cpu").run_dir == tmp_path / "runs" / "smoke"
    make_ham(tmp_path / "ham")  # start reads its image headers: the image size depends on them
    ham = runtime.start("smoke", device="cpu", dataset="ham10000", data_root=str(tmp_path / "ham"))
    assert ham.run_dir == tmp_path / "runs" / "smoke-ham10000"
    with pytest.raises(ValueError, match="dataset name '../x'"):
        runtime.run_name("smoke", "../x")


def test_a_run_dir_records_what_made_it_and_refuses_other_settings(tmp_path):
    run = str(tmp_path / "run")
    runtime.start("smoke", run, device="cpu")
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["dataset"] == "synthetic" and record["data"]["image_size"] == 32 and record["seed"] == 0
    runtime.start("smoke", run, device="cpu", dermgan={"steps": 3})  # training settings are not the run's identity
    refusals = [
        (dict(seed=1), "seed: 0 in run.json, 1 asked for now"),
        (dict(dataset="ham10000", data_root=str(tmp_path)), "dataset: 'synthetic' in run.json, 'ham10000'"),
        (dict(data={"image_size": 64}), "data.image_size: 32 in run.json, 64 asked for now"),
        (dict(profile="cpu"), "profile: 'smoke' in run.json, 'cpu' asked for now"),
    ]
    for change, message in refusals:
        arguments = {"profile": "smoke", "run_dir": run, "device": "cpu", **change}
        with pytest.raises(runtime.RunDirMismatch, match=message) as caught:
            runtime.start(**arguments)
        assert "another run dir" in str(caught.value) and f"delete {run}" in str(caught.value)
    (tmp_path / "run" / "run.json").write_text('{"profile": "sm')
    with pytest.raises(runtime.RunDirMismatch, match="run.json cannot be read"):
        runtime.start("smoke", run, device="cpu")


def test_the_smoke_profile_pins_one_thread_and_the_others_keep_torchs(tmp_path):
    """nbval compares smoke's executed notebooks digit for digit; sums split over 2 threads round differently,
    so smoke runs on one thread on every machine. Other profiles leave torch's default alone."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        runtime.start("cpu", str(tmp_path / "cpu"), device="cpu")
        assert torch.get_num_threads() == 2
        runtime.start("smoke", str(tmp_path / "smoke"), device="cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for wrong in (0, 1.5, True):
        with pytest.raises(ValueError, match=f"threads must be None or an integer >= 1, got {wrong!r}"):
            dataclasses.replace(config.get_profile("cpu"), threads=wrong)


def test_a_notebook_without_data_parameters_takes_them_from_run_json(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    identity = runtime.run_identity(config.get_profile("smoke").replace(data={"image_size": 64}), 0, "synthetic", None)
    runtime.claim_run_dir(run, identity)
    ctx = runtime.start("smoke", str(run), device="cpu")
    assert ctx.profile.data.image_size == 64
    assert "image_size = 64 (the smoke profile says 32)" in capsys.readouterr().out


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    runtime.write_text_atomic(path, "old")
    assert path.read_text() == "old"

    def broken_replace(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runtime.os, "replace", broken_replace)
    with pytest.raises(OSError):
        runtime.write_text_atomic(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_kernel_noise_filter_drops_exactly_the_two_harmless_lines():
    import logging

    keep = runtime.KernelNoiseFilter().filter
    record = lambda text: logging.LogRecord("IPKernelApp", logging.WARNING, "", 0, text, None, None)  # noqa: E731
    assert not keep(record("Kernel is running over TCP without encryption. All communication ..."))
    assert not keep(record("KeyboardInterrupt caught in kernel."))
    assert keep(record("Exception in message handler:")) and keep(record("Kernel died"))
    import zmq

    def handler_error(error):
        try:
            raise error
        except Exception:
            return logging.LogRecord("IPKernelApp", logging.ERROR, "", 0, "Exception in message handler:", None,
                                     sys.exc_info())

    assert not keep(handler_error(zmq.error.ZMQError(errno.ENOTSOCK)))  # reply after the pipeline's shutdown
    assert keep(handler_error(zmq.error.ZMQError(errno.EAGAIN))) and keep(handler_error(ValueError("real")))


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.strip().removeprefix("- ").strip()
        match = re.fullmatch(r"(?:--no-deps\s+)?([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins


def test_environment_yml_pins_exactly_the_pinned_requirements():
    requirements = _pins((ROOT / "requirements.txt").read_text().splitlines())
    requirements |= _pins((ROOT / "requirements-weights.txt").read_text().splitlines())
    conda = _pins((ROOT / "environment.yml").read_text().splitlines())
    assert requirements, "no pins found in requirements.txt"
    assert conda == requirements


def test_environment_report_names_device_and_versions():
    report = runtime.environment_report("cpu")
    assert report["device"] == "cpu"
    assert report["packages"]["torch"] == torch.__version__.split("+")[0]
