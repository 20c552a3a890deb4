"""The generic training loop: schedule, step-exact resume, DDP equivalence, NaN guard, checkpoint safety."""

import copy
import csv
import dataclasses
import os
import re
import socket

import numpy as np

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dermgan.config import DermGANConfig
from dermgan.integrity import write_with_digest
from dermgan.models import dermgan as dg
import dermgan.train as loop
from dermgan.train import (
    CheckpointError,
    NonFiniteLossError,
    StepBatches,
    TrainConfig,
    load_checkpoint,
    load_training_checkpoint,
    lr_factor,
    train,
)

torch.set_num_threads(1)
SIZE = 32


class ToyPairs(torch.utils.data.Dataset):
    """(map, image, lesion mask, condition) items that depend only on the index."""

    def __init__(self, n=16):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        semantic = torch.rand(3, SIZE, SIZE, generator=g) * 2 - 1
        image = torch.tanh(semantic.flip(0) * 2)
        lesion = (torch.rand(1, SIZE, SIZE, generator=g) > 0.8).float()
        return semantic, image, lesion, torch.tensor(i % 8)


def tiny_recipe(norm="batch", dropout=0.5, name="dermgan", seed=0):
    torch.manual_seed(seed)
    cfg = DermGANConfig(base_filters=4, norm=norm, dropout=dropout, n_scales=2, lambda_fm=10.0)
    return dg.build(name, cfg, SIZE)


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- schedules ----------------------------------------------------------------------------------------------


def test_lr_is_constant_then_linear_to_zero():
    factors = [lr_factor(s, 10, 0.5) for s in range(10)]
    assert factors == [1, 1, 1, 1, 1, 1.0, 0.8, 0.6, 0.4, 0.2]


def test_batches_are_a_function_of_step_and_shard_evenly():
    one = StepBatches(10, 4, seed=3, start=0, steps=6)
    all_steps = list(one)
    assert all(len(b) == 4 for b in all_steps)
    assert sorted(all_steps[0] + all_steps[1]) == sorted(
        set(all_steps[0] + all_steps[1])
    )  # no repeats in an epoch
    assert list(StepBatches(10, 4, seed=3, start=4, steps=6)) == all_steps[4:]  # resume mid-way
    ranks = [list(StepBatches(10, 4, seed=3, start=0, steps=6, rank=r, world=2)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks)] == all_steps
    with pytest.raises(ValueError, match="divisible"):
        StepBatches(10, 3, 0, 0, 1, world=2)


# -- resume -------------------------------------------------------------------------------------------------


class Crash(Exception):
    pass


def _config(**changes):
    base = TrainConfig(
        steps=6,
        batch_size=4,
        ema_decay=0.9,
        checkpoint_every=2,
        log_every=1,
        seed=5,
        device="cpu",
        sample_every=3,
        n_sample_images=2,
    )
    return dataclasses.replace(base, **changes)


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path):
    data = ToyPairs()
    straight = tiny_recipe()
    train(straight, data, _config(), tmp_path / "a", tmp_path / "a.csv", tmp_path / "a_samples")

    def crash_after_5(step):
        if step == 5:
            raise Crash

    interrupted = tiny_recipe()
    with pytest.raises(Crash):
        train(
            interrupted,
            data,
            _config(),
            tmp_path / "b",
            tmp_path / "b.csv",
            tmp_path / "b_samples",
            on_step=crash_after_5,
        )
    assert load_training_checkpoint(tmp_path / "b" / "last.pt")["step"] == 4
    resumed = tiny_recipe(seed=99)  # different fresh weights: everything must come from the checkpoint
    result = train(resumed, data, _config(), tmp_path / "b", tmp_path / "b.csv", tmp_path / "b_samples")
    assert result.steps_this_run == 2 and result.step == 6

    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for key in ("generator", "discriminator", "ema"):
        assert state_equal(a[key], b[key]), key
    for key in ("opt_g", "opt_d"):
        for pa, pb in zip(a[key]["state"].values(), b[key]["state"].values()):
            assert state_equal(pa, pb)
    # the loss log of the resumed run is the uninterrupted one, row for row
    rows = [list(csv.DictReader(open(tmp_path / f"{x}.csv"))) for x in "ab"]
    assert [r["step"] for r in rows[1]] == [str(s) for s in range(1, 7)]
    for ra, rb in zip(*rows):
        assert ra["loss_g"] == rb["loss_g"] and ra["loss_d"] == rb["loss_d"]
    assert (tmp_path / "b_samples" / "step_000006.png").is_file()
    assert (tmp_path / "b" / "generator.pt").is_file()


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    train(tiny_recipe(), ToyPairs(), _config(steps=2), tmp_path)
    with pytest.raises(CheckpointError, match="batch_size"):
        train(tiny_recipe(), ToyPairs(), _config(steps=2, batch_size=8), tmp_path)
    with pytest.raises(CheckpointError, match="lr_d"):
        train(tiny_recipe(), ToyPairs(), _config(steps=2, lr_d=1e-3), tmp_path)
    with pytest.raises(CheckpointError, match="n_items=16 but this run has n_items=20"):
        train(tiny_recipe(), ToyPairs(20), _config(steps=2), tmp_path)


