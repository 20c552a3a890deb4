"""The map-conditioned family "oasis" (dermgan.models.oasis): the (N+1)-class segmentation loss against a hand
computation, what D is handed (classes and skin colour decoded from either map encoding), LabelMix's alignment
under augmentation, a map edit that changes the image only near the edit, and training, loading and sampling
through the same entry points as DermGAN."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from scipy import ndimage

import dermgan.runtime
from dermgan import losses
from dermgan.config import CriticConfig, OASISConfig, get_profile
from dermgan.critic import Critic
from dermgan.data.dataset import make_synthetic
from dermgan.data.semantic import MapDataset, SemanticMap, decode_maps, encode_labels, encode_maps
from dermgan.models import dermgan as dg
from dermgan.models import oasis
from dermgan.train import CheckpointError, data_fingerprint

torch.set_num_threads(1)


# -- the segmentation loss, by hand ----------------------------------------------------------------------

# A 2x2 map with one condition: background | skin / skin | lesion. D's logits per pixel, channels (fake,
# background, skin, lesion), chosen by hand.
LABELS = np.array([[[-1, 0], [0, 1]]])
LOGITS = {(0, 0): [0.0, 1.0, 0.0, 0.0], (0, 1): [1.0, 0.0, 2.0, 0.0], (1, 0): [0.0, 0.0, 0.0, 0.0],
          (1, 1): [2.0, 0.0, 0.0, 1.0]}
CLASS_OF = {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 2}  # background 0, skin 1, lesion 2


def _nll(logits, channel):
    return -(logits[channel] - math.log(sum(math.exp(v) for v in logits)))


def _hand_losses():
    """(real, fake) losses by hand. Class-balanced weights: 4 labelled pixels, 3 classes present, background
    and lesion 1 pixel each -> 4 / (3 * 1) = 4/3, skin 2 pixels -> 4 / (3 * 2) = 2/3 (they sum to 4)."""
    weight = {0: 4 / 3, 1: 2 / 3, 2: 4 / 3}
    real = sum(weight[CLASS_OF[p]] * _nll(v, 1 + CLASS_OF[p]) for p, v in LOGITS.items()) / 4
    fake = sum(_nll(v, 0) for v in LOGITS.values()) / 4
    return real, fake


def _logits_tensor():
    out = torch.zeros(1, 4, 2, 2)
    for (i, j), values in LOGITS.items():
        out[0, :, i, j] = torch.tensor(values)
    return out


def _targets():
    planes = torch.zeros(1, 3, 2, 2)
    for (i, j), c in CLASS_OF.items():
        planes[0, c, i, j] = 1
    return planes


def test_segmentation_loss_on_a_2x2_map_equals_the_hand_computation():
    real, fake = _hand_losses()
    logits, targets = _logits_tensor(), _targets()
    assert losses.segmentation_adversarial(logits, targets, True).item() == pytest.approx(real, rel=1e-6)
    assert losses.segmentation_adversarial(logits, targets, False).item() == pytest.approx(fake, rel=1e-6)
    plain = sum(_nll(v, 1 + CLASS_OF[p]) for p, v in LOGITS.items()) / 4
    unbalanced = losses.segmentation_adversarial(logits, targets, True, balance=False)
    assert unbalanced.item() == pytest.approx(plain)
    weights = losses.class_balance_weights(targets)[0]
    assert torch.allclose(weights, torch.tensor([[4 / 3, 2 / 3], [2 / 3, 4 / 3]]))


def test_an_unlabelled_pixel_counts_nowhere():
    """A pixel with no class (shifted or cut away by augmentation) leaves the loss of the other three pixels:
    3 labelled pixels, classes skin (2 px) and lesion (1 px) -> weights 3 / (2 * 2) and 3 / (2 * 1)."""
    targets = _targets()
    targets[0, :, 0, 0] = 0  # the background pixel loses its class
    logits = _logits_tensor()
    weight = {1: 3 / 4, 2: 3 / 2}
    kept = [p for p in LOGITS if p != (0, 0)]
    real = sum(weight[CLASS_OF[p]] * _nll(LOGITS[p], 1 + CLASS_OF[p]) for p in kept) / 3
    fake = sum(_nll(LOGITS[p], 0) for p in kept) / 3
    assert losses.segmentation_adversarial(logits, targets, True).item() == pytest.approx(real, rel=1e-6)
    assert losses.segmentation_adversarial(logits, targets, False).item() == pytest.approx(fake, rel=1e-6)


class FixedLogits(nn.Module):
    """A stand-in segmentation D that answers LOGITS whatever the image, handing back the class planes it got.
    """

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        logits = _logits_tensor().expand(len(x), -1, -1, -1)
        realness = torch.logsumexp(logits[:, 1:], 1, keepdim=True) - logits[:, :1]
        return [oasis.SegmentationOutput(logits, x[:, oasis.IMAGE_AND_SKIN:], realness)]


@pytest.mark.parametrize("encoding", ["onehot", "colour"])
def test_the_recipe_reads_the_classes_of_a_2x2_map_and_gets_the_hand_loss(encoding):
    """The whole chain: a 2x2 label map encoded as DermGAN encodes it, decoded into D's targets by the recipe,
    judged by the critic; D's loss is the hand computation's real + fake terms, G's the real term."""
    cfg = dataclasses.replace(get_profile("smoke").oasis, encoding=encoding, lambda_labelmix=0.0)
    recipe = oasis.OASISRecipe(cfg, 8, n_conditions=1)
    maps = torch.from_numpy(encode_labels(LABELS, np.array([[200.0, 150.0, 120.0]]), encoding, 1))
    batch = (maps, torch.zeros(1, 3, 2, 2), None, None)
    critic = Critic.plain(FixedLogits())
    real, fake = _hand_losses()
    loss_d, logs = recipe.d_loss(critic, batch, torch.zeros(1, 3, 2, 2))
    assert loss_d.item() == pytest.approx(real + fake, rel=1e-6)
    assert logs["d_real"].item() == pytest.approx(real, rel=1e-6)
    assert recipe.g_loss(critic, batch, torch.zeros(1, 3, 2, 2))[0].item() == pytest.approx(real, rel=1e-6)


