"""What the loop adds to a discriminator (dermgan.critic, dermgan.diffaugment): augmentation that moves map and image
together and lets gradients through, ADA's adaptive p, R1 and LeCam against hand computations, EMA, seeded
initial weights, and a loop that reads its losses every log_every steps without losing a value or a NaN's step."""

import csv
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import dermgan.train as loop
from dermgan.config import CriticConfig, DermGANConfig, MelanoGANConfig
from dermgan.critic import Critic, decisions
from dermgan.diffaugment import DiffAugment, _translate
from dermgan.models import dermgan as dg
from dermgan.models import melanogan as mg
from dermgan.train import NonFiniteLossError, TrainConfig, initial_weights, load_training_checkpoint, train

torch.set_num_threads(1)
SIZE = 16


def paired_input(n=6, seed=0):
    """concat(map, image) where the image is a fixed pixelwise function of the map (channels reversed, halved)."""
    g = torch.Generator().manual_seed(seed)
    semantic = torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1
    return torch.cat([semantic, 0.5 * semantic.flip(1)], 1)


# -- augmentation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["translation", "cutout", "dihedral", "translation,cutout,dihedral"])
def test_geometric_augmentation_moves_map_and_image_together(policy):
    x = paired_input()
    augment = DiffAugment(policy)
    torch.manual_seed(1)
    params = augment.draw(len(x), 1.0, "cpu")
    y = augment.apply(x, params)
    assert not torch.equal(y, x)  # something moved
    # wherever the pixel survived, the image is still the same function of the map at that pixel
    assert torch.allclose(y[:, 3:], 0.5 * y[:, :3].flip(1))
    # and a second tensor (the generated input of the same items) gets exactly the same transform
    assert torch.equal(augment.apply(x * 0.3, params), y * 0.3)


def test_colour_augmentation_recolours_the_image_channels_only():
    x = paired_input()
    augment = DiffAugment("colour")
    torch.manual_seed(2)
    y = augment.apply(x, augment.draw(len(x), 1.0, "cpu"), colour_channels=slice(-3, None))
    assert torch.equal(y[:, :3], x[:, :3])  # the map's codes are untouched
    assert not torch.allclose(y[:, 3:], x[:, 3:])


def test_translation_matches_a_hand_shift():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(2, 1, 1, 1)
    # image 0 one row down (dy = 1/4 of the side), image 1 one column left (dx = -1/4)
    y = _translate(x, torch.tensor([[0.25, 0.0], [0.0, -0.25]]))
    expected_down = torch.tensor([[0, 0, 0, 0], [0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11.0]])
    expected_left = torch.tensor([[1, 2, 3, 0], [5, 6, 7, 0], [9, 10, 11, 0], [13, 14, 15, 0.0]])
    assert torch.equal(y[0, 0], expected_down)
    assert torch.equal(y[1, 0], expected_left)


def test_dihedral_codes_give_the_eight_symmetries():
    x = torch.arange(9.0).reshape(1, 1, 3, 3).repeat(8, 1, 1, 1)
    augment = DiffAugment("dihedral")
    params = augment.draw(8, 1.0, "cpu")
    params.dihedral = torch.arange(8)
    y = augment.apply(x, params)
    assert torch.equal(y[0], x[0])  # code 0 is the identity
    assert len({tuple(image.flatten().tolist()) for image in y}) == 8


def test_probability_zero_changes_nothing_and_gradients_reach_the_generator():
    G = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh())
    x = G(paired_input()[:, :3])
    augment = DiffAugment("colour,translation,cutout,dihedral")
    assert torch.equal(augment.apply(x, augment.draw(len(x), 0.0, "cpu")), x)
    torch.manual_seed(3)
    y = augment.apply(x, augment.draw(len(x), 1.0, "cpu"), colour_channels=slice(3, None))
    y.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in G.parameters())


def test_an_unknown_or_repeated_transform_is_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'"):
        CriticConfig(augment="translation,rotate")
    with pytest.raises(ValueError, match="names a transform twice"):
        CriticConfig(augment="cutout,cutout")
    with pytest.raises(ValueError, match="dermgan.ada_target adapts"):
        DermGANConfig(ada_target=0.6)
    with pytest.raises(ValueError, match="melanogan.r1_gamma must be"):
        MelanoGANConfig(r1_gamma=-1)


