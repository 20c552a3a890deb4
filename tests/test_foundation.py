"""Profiles, seeding, device choice, image conversions and the pinned environment."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dermgan import config, imageops, runtime

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
    with pytest.raises(ValueError, match="unknown profile 'huge'.*cpu, paper, smoke"):
        config.get_profile("huge")


def test_profile_overrides_skip_none_and_reject_unknown_fields():
    base = config.get_profile("smoke")
    changed = base.replace(data={"image_size": 48, "n_images": None})
    assert changed.data.image_size == 48 and changed.data.n_images == base.data.n_images
    with pytest.raises(ValueError, match="unknown field.*'imagesize'"):
        base.replace(data={"imagesize": 48})
    with pytest.raises(ValueError, match="unknown profile section"):
        base.replace(nonsense={"x": 1})


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
    assert tensor.min() >= -1 and tensor.max() <= 1
    assert np.array_equal(imageops.to_uint8(tensor), images)


def test_image_conversion_known_values_and_clipping():
    assert imageops.to_model(np.array([[[0, 255, 0]]], dtype=np.uint8)).flatten().tolist() == [-1.0, 1.0, -1.0]
    out = imageops.to_uint8(torch.tensor([-3.0, 0.0, 3.0]).view(1, 3, 1, 1))
    assert out.flatten().tolist() == [0, 128, 255]  # 127.5 rounds half to even -> 128
    with pytest.raises(TypeError, match="uint8"):
        imageops.to_model(np.zeros((2, 2, 3), dtype=np.float32))


def test_run_directories_resolve_against_the_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT / "notebooks")
    assert runtime.resolve_run_dir("runs/x", create=False) == ROOT / "runs" / "x"
    assert runtime.resolve_run_dir(tmp_path / "abs", create=True).is_dir()


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
