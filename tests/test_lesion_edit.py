"""Lesion addition / removal: masked losses, CycleGAN and mask-guided recipes, the editing API."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from dermgan import losses
from dermgan.config import PROFILES
from dermgan.critic import Critic
from dermgan.data.dataset import make_synthetic
from dermgan.editing import add_lesion, remove_lesion
from dermgan.models import lesion_edit as le
from dermgan.models.cyclegan import CycleGANRecipe, ResnetGenerator
from dermgan.models.pix2pix import PatchDiscriminator, count_parameters
from dermgan.train import train

torch.set_num_threads(1)
SMOKE = PROFILES["smoke"].lesion_edit


@pytest.fixture(scope="module")
def data():
    return make_synthetic(32, 24, seed=3, val_fraction=0.0, test_fraction=0.0)


def _batch(data, n=4):
    dataset = le.EditDataset(data)
    return torch.utils.data.default_collate([dataset[i] for i in range(n)])


# -- masked losses -------------------------------------------------------------------------------------------


def test_masked_mse_matches_a_hand_computed_value():
    prediction = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    # masked pixels: errors 1 and 3 -> (1 + 9) / 2
    assert losses.masked_mse(prediction, target, mask).item() == pytest.approx(5.0)


def test_relevancy_is_zero_when_only_the_inside_of_the_mask_changes():
    source = torch.rand(2, 3, 8, 8) * 2 - 1
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:5, 3:7] = 1
    edited = torch.where(mask.bool(), torch.rand_like(source), source)
    assert losses.relevancy_loss(edited, source, mask).item() == 0.0
    # and one changed pixel outside the mask is seen: (0.5^2) over 2*64-2*12 pixels x 3 channels
    edited[0, 1, 0, 0] += 0.5
    assert losses.relevancy_loss(edited, source, mask).item() == pytest.approx(0.25 / ((128 - 24) * 3))


def test_relevancy_gradient_flows_only_outside_the_mask():
    source = torch.rand(1, 3, 6, 6)
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., 1:4, 1:4] = 1
    edited = torch.rand(1, 3, 6, 6, requires_grad=True)
    losses.relevancy_loss(edited, source, mask).backward()
    inside = mask.expand_as(edited).bool()
    assert torch.all(edited.grad[inside] == 0)
    assert torch.all(edited.grad[~inside] != 0)


def test_masked_mse_gradient_flows_only_inside_the_mask_and_an_empty_mask_gives_zero():
    prediction = torch.rand(1, 3, 5, 5, requires_grad=True)
    target = torch.rand(1, 3, 5, 5)
    mask = torch.zeros(1, 5, 5)
    mask[0, 2, 2] = 1
    losses.masked_mse(prediction, target, mask).backward()
    assert torch.count_nonzero(prediction.grad) == 3  # one pixel, three channels
    assert torch.all(prediction.grad[0, :, 2, 2] != 0)
    empty = losses.masked_mse(prediction, target, torch.zeros(1, 5, 5))
    assert empty.item() == 0.0 and empty.requires_grad


def test_mask_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="mask must be"):
        losses.relevancy_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 5, 4))


# -- networks ------------------------------------------------------------------------------------------------


def test_resnet_generator_and_patchgan_have_the_reference_cyclegan_parameter_counts():
    # The reference CycleGAN prints 11.378 M for resnet_9blocks (ngf 64) and 2.765 M for the basic D (ndf 64).
    assert round(count_parameters(ResnetGenerator(3, 3, 64, 9, "instance")) / 1e6, 3) == 11.378
    assert round(count_parameters(PatchDiscriminator(3, 64, 3, "instance")) / 1e6, 3) == 2.765


def test_resnet_generator_keeps_the_size_and_ends_in_tanh_and_refuses_odd_sides():
    G = ResnetGenerator(12, 3, base=4, n_blocks=1)
    last = [m for m in G.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():  # zero weights and a known bias: every pixel is tanh(bias), whatever the input
        last.weight.zero_()
        last.bias.copy_(torch.tensor([2.0, 0.0, -1.0]))
        out = G(torch.randn(2, 12, 32, 32))
    assert out.shape == (2, 3, 32, 32)
    expected = torch.tanh(torch.tensor([2.0, 0.0, -1.0])).view(1, 3, 1, 1).expand_as(out)
    assert torch.allclose(out, expected, atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        G(torch.randn(1, 12, 30, 30))


@pytest.mark.parametrize("name", le.METHODS)
def test_every_method_produces_images_of_the_input_size(data, name):
    recipe = le.build(name, SMOKE, 32, len(data.classes))
    out = recipe.generate(recipe.generator, _batch(data))
    for direction in ("add", "remove"):
        assert out[direction].shape == (4, 3, 32, 32)
    assert set(recipe.discriminator.nets) == {"lesion", "healthy"}


def test_cycle_and_identity_losses_of_identity_generators_are_zero(data):
    recipe = CycleGANRecipe(SMOKE, 32, len(data.classes), use_mask=True)

    class KeepImage(torch.nn.Module):  # returns the RGB part of its input unchanged
        def forward(self, x):
            return x[:, :3]

    recipe.generator = le.EditorPair({"add": KeepImage(), "remove": KeepImage()})
    batch = _batch(data)
    out = recipe.generate(recipe.generator, batch)
    _, logs = recipe.g_loss(Critic.plain(recipe.discriminator), batch, out)
    assert logs["g_cycle"].item() == 0.0 and logs["g_identity"].item() == 0.0
    assert logs["outside_change"].item() == 0.0
    assert losses.cycle_loss(batch["healthy"], batch["lesion"]).item() > 0  # not zero for any pair


# -- data ----------------------------------------------------------------------------------------------------


def test_partners_have_no_fixed_point_and_cover_every_item():
    p = le.partners(101, seed=5)
    assert np.all(p != np.arange(101)) and sorted(p) == list(range(101))


def test_items_pair_each_lesion_with_its_healthy_twin(data):
    dataset = le.EditDataset(data)
    item = dataset[0]
    j = dataset.partner[0]
    assert torch.equal(item["paired_lesion"], le.to_model(np.array(data.images[0]))[0])
    assert torch.equal(item["lesion"], le.to_model(np.array(data.images[j]))[0])
    assert torch.equal(item["paired_healthy"], le.to_model(np.array(data.healthy[j]))[0])
    assert item["condition"] == data.table["label"][0]


def test_without_twins_the_healthy_examples_mask_only_healthy_skin(data):
    real = dataclasses.replace(data, healthy=None)
    dataset = le.EditDataset(real)
    for i in range(len(real)):
        item = dataset[i]
        assert "paired_lesion" not in item
        assert torch.all(item["mask"][0][torch.from_numpy(np.asarray(real.lesion_masks[i]) > 0)] == 0)
    with pytest.raises(ValueError, match="ground truth"):
        recipe = le.MaskGuidedRecipe(SMOKE, 32, len(real.classes), paired=True, directions=("remove",))
        batch = torch.utils.data.default_collate([dataset[i] for i in range(4)])
        recipe.g_loss(Critic.plain(recipe.discriminator), batch, recipe.generate(recipe.generator, batch))


# -- training ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, falling", [("masked-paired", "g_pixel_add"), ("cyclegan-mask", "g_cycle")])
def test_a_short_training_run_lowers_the_reconstruction_losses(tmp_path, data, name, falling):
    cfg = dataclasses.replace(SMOKE, steps=40, log_every=10, checkpoint_every=0, sample_every=0, lr=1e-3)
    recipe = le.build(name, cfg, 32, len(data.classes))
    train(recipe, le.EditDataset(data), le.train_config(cfg, 0, "cpu"), tmp_path, tmp_path / "log.csv")
    log = pd.read_csv(tmp_path / "log.csv")
    assert len(log) == 4 and np.isfinite(log.drop(columns="step").to_numpy()).all()
    assert log[falling].iloc[-1] < 0.8 * log[falling].iloc[0]
    loaded = le.load_editor(tmp_path)
    for a, b in zip(loaded.generator.state_dict().values(), recipe.generator.state_dict().values()):
        assert torch.equal(a, b.cpu())


# -- the editing API -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def editor(data):
    recipe = le.build("cyclegan-mask", SMOKE, 32, len(data.classes))
    recipe.generator.eval()
    return recipe


def _photo(h=45, w=70, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[10:25, 20:41] = 1
    return image, mask


def test_add_and_remove_keep_every_pixel_outside_the_mask_bit_exact(editor):
    image, mask = _photo()
    for edited in (add_lesion(image, mask, "eczema", editor), remove_lesion(image, mask, editor)):
        assert edited.shape == image.shape and edited.dtype == np.uint8
        assert np.array_equal(edited[mask == 0], image[mask == 0])
        assert not np.array_equal(edited[mask == 1], image[mask == 1])  # the model did write inside


def test_add_lesion_accepts_numpy_condition_indices_and_an_empty_mask_changes_nothing(editor):
    image, mask = _photo()
    assert add_lesion(image, mask, np.int64(3), editor).shape == image.shape
    assert np.array_equal(remove_lesion(image, np.zeros_like(mask), editor), image)


@pytest.mark.parametrize("image, mask, message", [
    (np.zeros((20, 20, 3), np.float32), np.ones((20, 20), np.uint8), "uint8"),
    (np.zeros((20, 20), np.uint8), np.ones((20, 20), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((20, 20, 3), np.uint8), np.ones((20, 21), np.uint8), "mask must be"),
    (np.zeros((20, 20, 3), np.uint8), np.ones((20, 20), np.float32), "bool or integer"),
])
def test_bad_photographs_are_refused_with_one_line(editor, image, mask, message):
    with pytest.raises(ValueError, match=message) as error:
        remove_lesion(image, mask, editor)
    assert "\n" not in str(error.value)


def test_unknown_condition_and_missing_direction_are_refused(data, editor):
    image, mask = _photo()
    with pytest.raises(ValueError, match="unknown condition"):
        add_lesion(image, mask, "sunburn", editor)
    remover = le.build("masked-remove", SMOKE, 32, len(data.classes))
    with pytest.raises(ValueError, match="no 'add' direction"):
        add_lesion(image, mask, "eczema", remover)


@pytest.mark.parametrize("condition", [True, False, np.bool_(True), 1.0, None])
def test_a_bool_or_other_non_class_condition_is_refused_in_one_line(editor, condition):
    # True used to be taken as class 1: a flag passed in the condition's place edited in the wrong lesion
    image, mask = _photo()
    with pytest.raises(ValueError, match="not the bool" if isinstance(condition, (bool, np.bool_))
                       else "unknown condition") as error:
        add_lesion(image, mask, condition, editor)
    assert "\n" not in str(error.value)


def test_the_model_level_edit_refuses_bool_conditions(editor):
    image, mask = _photo(32, 32)
    with pytest.raises(ValueError, match="integer class indices, got bool"):
        le.edit(editor, "add", image[None], mask[None], np.array([True]))
    assert le.edit(editor, "add", image[None], mask[None], np.array([1])).shape == (1, 32, 32, 3)


# -- judging edits ---------------------------------------------------------------------------------------------


def test_edit_errors_match_hand_computed_values():
    from dermgan.editing import edit_errors

    source = np.zeros((1, 2, 2, 3), np.uint8)
    truth = np.full((1, 2, 2, 3), 51, np.uint8)  # 0.2 everywhere
    edited = source.copy()
    edited[0, 0, 0] = 255  # inside: error |255 - 51| / 255 = 0.8
    edited[0, 1, 1] = 102  # outside: change 0.4, error 0.2
    mask = np.array([[[1, 0], [0, 0]]])
    got = edit_errors(edited, source, mask, truth)
    assert got["error_inside"] == pytest.approx(0.8)
    assert got["change_outside"] == pytest.approx(0.4 / 3)
    assert got["error_outside"] == pytest.approx((0.2 + 0.2 + 0.2) / 3)


def test_edit_error_intervals_resample_whole_images_and_cover_the_estimate():
    from dermgan.editing import edit_errors, mean_interval

    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    masks = np.zeros((40, 8, 8), np.uint8)
    masks[:, 2:5, 2:5] = 1
    masks[::2, 2:7, 2:7] = 1  # unequal lesion sizes: the pixel-weighted mean is not the mean of image means
    truth = rng.integers(0, 256, source.shape, dtype=np.uint8)
    edited = np.clip(truth.astype(int) + rng.integers(-40, 41, source.shape), 0, 255).astype(np.uint8)
    point = edit_errors(edited, source, masks, truth)
    got = edit_errors(edited, source, masks, truth, n_boot=500, seed=1)
    for name, value in point.items():
        assert got[name] == value and got[f"{name}_lo"] < value < got[f"{name}_hi"]
    # every image edited with the same error: no spread between images, so the interval is the value itself
    same = np.repeat(edited[:1], 40, 0), np.repeat(source[:1], 40, 0), np.repeat(masks[:1], 40, 0), np.repeat(truth[:1], 40, 0)
    flat = edit_errors(*same, n_boot=200)
    assert flat["error_inside_lo"] == pytest.approx(flat["error_inside"]) == pytest.approx(flat["error_inside_hi"])
    # a fraction of 0/1 outcomes: the interval matches the binomial standard error (n = 400, p = 0.3)
    hits = np.r_[np.ones(120), np.zeros(280)]
    low, high = mean_interval(np.r_[hits, np.nan], n_boot=4000)  # NaN: no value, left out
    half = 1.96 * np.sqrt(0.3 * 0.7 / 400)
    assert low == pytest.approx(0.3 - half, abs=0.006) and high == pytest.approx(0.3 + half, abs=0.006)


def test_lesion_contrast_is_zero_on_flat_skin_and_the_colour_distance_on_a_spot():
    from dermgan.editing import lesion_contrast

    image = np.full((2, 16, 16, 3), 100, np.uint8)
    image[1, 6:10, 6:10] = (100, 100, 151)  # a spot 51 units bluer
    mask = np.zeros((2, 16, 16), np.uint8)
    mask[:, 6:10, 6:10] = 1
    assert lesion_contrast(image, mask) == pytest.approx([0.0, 0.2])