# -- regularisers against hand computations ---------------------------------------------------------------------


class Quadratic(nn.Module):
    """D(x) = sum over pixels of w * x^2 per image: d D / dx = 2 w x, so ||grad||^2 = 4 w^2 sum x^2."""

    def __init__(self, w=0.5):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, x):
        return (self.w * x.square()).flatten(1).sum(1)


def test_r1_equals_the_hand_gradient_norm_over_the_colour_channels():
    D = Quadratic(0.5)
    critic = Critic(D, CriticConfig(r1_gamma=2.0, r1_every=4), batch_size=6, device=torch.device("cpu"),
                    colour_channels=slice(-3, None))
    x = paired_input()
    critic.begin_d_step(0, D)  # step 0: R1 is due
    critic.pair(x, x * 0)
    penalty, logs = critic.end_d_step()
    expected = (4 * 0.5**2 * x[:, 3:].square().flatten(1).sum(1)).mean()  # only the image's channels
    assert torch.allclose(logs["d_r1"], expected)
    assert torch.allclose(penalty, 0.5 * 2.0 * 4 * expected)  # gamma / 2, times the lazy interval
    critic.begin_d_step(1, D)  # not due: no penalty
    critic.pair(x, x)
    assert "d_r1" not in critic.end_d_step()[1]


def test_lecam_equals_the_hand_value_and_its_anchors_follow_an_ema():
    D = Quadratic(1.0)
    critic = Critic(D, CriticConfig(lecam_weight=0.5, lecam_decay=0.9), batch_size=2, device=torch.device("cpu"))
    real, fake = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)  # D: 4 on reals, 0 on fakes
    critic.begin_d_step(1, D)
    critic.pair(real, fake)
    penalty, logs = critic.end_d_step()
    assert logs["d_lecam"].item() == pytest.approx(16.0)  # (4 - a_fake=0)^2 + (0 - a_real=0)^2
    assert penalty.item() == pytest.approx(8.0)
    assert critic.anchors["/0/real"].item() == pytest.approx(0.4)  # 0.9 * 0 + 0.1 * 4
    critic.begin_d_step(2, D)
    critic.pair(real, fake)
    assert critic.end_d_step()[1]["d_lecam"].item() == pytest.approx(16.0 + 0.4**2)


def test_ema_update_matches_the_hand_formula():
    model, ema = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0), ema.weight.fill_(3.0)
    loop._ema_update(ema, model, 0.9)
    assert torch.allclose(ema.weight, torch.full_like(ema.weight, 0.9 * 3.0 + 0.1 * 1.0))


def test_the_ema_warms_up_so_that_short_runs_forget_their_initialisation():
    assert loop.ema_decay_at(0, 0.999) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert loop.ema_decay_at(90, 0.999) == pytest.approx(91 / 100)
    assert loop.ema_decay_at(100_000, 0.999) == 0.999  # the set decay once (1 + t) / (10 + t) exceeds it
    # the weight left on the initial weights after n steps: the product of the decays
    for n, most in ((250, 0.05), (2000, 0.01)):
        left = math.prod(loop.ema_decay_at(t, 0.999) for t in range(n))
        assert left < most and left < 0.999 ** n / 10


def test_decisions_average_patches_then_scales():
    patches = [torch.tensor([[[[1.0, 3.0]]], [[[0.0, -2.0]]]]), torch.tensor([[[[4.0]]], [[[1.0]]]])]
    assert torch.equal(decisions([[None, patches[0]], [None, patches[1]]]), torch.tensor([3.0, 0.0]))


# -- adaptive p on discriminators that do and do not overfit ---------------------------------------------------