# -- what D is handed -------------------------------------------------------------------------------------


def _maps(n=5, size=16, seed=0):
    rng = np.random.default_rng(seed)
    maps = []
    for i in range(n):
        skin_mask = np.ones((size, size), bool)
        skin_mask[: size // 4, : 2 + i] = False
        m = SemanticMap.blank(size, rng.uniform(60, 240, 3), skin_mask)
        for k in range(1 + i % 3):
            m = m.add_lesion(int(rng.integers(0, 8)), 0.05, rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7),
                             seed=10 * i + k)
        maps.append(m)
    return maps


@pytest.mark.parametrize("encoding", ["onehot", "colour"])
def test_class_planes_and_skin_colour_match_the_maps_in_either_encoding(encoding):
    maps = _maps()
    encoded = encode_maps(maps, encoding)
    planes = oasis.class_planes(encoded, encoding, 8)
    labels, _ = decode_maps(encoded, encoding)  # the repository's own decoder as the reference
    assert torch.equal(planes.sum(1), torch.ones(planes.shape[0], *planes.shape[2:]))  # one class per pixel
    assert np.array_equal(planes.argmax(1).numpy() - 1, labels)  # plane 0 background (-1), 1 skin (0), ...
    colours = (oasis.skin_colour(encoded, planes, encoding) + 1) * 127.5
    assert np.allclose(colours.numpy(), np.stack([m.skin_colour for m in maps]), atol=0.01)


