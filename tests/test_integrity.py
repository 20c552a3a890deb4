"""Nothing lost, nothing silently wrong: content hashes of checkpoints, dataset caches and sample files; loss
logs that stay with their checkpoint; a full disk said as such."""

import csv
import dataclasses
import errno
import hashlib
import io
import os

import numpy as np
import pytest
import torch

import dermgan.train as loop
from dermgan import integrity
from dermgan.integrity import IntegrityError, verify_digest, write_with_digest
from dermgan.models import dermgan as dg
from dermgan.train import CheckpointError, TrainConfig, load_checkpoint, train
from test_train import ToyPairs, tiny_recipe

torch.set_num_threads(1)


class Stop(Exception):
    """What a kill or Ctrl-C does to the loop, raised from on_step."""


# what a samples file says trained its model (provenance.training_of): these tests read it without a run's data
TRAINED = {"training": {"data": {"dataset": "synthetic", "data_root": None, "image_size": 8, "n": 2,
                                 "sha256": "0" * 16}, "code": [{"by": "test", "commit": None, "step": 0}]}}


def _config(**changes):
    base = TrainConfig(steps=4, batch_size=4, checkpoint_every=2, log_every=1, seed=2, device="cpu")
    return dataclasses.replace(base, **changes)


def _stop_at(step_wanted):
    def on_step(step):
        if step == step_wanted:
            raise Stop

    return on_step


def _steps_and_losses(log):
    with open(log, newline="") as f:
        return [(int(row["step"]), row["loss_g"]) for row in csv.DictReader(f)]


def _flip(path, start, n):
    """Invert n bytes of a file from `start` on."""
    with open(path, "r+b") as f:
        f.seek(start)
        data = f.read(n)
        f.seek(start)
        f.write(bytes(b ^ 0xFF for b in data))


# -- the digest helper --------------------------------------------------------------------------------------


def test_the_sidecar_holds_the_sha256_of_the_bytes_in_sha256sums_format(tmp_path):
    path = tmp_path / "x.bin"
    digest = write_with_digest(path, lambda f: f.write(b"dermgan" * 1000))
    assert digest == hashlib.sha256(b"dermgan" * 1000).hexdigest()  # hashlib on the bytes, independently
    assert (tmp_path / "x.bin.sha256").read_text() == f"{digest}  x.bin\n"
    verify_digest(path)
    write_with_digest(path, lambda f: f.write(b"again"))  # a replacement leaves only the new digest
    assert (tmp_path / "x.bin.sha256").read_text() == f"{hashlib.sha256(b'again').hexdigest()}  x.bin\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin", "x.bin.sha256"]


def test_a_kill_at_any_step_of_a_replacement_leaves_a_file_its_sidecar_vouches_for(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    write_with_digest(path, lambda f: f.write(b"old"))
    real_replace = os.replace

    def killed_before_the_rename(src, dst):  # the sidecar already lists the new digest
        if str(dst) == str(path):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_before_the_rename)
    with pytest.raises(KeyboardInterrupt):
        write_with_digest(path, lambda f: f.write(b"new"))
    monkeypatch.setattr(os, "replace", real_replace)
    assert path.read_bytes() == b"old"
    verify_digest(path)  # the old file is intact and still accepted

    real_sidecar = integrity._write_sidecar
    calls = []

    def killed_after_the_rename(p, digests):  # the file is new, the sidecar still lists both digests
        calls.append(digests)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_sidecar(p, digests)

    monkeypatch.setattr(integrity, "_write_sidecar", killed_after_the_rename)
    with pytest.raises(KeyboardInterrupt):
        write_with_digest(path, lambda f: f.write(b"newer"))
    assert path.read_bytes() == b"newer"
    verify_digest(path)
    path.write_bytes(b"neither")  # but no other content passes
    with pytest.raises(IntegrityError, match="is damaged"):
        verify_digest(path)


# -- the three kinds of records -----------------------------------------------------------------------------


def _weight_offset(path, tensor):
    """Where the bytes of `tensor` (a weight of the file) lie in the torch archive (stored uncompressed)."""
    data = path.read_bytes()
    offset = data.find(tensor.numpy().tobytes())
    assert offset > 0 and data.count(tensor.numpy().tobytes()) == 1
    return offset