class FakeSplit:
    """What data_fingerprint reads of a SkinData split: name, image size, ids, labels, images."""

    def __init__(self, name="synthetic", n=16, size=SIZE, first_id=0, bright=0):
        self.name, self.image_size = name, size
        self.table = {"image_id": [f"img{first_id + i}" for i in range(n)], "label": [i % 3 for i in range(n)]}
        self.images = np.full((n, size, size, 3), bright, np.uint8)

    def __len__(self):
        return len(self.images)


@pytest.mark.parametrize(
    "other, named",
    [
        (FakeSplit(name="ham10000"), "data.dataset='synthetic' but this run has data.dataset='ham10000'"),
        (FakeSplit(size=64), "data.image_size=32"),
        (FakeSplit(first_id=1), "data.sha256"),  # same size and count, other records
        (FakeSplit(bright=7), "data.sha256"),  # same records, other pixels (a re-rendered or resized copy)
    ],
)
def test_resume_refuses_a_checkpoint_of_other_data(tmp_path, other, named):
    with pytest.raises(Crash):
        train(tiny_recipe(), ToyPairs(), _config(), tmp_path, on_step=_stop_at(2),
              provenance=loop.data_fingerprint(FakeSplit()))
    with pytest.raises(CheckpointError, match=re.escape(named)) as error:
        train(tiny_recipe(), ToyPairs(), _config(), tmp_path, provenance=loop.data_fingerprint(other))
    assert "--run-dir" in str(error.value) and "\n" not in str(error.value)
    # the same data resumes
    same = loop.data_fingerprint(FakeSplit())
    result = train(tiny_recipe(), ToyPairs(), _config(), tmp_path, provenance=same)
    assert result.steps_this_run == 4
    assert load_checkpoint(tmp_path / "generator.pt")["provenance"] == loop.data_fingerprint(FakeSplit())


def test_data_root_is_part_of_the_fingerprint(tmp_path):
    a = loop.data_fingerprint(FakeSplit(), tmp_path / "ham")
    assert a["data_root"] == str((tmp_path / "ham").resolve()) and a["n"] == 16 and a["image_size"] == SIZE
    assert loop.data_fingerprint(FakeSplit(), tmp_path / "ham_full") != a


def test_a_checkpoint_without_a_fingerprint_is_not_trusted_for_data(tmp_path):
    with pytest.raises(Crash):
        train(tiny_recipe(), ToyPairs(), _config(), tmp_path, on_step=_stop_at(2))
    with pytest.raises(CheckpointError, match="records no data fingerprint"):
        train(tiny_recipe(), ToyPairs(), _config(), tmp_path, provenance=loop.data_fingerprint(FakeSplit()))


def _recipe(name="dermgan", **changes):
    torch.manual_seed(0)
    cfg = DermGANConfig(**{**dict(base_filters=4, n_scales=2, lambda_fm=10.0), **changes})
    return dg.build(name, cfg, SIZE)


@pytest.mark.parametrize(
    "other, named",
    [
        (dict(lambda_l1=10.0), "recipe.dermgan_config.lambda_l1=100.0 but this run has "),
        (dict(lambda_lesion=0.0), "lambda_lesion"),
        (dict(base_filters=8), "base_filters=4 but this run has recipe.dermgan_config.base_filters=8"),
        (dict(name="pix2pix"), "recipe.variant.name='dermgan'"),
    ],
)
def test_resume_refuses_another_variant_width_or_loss_weights(tmp_path, other, named):
    with pytest.raises(Crash):
        train(_recipe(), ToyPairs(), _config(), tmp_path, on_step=_stop_at(2))
    with pytest.raises(CheckpointError, match=re.escape(named)) as error:
        train(_recipe(**other), ToyPairs(), _config(), tmp_path)
    assert "\n" not in str(error.value)


