"""Records of the training loop survive kills: the loss CSV, checkpoint temps, fsync, corrupt files, and
one-line errors for checkpoints of another shape; the dataset cache's temporary folders. (Content hashes and
the fresh run's log: test_integrity.py.)"""

import csv
import dataclasses
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

import dermgan.train as loop
from dermgan.integrity import write_with_digest
from dermgan.train import CheckpointError, TrainConfig, load_checkpoint, save_atomic, train
from test_train import ToyPairs, tiny_recipe

torch.set_num_threads(1)


def _config(**changes):
    base = TrainConfig(steps=4, batch_size=4, checkpoint_every=2, log_every=1, seed=2, device="cpu")
    return dataclasses.replace(base, **changes)


def _crash_at(step_wanted):
    def on_step(step):
        if step == step_wanted:
            raise KeyboardInterrupt

    return on_step


def _interrupted_run(tmp_path):
    """A run killed after step 3 (last checkpoint at step 2), its log holding rows 1..3."""
    with pytest.raises(KeyboardInterrupt):
        train(tiny_recipe(), ToyPairs(), _config(), tmp_path / "ck", tmp_path / "log.csv", on_step=_crash_at(3))
    return tmp_path / "log.csv"


def _steps(log):
    with open(log, newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


# -- the loss CSV -------------------------------------------------------------------------------------------


def test_resume_rewrites_the_log_atomically(tmp_path, monkeypatch):
    log = _interrupted_run(tmp_path)  # rows 1..3, checkpoint at step 2: resuming rewrites the log
    before = log.read_bytes()
    real_write_atomic = loop.write_atomic

    def killed_mid_rewrite(path, write, **kwargs):  # what a SIGKILL during the rewrite does: half a header
        def half(f):
            f.write("step,lr")
            raise KeyboardInterrupt

        return real_write_atomic(path, half if path == log else write, **kwargs)

    monkeypatch.setattr(loop, "write_atomic", killed_mid_rewrite)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_recipe(), ToyPairs(), _config(), tmp_path / "ck", log)
    assert log.read_bytes() == before  # the old log is intact, not emptied
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # and no temp file is left behind