def test_flipped_weight_bytes_in_last_pt_are_refused_on_resume_and_the_good_files_are_untouched(tmp_path):
    run = tmp_path / "run"
    folder, log = run / "checkpoints" / "dermgan", run / "logs" / "dermgan.csv"
    train(tiny_recipe(), ToyPairs(), _config(), folder, log)
    samples = dg.write_samples(run, "dermgan", np.zeros((2, 8, 8, 3), np.uint8), [0, 1], [1, 2], [0, 1],
                               TRAINED)
    good = {p: p.read_bytes() for p in (folder / "generator.pt", samples, log)}

    last = folder / "last.pt"
    weight = max(load_checkpoint(last)["generator"].values(), key=lambda t: t.numel())
    start = _weight_offset(last, weight) + weight.numel() * 2  # 20 bytes in the middle of the tensor
    _flip(last, start, 20)
    assert torch.load(last, weights_only=True)["generator"] is not None  # torch itself loads it silently
    with pytest.raises(CheckpointError) as refused:
        train(tiny_recipe(), ToyPairs(), _config(), folder, log)
    message = str(refused.value)
    assert "\n" not in message and str(last) in message and "is damaged" in message
    assert "restore a good copy, or delete it and its .sha256 and re-run notebook 02" in message
    assert {p: p.read_bytes() for p in good} == good  # generator.pt, samples and the log are byte-identical


@pytest.fixture
def cached(tmp_path):
    from dermgan.data import dataset as ds

    data = ds.load_dataset("synthetic", image_size=32, n_images=40, cache_dir=tmp_path)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    return ds, folder, np.array(data.images)


def test_flipped_bytes_in_a_cached_images_npy_are_refused(tmp_path, cached):
    ds, folder, _ = cached
    images = folder / "images.npy"
    _flip(images, 1000, 5000)
    damaged = images.read_bytes()
    with pytest.raises(IntegrityError) as refused:
        ds.load_dataset("synthetic", image_size=32, n_images=40, cache_dir=tmp_path)
    message = str(refused.value)
    assert "\n" not in message and f"{images} is damaged" in message
    assert f"delete the dataset cache {folder} (the next notebook builds it again)" in message
    assert images.read_bytes() == damaged  # refused, not silently re-rendered over


@pytest.mark.parametrize("damage, named", [
    ("truncated images", r"images\.npy is damaged"),  # np.load said "mmap length is greater than file size"
    ("garbage params", r"params\.json is damaged"),  # json said JSONDecodeError
    ("no params", r"lacks params\.json"),  # the re-render said "Directory not empty"
    ("older version", r"images\.npy has no images\.npy\.sha256 beside it \(written by an older version"),
])
def test_a_damaged_dataset_cache_is_named_with_the_way_out(tmp_path, cached, damage, named):
    ds, folder, _ = cached
    if damage == "truncated images":
        (folder / "images.npy").write_bytes((folder / "images.npy").read_bytes()[:5000])
    elif damage == "garbage params":
        (folder / "params.json").write_text("{not json")
    elif damage == "no params":
        (folder / "params.json").unlink()
    else:
        for sidecar in folder.glob("*.sha256"):
            sidecar.unlink()
    with pytest.raises(IntegrityError, match=named) as refused:
        ds.load_dataset("synthetic", image_size=32, n_images=40, cache_dir=tmp_path)
    assert "delete the dataset cache" in str(refused.value) and "\n" not in str(refused.value)


def test_an_intact_cache_reads_back_what_was_written(tmp_path, cached):
    ds, _, images = cached
    again = ds.load_dataset("synthetic", image_size=32, n_images=40, cache_dir=tmp_path)
    assert np.array_equal(np.asarray(again.images), images)