def test_loop_only_settings_may_change_on_resume(tmp_path):
    with pytest.raises(Crash):
        train(_recipe(), ToyPairs(), _config(), tmp_path, on_step=_stop_at(2))
    result = train(_recipe(log_every=7, sample_every=3, checkpoint_every=1, n_eval=5), ToyPairs(),
                   _config(log_every=2), tmp_path)
    assert result.steps_this_run == 4


def test_generator_files_are_checked_against_the_expected_data(tmp_path):
    train(tiny_recipe(), ToyPairs(), _config(steps=1), tmp_path, provenance=loop.data_fingerprint(FakeSplit()))
    saved = loop.check_provenance(tmp_path / "generator.pt", loop.data_fingerprint(FakeSplit()))
    assert saved["step"] == 1
    with pytest.raises(CheckpointError, match=r"generator\.pt was trained with data\.dataset='synthetic'"):
        loop.check_provenance(tmp_path / "generator.pt", loop.data_fingerprint(FakeSplit(name="isic2017")))
    train(tiny_recipe(), ToyPairs(), _config(steps=1), tmp_path / "old", resume=False)
    with pytest.raises(CheckpointError, match="records no data fingerprint"):
        loop.check_provenance(tmp_path / "old" / "generator.pt", loop.data_fingerprint(FakeSplit()))


def test_train_variant_stores_the_fingerprint_and_refuses_other_data(tmp_path):
    import dermgan.runtime
    from dermgan.data.dataset import make_synthetic

    ctx = dermgan.runtime.start("smoke", str(tmp_path), 0, "cpu", "synthetic", None,
                                dermgan={"steps": 2, "batch_size": 4, "base_filters": 4, "checkpoint_every": 1,
                                         "sample_every": 0, "log_every": 1})
    first, second = (make_synthetic(32, 60, seed=seed, workers=1).split("train") for seed in (3, 4))
    n = min(len(first), len(second))  # the same count: only the data tells the two apart
    first, second = first.select(np.arange(n)), second.select(np.arange(n))
    dg.train_variant("pix2pix", ctx, first)
    saved = load_checkpoint(tmp_path / "checkpoints" / "pix2pix" / "last.pt")
    assert saved["provenance"] == loop.data_fingerprint(first) and saved["provenance"]["n"] == n
    with pytest.raises(CheckpointError, match=r"data\.sha256=.* but this run has data\.sha256="):
        dg.train_variant("pix2pix", ctx, second)
    _, result = dg.train_variant("pix2pix", ctx, first)  # the same data resumes (nothing left to do)
    assert result.steps_this_run == 0 and result.step == 2


def _stop_at(step_wanted):
    def on_step(step):
        if step == step_wanted:
            raise Crash

    return on_step


# -- NaN guard ----------------------------------------------------------------------------------------------


class NaNAtStep(dg.Pix2PixRecipe):
    def __init__(self, base, bad_step):
        self.__dict__.update(base.__dict__)
        self.calls, self.bad_step = 0, bad_step

    def g_loss(self, D, batch, fake):
        self.calls += 1
        loss, logs = super().g_loss(D, batch, fake)
        if self.calls == self.bad_step:
            logs["g_l1"] = logs["g_l1"] * float("nan")
            loss = loss + logs["g_l1"]
        return loss, logs


def test_nan_guard_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    recipe = NaNAtStep(tiny_recipe(), bad_step=3)
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*g_l1=nan.*last good checkpoint"):
        train(recipe, ToyPairs(), _config(checkpoint_every=2), tmp_path)
    checkpoint = load_training_checkpoint(tmp_path / "last.pt")
    assert checkpoint["step"] == 2
    assert all(torch.isfinite(v).all() for v in checkpoint["generator"].values() if v.is_floating_point())


# -- checkpoint safety --------------------------------------------------------------------------------------