def test_labelmix_lines_up_under_augmentation():
    """For a D that judges each pixel alone (1x1 conv), D(mix) is exactly the mix of D(real) and D(fake), so
    LabelMix's term is 0 however the critic shifts, cuts and flips the inputs, provided the mix and its mask
    are moved alike; a D with a 3x3 conv sees across region borders and the term is not 0."""
    cfg = dataclasses.replace(get_profile("smoke").oasis, encoding="onehot", d_levels=1)
    recipe = oasis.OASISRecipe(cfg, 16)
    maps = encode_maps(_maps(n=6), "onehot")
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(6, 3, 16, 16, generator=g) * 2 - 1, torch.rand(6, 3, 16, 16, generator=g) * 2 - 1
    n_classes = 10

    class PixelD(nn.Module):
        def __init__(self, kernel):
            super().__init__()
            self.conv = nn.Conv2d(oasis.IMAGE_AND_SKIN, 1 + n_classes, kernel, padding=kernel // 2)

        def forward(self, x):
            logits = self.conv(x[:, :oasis.IMAGE_AND_SKIN])
            realness = torch.logsumexp(logits[:, 1:], 1, keepdim=True) - logits[:, :1]
            return [oasis.SegmentationOutput(logits, x[:, oasis.IMAGE_AND_SKIN:], realness)]

    for kernel, zero in ((1, True), (3, False)):
        torch.manual_seed(1)
        D = PixelD(kernel)
        critic = Critic(D, CriticConfig(augment="translation,cutout,dihedral"), 6, torch.device("cpu"))
        critic.begin_d_step(0, D)
        _, logs = recipe.d_loss(critic, (maps, real), fake)
        critic.end_d_step()
        assert (logs["d_labelmix"].item() < 1e-10) == zero, kernel


# -- a map edit changes the image near the edit only ------------------------------------------------------


def test_a_map_edit_changes_the_image_where_the_map_changed_and_nowhere_else():
    """A generator with batch norm is local in eval mode (running statistics, fixed noise, convolutions only):
    a map edit can move the image only within `influence_radius` px of the edited pixels, which the model adds
    up from its layers. Tolerance outside that band: 1e-5 (float32 round-off of convolution algorithms that
    compute neighbouring pixels together); the bound holds for any weights, so a freshly built (random)
    generator is the constructed model. Inside the edited lesion the image changes clearly."""
    size = 128
    torch.manual_seed(0)
    G = oasis.OASISGenerator(12, size, base=8, upsamples=3, noise_dim=4, spade_hidden=8).eval()
    for module in G.modules():  # running statistics that are not the identity, as after training
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    before = SemanticMap.blank(size, 3)
    after = before.add_lesion("melanoma", 0.004, 0.12, 0.12, seed=1)
    edited = after.labels != before.labels
    radius = G.influence_radius()
    assert radius == 69 and 0 < edited.sum() < 200
    images = dg.generate(G, encode_maps([before, after], "onehot")).astype(float)
    change = np.abs(images[1] - images[0]).max(axis=-1) / 255
    near = ndimage.binary_dilation(edited, np.ones((2 * int(radius) + 1,) * 2, bool))
    assert (~near).sum() > size * size // 4  # plenty of image outside the band
    assert change[~near].max() <= 1e-5
    assert change[edited].mean() > 0.01
    with torch.no_grad():  # raw floats, not just uint8 levels
        raw = G(encode_maps([before, after], "onehot"))
    assert (raw[1] - raw[0]).abs().amax(0)[torch.from_numpy(~near)].max() <= 1e-5
    assert oasis.OASISGenerator(12, size, base=8, norm="instance").influence_radius() == math.inf


def test_noise_gives_several_images_per_map_and_eval_mode_is_deterministic():
    torch.manual_seed(0)
    G = oasis.OASISGenerator(12, 32, base=8, noise_dim=4, spade_hidden=8)
    semantic = encode_maps(_maps(n=1, size=32), "onehot")
    G.eval()
    assert torch.equal(G(semantic), G(semantic))  # noise 0 in eval mode
    several = oasis.variations(G, semantic, 3, seed=5)
    assert np.abs(several[0].astype(int) - several[1].astype(int)).max() > 0
    assert np.array_equal(several, oasis.variations(G, semantic, 3, seed=5))
    with pytest.raises(ValueError, match="noise must be"):
        G(semantic, torch.zeros(1, 5))


# -- training, loading, sampling --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def skin():
    return make_synthetic(32, 120, seed=4, workers=1)


def _ctx(tmp_path, **changes):
    values = dict(steps=6, batch_size=4, checkpoint_every=3, sample_every=3, log_every=1,
                  lambda_labelmix=10.0)
    values.update(changes)
    return dermgan.runtime.start("smoke", str(tmp_path), 0, "cpu", "synthetic", None, oasis=values)


def test_oasis_trains_through_dermgans_entry_points_and_samples_like_dermgan(tmp_path, skin):
    ctx = _ctx(tmp_path)
    train, test = skin.split("train"), skin.split("test")
    recipe, result = dg.train_variant("oasis", ctx, train, run="oasis-s0", holdout_data=skin.split("val"))
    assert result.step == 6 and isinstance(recipe, oasis.OASISRecipe)
    log = pd.read_csv(tmp_path / "logs" / "oasis-s0.csv")
    assert np.isfinite(log[["loss_d", "loss_g", "d_real", "d_fake", "d_labelmix", "g_adv"]].to_numpy()).all()
    # the critic reads D's per-pixel realness: its accuracy on training and held-out reals is probed
    probed = log.dropna(subset=["d_acc_val"])
    assert list(probed["step"]) == [3, 6]
    assert probed[["d_acc_train", "d_acc_val", "d_acc_fake"]].stack().between(0, 1).all()
    G, meta = dg.evaluated_generator(tmp_path / "checkpoints" / "oasis-s0",
                                     trained_on=data_fingerprint(train, ctx.data_root))
    assert meta["training"]["data"] == data_fingerprint(train, ctx.data_root)
    assert meta["variant"] == {"name": "oasis", "encoding": "onehot"}
    assert meta["evaluation"] == {"weights": "ema", "normalisation": "eval", "step": 6}
    maps = MapDataset(test, meta["variant"]["encoding"]).maps(np.arange(4))
    images = dg.generate(G, maps)
    assert images.dtype == np.uint8 and images.shape == (4, 32, 32, 3)
    assert np.array_equal(images, dg.generate(G, maps, batch_size=1))  # an image depends on its own map only
    # 06's controllability calls, unchanged: SemanticMap edits encoded in the model's encoding
    probe = SemanticMap.blank(32, 4).add_lesion("eczema", 0.08, 0.5, 0.5)
    assert dg.generate(G, encode_maps([probe], meta["variant"]["encoding"])).shape == (1, 32, 32, 3)
    # resume refuses other OASIS settings, naming the one that differs
    with pytest.raises(CheckpointError, match="oasis_config.lambda_labelmix=10.0 but this run has"):
        dg.train_variant("oasis", _ctx(tmp_path, lambda_labelmix=0.0), train, run="oasis-s0")


def test_oasis_settings_are_checked_in_one_line():
    with pytest.raises(ValueError, match="oasis.g_norm must be one of"):
        OASISConfig(g_norm="group")
    with pytest.raises(ValueError, match="oasis.augment_p must be"):
        OASISConfig(augment_p=2.0)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*g_upsamples"):
        oasis.OASISGenerator(3, 36, upsamples=3)