@pytest.mark.parametrize("damage", ["flipped", "truncated", "older version"])
def test_a_damaged_samples_file_is_refused_by_its_readers(tmp_path, damage):
    from dermgan import turing

    images = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    path = dg.write_samples(tmp_path, "dcgan", images, [0] * 20, [1] * 20, list(range(20)),
                            {"steps": 1, **TRAINED})
    assert np.array_equal(dg.read_samples(path, None)["images"], images)
    if damage == "flipped":
        _flip(path, path.stat().st_size // 2, 64)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])  # np.load said BadZipFile
    else:
        np.savez_compressed(path, images=images, condition=np.zeros(20, int), fitzpatrick=np.ones(20, int),
                            source_index=np.arange(20))
        (tmp_path / "samples" / "dcgan" / "samples.npz.sha256").unlink()
    for read in (lambda p: dg.read_samples(p, None), lambda p: turing.pool_from_samples(p, (16, 16, 3), None)):
        with pytest.raises(IntegrityError) as refused:
            read(path)
        message = str(refused.value)
        assert "\n" not in message and str(path) in message and "re-run notebook 03" in message


def test_a_checkpoint_without_its_digest_is_refused_with_the_way_out(tmp_path):
    path = tmp_path / "checkpoints" / "lesion_edit" / "key" / "masked" / "generator.pt"
    path.parent.mkdir(parents=True)
    torch.save({"generator": {"w": torch.ones(2)}}, path)  # what earlier versions wrote
    older = r"generator\.pt has no generator\.pt\.sha256 beside it \(written by an older version.*notebook 04"
    with pytest.raises(CheckpointError, match=older):
        load_checkpoint(path)


# -- loss logs stay with the checkpoint they belong to ------------------------------------------------------


def _old_run(tmp_path):
    """A run stopped after step 3 (checkpoint at step 2): log rows 1..3."""
    with pytest.raises(Stop):
        train(tiny_recipe(), ToyPairs(), _config(), tmp_path / "ck", tmp_path / "log.csv",
              on_step=_stop_at(3))
    return tmp_path / "log.csv", tmp_path / "ck" / "last.pt"


def test_a_fresh_run_stopped_before_its_first_checkpoint_keeps_the_old_log(tmp_path):
    log, last = _old_run(tmp_path)
    before = {p: p.read_bytes() for p in (log, last)}
    with pytest.raises(Stop):  # --fresh / resume=False, stopped at step 1 (first checkpoint at step 2)
        train(tiny_recipe(), ToyPairs(), _config(seed=7), tmp_path / "ck", log, resume=False,
              on_step=_stop_at(1))
    assert {p: p.read_bytes() for p in before} == before  # the old checkpoint and its whole log
    result = train(tiny_recipe(), ToyPairs(), _config(), tmp_path / "ck", log)  # a later resume works
    assert result.steps_this_run == 2
    straight = tmp_path / "straight.csv"
    train(tiny_recipe(), ToyPairs(), _config(), tmp_path / "straight", straight)
    assert _steps_and_losses(log) == _steps_and_losses(straight)  # rows 1..4 of one run, as if never stopped
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_a_fresh_runs_log_replaces_the_old_one_with_its_first_checkpoint(tmp_path):
    log, _ = _old_run(tmp_path)
    old_rows = _steps_and_losses(log)
    with pytest.raises(Stop):
        train(tiny_recipe(), ToyPairs(), _config(seed=7), tmp_path / "ck", log, resume=False,
              on_step=_stop_at(3))
    rows = _steps_and_losses(log)
    assert [s for s, _ in rows] == [1, 2, 3] and rows[0] != old_rows[0]  # the new run's rows only
    lines = log.read_bytes().decode().splitlines(keepends=True)
    assert load_checkpoint(tmp_path / "ck" / "last.pt")["log"] == "".join(lines[:3])  # header, rows 1 and 2


def test_a_kill_between_the_checkpoint_and_the_log_is_repaired_from_the_checkpoint(tmp_path, monkeypatch):
    log, _ = _old_run(tmp_path)
    monkeypatch.setattr(loop._CsvLog, "publish", lambda self: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # killed after last.pt was replaced, before the log was
        train(tiny_recipe(), ToyPairs(), _config(seed=7), tmp_path / "ck", log, resume=False)
    monkeypatch.undo()
    with pytest.warns(UserWarning, match=r"log\.csv did not match its checkpoint's record"):
        train(tiny_recipe(), ToyPairs(), _config(seed=7), tmp_path / "ck", log)
    straight = tmp_path / "straight.csv"
    train(tiny_recipe(), ToyPairs(), _config(seed=7), tmp_path / "straight", straight)
    assert _steps_and_losses(log) == _steps_and_losses(straight)
    assert (tmp_path / "log.csv.mismatched").is_file()  # the old run's log is kept, not destroyed


# -- a full disk ---------------------------------------------------------------------------------------------


class FullDisk(io.FileIO):
    """A file on a device that fills up after `room` bytes."""

    room = 4096

    def write(self, data):
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def test_a_full_disk_during_a_checkpoint_write_says_so_and_loses_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "ck"
    with pytest.raises(Stop):
        train(tiny_recipe(), ToyPairs(), _config(), folder, tmp_path / "log.csv", on_step=_stop_at(3))
    before = (folder / "last.pt").read_bytes()
    def open_on_full_disk(path, mode, **kwargs):  # the binary files write_atomic opens are on a full device
        return FullDisk(path, "w") if "b" in mode else open(path, mode, **kwargs)

    monkeypatch.setattr(loop, "open", open_on_full_disk, raising=False)
    with pytest.raises(loop.DiskFullError) as full:
        train(tiny_recipe(), ToyPairs(), _config(), folder, tmp_path / "log.csv")
    last = folder / "last.pt"
    assert str(full.value) == (f"no space left on device while writing {last}; nothing was lost: the "
                               f"previous {last} is intact. Free some space and run again")
    monkeypatch.undo()
    assert last.read_bytes() == before and load_checkpoint(last)["step"] == 2
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "last.pt.sha256"]  # no temp left behind


def test_the_command_line_says_disk_full_in_one_line():
    from dermgan import pipeline

    error = loop.DiskFullError(errno.ENOSPC, "no space left on device while writing /r/last.pt; nothing was "
                               "lost: the previous /r/last.pt is intact. Free some space and run again",
                               "/r/last.pt")
    assert pipeline.describe(error) == str(error)