class Images(torch.utils.data.Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def p_after(tmp_path, lr_d, name):
    cfg = MelanoGANConfig(base_filters=4, max_filters=16, augment="translation", augment_p=0.5,
                          ada_target=0.6, ada_images=400, ada_interval=1)
    recipe = mg.build("dcgan", cfg, SIZE)
    config = loop.loop_settings(cfg, seed=0, device="cpu", steps=40, batch_size=4, lr_d=lr_d, checkpoint_every=0,
                                sample_every=0, log_every=40)
    train(recipe, Images(8), config, tmp_path / name)
    return load_training_checkpoint(tmp_path / name / "last.pt")["critic"]["p"].item()


def test_adaptive_p_rises_when_d_overfits_a_tiny_set_and_falls_when_it_cannot(tmp_path):
    assert p_after(tmp_path, 2e-3, "learns") > 0.5  # 8 real images: D soon tells them from G's apart
    assert p_after(tmp_path, 0.0, "frozen") < 0.5  # an untrained D is right on reals only by chance


# -- the loop: seeds, resume, log cadence, NaN step ----------------------------------------------------------


class Pairs(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        semantic = torch.rand(3, SIZE * 2, SIZE * 2, generator=g) * 2 - 1
        return semantic, torch.tanh(semantic.flip(0) * 2), (semantic[:1] > 0.5).float(), torch.tensor(i % 8)


AIDED = dict(augment="translation,cutout,colour,dihedral", augment_p=0.5, ada_target=0.6, ada_images=64,
             ada_interval=2, r1_gamma=1.0, r1_every=2, lecam_weight=0.1)


def recipe_for(seed=0, **critic):
    cfg = DermGANConfig(base_filters=4, n_scales=2, lambda_fm=10.0, **critic)
    with initial_weights(seed):
        return dg.build("dermgan", cfg, SIZE * 2), cfg


def test_a_seed_fixes_the_initial_weights_and_leaves_other_streams_alone():
    state = torch.get_rng_state()
    a, b, c = recipe_for(3)[0], recipe_for(3)[0], recipe_for(4)[0]
    assert torch.equal(torch.get_rng_state(), state)
    for x, y, z in zip(a.generator.state_dict().values(), b.generator.state_dict().values(),
                       c.generator.state_dict().values()):
        assert torch.equal(x, y)
    assert any(not torch.equal(x, z) for x, z in zip(a.generator.parameters(), c.generator.parameters()))


def aided_config(**changes):
    recipe, cfg = recipe_for(**AIDED)
    base = loop.loop_settings(cfg, seed=5, device="cpu", steps=6, batch_size=4, ema_decay=0.9,
                              checkpoint_every=2, log_every=1, sample_every=3, n_sample_images=2)
    return recipe, dataclasses.replace(base, **changes)


def test_an_aided_run_resumes_bit_identically_with_p_anchors_and_ema(tmp_path):
    recipe, config = aided_config()
    train(recipe, Pairs(), config, tmp_path / "a", tmp_path / "a.csv", holdout=Pairs())

    def crash_after_3(step):
        if step == 3:
            raise KeyboardInterrupt

    recipe, config = aided_config()
    with pytest.raises(KeyboardInterrupt):
        train(recipe, Pairs(), config, tmp_path / "b", tmp_path / "b.csv", on_step=crash_after_3, holdout=Pairs())
    recipe, config = aided_config()
    train(recipe, Pairs(), config, tmp_path / "b", tmp_path / "b.csv", holdout=Pairs())
    a, b = (load_training_checkpoint(tmp_path / x / "last.pt") for x in "ab")
    for part in ("generator", "discriminator", "ema"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert torch.equal(a["critic"]["p"], b["critic"]["p"]) and a["critic"]["p"].item() != 0.5  # p moved
    assert a["critic"]["anchors"].keys() == b["critic"]["anchors"].keys()
    assert all(torch.equal(a["critic"]["anchors"][k], b["critic"]["anchors"][k]) for k in a["critic"]["anchors"])
    assert (tmp_path / "a.csv").read_text().split("\n")[0] == (tmp_path / "b.csv").read_text().split("\n")[0]


def read_log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_logged_means_equal_the_per_step_values_and_probes_are_logged(tmp_path):
    recipe, config = aided_config(checkpoint_every=0, sample_every=3)
    train(recipe, Pairs(), config, tmp_path / "one", tmp_path / "one.csv", holdout=Pairs())
    recipe, config = aided_config(checkpoint_every=0, sample_every=3, log_every=3)
    train(recipe, Pairs(), config, tmp_path / "three", tmp_path / "three.csv", holdout=Pairs())
    per_step, per_three = read_log(tmp_path / "one.csv"), read_log(tmp_path / "three.csv")
    assert [int(r["step"]) for r in per_three] == [3, 6]
    for name in ("loss_d", "loss_g", "g_l1", "d_real_sign", "aug_p"):
        for block, row in enumerate(per_three):
            values = [float(r[name]) for r in per_step[3 * block: 3 * block + 3]]
            assert float(row[name]) == pytest.approx(np.mean(values), rel=1e-5, abs=1e-6), name
    # R1 ran on steps 0, 2, 4 only: its mean is over those steps
    assert float(per_three[0]["d_r1"]) == pytest.approx(np.mean([float(per_step[i]["d_r1"]) for i in (0, 2)]),
                                                        rel=1e-5)
    n_probed = len(Pairs())  # every real image of the (small) training and held-out sets is probed
    for row in per_three:  # D's accuracy on training and held-out reals at every sample_every: k of n images
        for column in ("d_acc_train", "d_acc_val", "d_acc_fake"):
            k = float(row[column]) * n_probed
            assert k == pytest.approx(round(k), abs=1e-9) and 0 <= round(k) <= n_probed, column


class NaNAt(dg.Pix2PixRecipe):
    bad_step = 3

    def __init__(self, recipe):
        self.__dict__.update(recipe.__dict__)
        self.calls = 0

    def g_loss(self, critic, batch, fake):
        self.calls += 1
        loss, logs = super().g_loss(critic, batch, fake)
        if self.calls == self.bad_step:
            logs["g_l1"] = logs["g_l1"] * float("nan")
            loss = loss + logs["g_l1"]
        return loss, logs


def test_a_nan_read_late_is_reported_at_its_own_step_and_never_checkpointed(tmp_path):
    recipe, config = aided_config(log_every=5, checkpoint_every=2, sample_every=0)
    with pytest.raises(NonFiniteLossError, match=r"step 3 \(0-based step 2\).*g_l1=nan"):
        train(NaNAt(recipe), Pairs(), config, tmp_path)
    assert load_training_checkpoint(tmp_path / "last.pt")["step"] == 2  # step 4's save found the NaN first


class AnswersEverything(torch.nn.Module):
    """A multi-scale D (features then logits per scale) whose logits are `value` for every patch."""

    def __init__(self, value):
        super().__init__()
        self.value, self.weight = value, torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return [[torch.full((len(x), 1, 2, 2), self.value)]]


@pytest.mark.parametrize("value, real, fake, sign", [(3.0, 1.0, 0.0, 1.0), (-3.0, 0.0, 1.0, -1.0)])
def test_probe_accuracy_of_a_discriminator_with_known_answers(value, real, fake, sign):
    """D says "real" (logit 3) or "fake" (logit -3) to every image: right on all reals and no generated image,
    or the reverse; the mean sign of its answers on the reals is +1 or -1."""
    recipe, _ = recipe_for(0)
    critic = Critic(AnswersEverything(value), CriticConfig(), 4, torch.device("cpu"))
    batch = torch.utils.data.default_collate([Pairs()[i] for i in range(4)])
    found = critic.probe(recipe, recipe.generator, batch)
    assert found == {"acc_real": real, "acc_fake": fake, "sign_real": sign}


def test_probing_d_changes_no_state():
    recipe, _ = recipe_for(0, **AIDED)
    critic = Critic(recipe.discriminator, CriticConfig(**AIDED), 4, torch.device("cpu"))
    batch = torch.utils.data.default_collate([Pairs()[i] for i in range(4)])
    rng, weights = torch.get_rng_state(), [t.clone() for t in recipe.discriminator.state_dict().values()]
    result = critic.probe(recipe, recipe.generator, batch)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(a, b) for a, b in zip(weights, recipe.discriminator.state_dict().values()))
    assert set(result) == {"acc_real", "acc_fake", "sign_real"}