def test_corrupt_and_truncated_checkpoints_are_refused(tmp_path):
    train(tiny_recipe(), ToyPairs(), _config(steps=1), tmp_path / "run")
    good = (tmp_path / "run" / "last.pt").read_bytes()
    # bytes that are intact (their digest matches) but no checkpoint: what the format checks still catch
    truncated = tmp_path / "truncated.pt"
    write_with_digest(truncated, lambda f: f.write(good[: len(good) // 2]))
    garbage = tmp_path / "garbage.pt"
    write_with_digest(garbage, lambda f: f.write(b"not a checkpoint at all" * 10))
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match=rf"{path.name} is corrupt"):
            load_checkpoint(path)
    # resume=True must not silently start over from a broken file
    (tmp_path / "run" / "last.pt").write_bytes(good[:100])
    with pytest.raises(CheckpointError, match=r"last\.pt is damaged"):
        train(tiny_recipe(), ToyPairs(), _config(steps=1), tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


class Opaque:
    """A pickled Python object: what weights_only loading must refuse."""


def test_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    write_with_digest(path, lambda f: torch.save({"format": "dermgan.train/1", "payload": Opaque()}, f))
    with pytest.raises(CheckpointError, match="not a weights-only checkpoint"):
        load_checkpoint(path)
    plain = tmp_path / "plain.pt"
    loop.save_atomic({"weights": torch.ones(2)}, plain)
    with pytest.raises(CheckpointError, match="not a dermgan training checkpoint"):
        load_training_checkpoint(plain)


# -- DDP ----------------------------------------------------------------------------------------------------
# Equivalence of 2 ranks x 2 images with 1 process x 4 images needs every computation to be per image or
# synchronised over the ranks. Batch norm is synchronised by the loop (DistributedBatchNorm on gloo, as torch's
# SyncBatchNorm refuses CPU tensors), so it is tested ON here; without that each rank normalises by its own
# half batch and trains another model. Dropout is 0 (each rank draws its own masks). Every loss is a mean over
# per-image terms of equal-sized shards, so the averaged gradients equal the full-batch ones up to float
# summation order. (Instance norm would add gradients that are zero up to rounding, whose sign Adam's first
# steps amplify; the convs before batch norm have no bias, as in pix2pix.) The DermGAN lesion L1 is a mean over
# lesion pixels of the batch, which is not shard-averageable, hence the pix2pix variant here.

DDP_STEPS = 3


def _ddp_config():
    return TrainConfig(steps=DDP_STEPS, batch_size=4, checkpoint_every=0, log_every=1, seed=1, device="cpu")


def _ddp_worker(rank, world, port, out_dir, norm):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        recipe = tiny_recipe(norm=norm, dropout=0.0, name="pix2pix")
        train(recipe, ToyPairs(), _ddp_config(), os.path.join(out_dir, "ddp"))
        torch.save(recipe.generator.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
        torch.save(recipe.discriminator.state_dict(), os.path.join(out_dir, f"rank{rank}_d.pt"))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["none", "batch"])
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path, norm):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), norm), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert state_equal(ranks[0], ranks[1])  # DDP keeps the ranks in lockstep
    d_ranks = [torch.load(tmp_path / f"rank{r}_d.pt", weights_only=True) for r in range(2)]
    assert state_equal(d_ranks[0], d_ranks[1])

    single = tiny_recipe(norm=norm, dropout=0.0, name="pix2pix")
    train(single, ToyPairs(), _ddp_config(), tmp_path / "single")
    start = tiny_recipe(norm=norm, dropout=0.0, name="pix2pix").generator.state_dict()
    has_bn = any(key.endswith("running_var") for key in start)
    assert has_bn == (norm == "batch")
    for key, value in single.generator.state_dict().items():
        assert not torch.equal(value, start[key]) or key.endswith("num_batches_tracked"), key  # it trained
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-5, atol=1e-6 if has_bn else 1e-7)
    for key, value in single.discriminator.state_dict().items():  # running statistics included
        torch.testing.assert_close(d_ranks[0][key], value, rtol=1e-5, atol=1e-6 if has_bn else 1e-7)
    assert load_training_checkpoint(tmp_path / "ddp" / "last.pt")["world_size"] == 2


def test_distributed_batch_norm_is_plain_batch_norm_without_a_process_group():
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    synced = loop.synchronise_batch_norm(copy.deepcopy(plain), torch.device("cpu"))
    assert isinstance(synced[1], loop.DistributedBatchNorm)
    assert synced.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(synced(x), plain(x))
    assert state_equal(synced.state_dict(), plain.state_dict())  # running statistics updated alike