@pytest.mark.parametrize("damage", ["empty", "half_header", "half_row", "half_row_after_the_checkpoint"])
def test_resume_rebuilds_an_empty_or_truncated_log_from_the_checkpoint(tmp_path, damage):
    log = _interrupted_run(tmp_path)
    text = log.read_bytes().decode()  # as written: csv rows end with \r\n
    lines = text.splitlines(keepends=True)
    damaged = {"empty": "", "half_header": text[: text.index(",") + 2],
               # a row the checkpoint (step 2) holds, cut in the middle of a number
               "half_row": "".join(lines[:2]) + lines[2][: len(lines[2]) // 2],
               # a kill while appending row 3, past the checkpoint: dropped like the rest of that progress
               "half_row_after_the_checkpoint": "".join(lines[:3]) + lines[3][: len(lines[3]) // 2]}[damage]
    log.write_bytes(damaged.encode())
    if damage == "half_row_after_the_checkpoint":
        result = train(tiny_recipe(), ToyPairs(), _config(), tmp_path / "ck", log)
        assert not (tmp_path / "log.csv.mismatched").exists()
    else:
        with pytest.warns(UserWarning, match="log.csv did not match"):
            result = train(tiny_recipe(), ToyPairs(), _config(), tmp_path / "ck", log)
        assert (tmp_path / "log.csv.mismatched").read_bytes() == damaged.encode()  # kept beside the new one
    assert result.steps_this_run == 2
    assert _steps(log) == [1, 2, 3, 4]  # the checkpoint's rows 1-2 are not lost with the damaged file
    rows = list(csv.DictReader(open(log, newline="")))
    assert all(row["loss_g"] not in (None, "") for row in rows)


def test_a_foreign_csv_at_the_log_path_is_kept_aside_not_overwritten(tmp_path):
    _interrupted_run(tmp_path)
    (tmp_path / "log.csv").write_text("epoch,accuracy\n1,0.5\n")
    with pytest.warns(UserWarning, match=r"log\.csv did not match .*kept as log\.csv\.mismatched"):
        train(tiny_recipe(), ToyPairs(), _config(), tmp_path / "ck", tmp_path / "log.csv")
    assert (tmp_path / "log.csv.mismatched").read_text() == "epoch,accuracy\n1,0.5\n"
    assert _steps(tmp_path / "log.csv") == [1, 2, 3, 4]


# -- temporary files of killed processes --------------------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temps_of_dead_processes_are_removed_at_the_next_start(tmp_path):
    folder = tmp_path / "ck"
    folder.mkdir()
    dead, alive = _dead_pid(), os.getppid()
    stale = folder / f".last.pt.tmp-{dead}"
    live = folder / f".last.pt.tmp-{alive}"
    unrelated = folder / "notes.tmp-1"
    for path in (stale, live, unrelated):
        path.write_bytes(b"partial")
    (tmp_path / f".log.csv.tmp-{dead}").write_text("step\n")
    train(tiny_recipe(), ToyPairs(), _config(steps=1), folder, tmp_path / "log.csv")
    assert not stale.exists() and not (tmp_path / f".log.csv.tmp-{dead}").exists()
    assert live.exists() and unrelated.exists()  # a live writer's temp and other files are left alone


def test_remove_stale_temps_handles_folders(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".synthetic-32px-50-abc.tmp-{dead}-x1y2"
    stale.mkdir()
    (stale / "images.npy").write_bytes(b"partial")
    live = tmp_path / f".synthetic-32px-50-abc.tmp-{os.getpid()}-z3"
    live.mkdir()
    assert loop.remove_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and live.exists()
    assert loop.remove_stale_temps(tmp_path / "missing") == []


def test_dataset_cache_names_its_temp_by_process_and_cleans_dead_ones(tmp_path, monkeypatch):
    import tempfile

    from dermgan.data import dataset as ds

    stale = tmp_path / f".synthetic-32px-40-0123456789ab.tmp-{_dead_pid()}-q"
    stale.mkdir()
    present_at_write, made = [], []
    real_write, real_mkdtemp = ds._write_cache, tempfile.mkdtemp

    def spy_write(data, folder, params):
        present_at_write.append([p.name for p in tmp_path.iterdir()])
        real_write(data, folder, params)

    def spy_mkdtemp(*args, **kwargs):
        made.append(os.path.basename(real_mkdtemp(*args, **kwargs)))
        return os.path.join(kwargs.get("dir", ""), made[-1])

    monkeypatch.setattr(ds, "_write_cache", spy_write)
    monkeypatch.setattr(tempfile, "mkdtemp", spy_mkdtemp)
    data = ds.load_dataset("synthetic", image_size=32, n_images=40, cache_dir=tmp_path)
    assert len(data) == 40
    assert present_at_write == [[]]  # the stale folder was removed before the new cache was written
    assert made and made[0].startswith(".synthetic-32px-40-") and f".tmp-{os.getpid()}-" in made[0]


# -- fsync --------------------------------------------------------------------------------------------------


def test_checkpoint_writes_fsync_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    save_atomic({"x": torch.ones(2)}, tmp_path / "a.pt")
    # the file, then its sidecar (new and old digest) and its rename, the file's rename, the final sidecar
    assert synced == ["file", "file", "dir", "dir", "file", "dir"]
    assert torch.equal(load_checkpoint(tmp_path / "a.pt")["x"], torch.ones(2))


# -- files that are not checkpoints, checkpoints of another shape -------------------------------------------


@pytest.mark.parametrize("content", [os.urandom(4096), b"\x80\x02" + os.urandom(300), b""])
def test_random_bytes_are_called_corrupt_not_a_pickle(tmp_path, content):
    path = tmp_path / "last.pt"
    write_with_digest(path, lambda f: f.write(content))  # intact bytes that are not a checkpoint
    with pytest.raises(CheckpointError, match="corrupt or not a checkpoint") as error:
        load_checkpoint(path)
    assert "pickle" not in str(error.value) and "\n" not in str(error.value)


def test_legacy_torch_files_still_load(tmp_path):
    path = tmp_path / "old.pt"
    legacy = {"_use_new_zipfile_serialization": False}
    write_with_digest(path, lambda f: torch.save({"w": torch.arange(3)}, f, **legacy))
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(3))


def test_a_checkpoint_of_another_width_is_one_line_naming_the_tensor(tmp_path):
    small = tiny_recipe()  # base_filters 4
    from dermgan.config import DermGANConfig
    from dermgan.models import dermgan as dg

    bigger = dg.build("dermgan", DermGANConfig(base_filters=8, n_scales=2), 32)
    with pytest.raises(CheckpointError) as error:
        loop.load_weights(bigger.generator, small.generator.state_dict(), tmp_path / "generator.pt",
                          "generator")
    message = str(error.value)
    assert "\n" not in message and "generator.pt" in message
    first = next(k for k, v in small.generator.state_dict().items()
                 if v.shape != bigger.generator.state_dict()[k].shape)
    assert repr(first) in message and "width" in message
    state = dict(small.generator.state_dict())
    state.pop(first)
    with pytest.raises(CheckpointError, match=rf"lacks .*{first}.*variant"):
        loop.load_weights(small.generator, state, "x.pt", "generator")
    loop.load_weights(small.generator, small.generator.state_dict(), "x.pt", "generator")  # a match loads
    assert np.isfinite(sum(float(v.float().sum()) for v in small.generator.state_dict().values()))


# -- the metrics classifier of notebook 05 ------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_datasets():
    from dermgan.data.dataset import make_synthetic

    return make_synthetic(32, 60, seed=1, workers=1), make_synthetic(32, 60, seed=2, workers=1)


def test_metrics_classifier_is_reused_only_for_its_own_data_and_settings(tmp_path, two_datasets):
    import json

    from dermgan.classify import metrics_classifier
    from dermgan.config import ClassifierConfig

    cfg = ClassifierConfig(width=4, epochs=1, batch_size=16)
    first, second = two_datasets
    path = tmp_path / "metrics_classifier" / "model.pt"

    def get(data, config=cfg):
        return metrics_classifier(data.split("train"), data.split("val"), config, path, seed=0)

    model, status = get(first)
    assert status == "metrics classifier: trained (no earlier model)"
    meta = json.loads((path.parent / "meta.json").read_text())
    assert meta["data"]["n"] == len(first.split("train")) and meta["config"]["width"] == 4
    again, status = get(first)
    assert status.startswith("metrics classifier: reused")
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])
    _, status = get(second)  # another rendering: retrained, and the line says why
    assert status.startswith("metrics classifier: trained (model.pt was trained with data.")
    _, status = get(second, dataclasses.replace(cfg, width=8))
    assert "config.width=4, this run has config.width=8" in status
    save_atomic(again.state_dict(), path)  # weights without any record of what they were trained on
    _, status = get(first)
    assert "records no training data" in status
    path.write_bytes(os.urandom(100))  # damaged: retrained (a derived file), and the line says why
    _, status = get(first)
    assert "unreadable" in status and "model.pt is damaged" in status
    torch.save(again.state_dict(), path)
    path.with_name("model.pt.sha256").unlink()  # what earlier versions wrote: no digest
    _, status = get(first)
    assert "unreadable" in status and "no model.pt.sha256 beside it" in status


def test_sample_grids_are_written_atomically(tmp_path, monkeypatch):
    from PIL import Image

    path = tmp_path / "grids" / "step_000001.png"
    rows = [np.zeros((2, 4, 4, 3), np.uint8)]
    loop._write_grid(rows, path)
    before = path.read_bytes()

    def killed_mid_save(self, fp, format=None, **params):
        (fp.write if hasattr(fp, "write") else open(fp, "wb").write)(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", killed_mid_save)
    with pytest.raises(KeyboardInterrupt):
        loop._write_grid([np.full((2, 4, 4, 3), 255, np.uint8)], path)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == [path.name]
