"""Pix2Pix networks, DermGAN variants and the GAN losses."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from dermgan import losses
from dermgan.config import PROFILES, DermGANConfig
from dermgan.critic import Critic
from dermgan.models import dermgan as dg
from dermgan.models.pix2pix import (
    MultiScaleDiscriminator,
    PatchDiscriminator,
    UNetGenerator,
    count_parameters,
)

torch.set_num_threads(1)  # tiny tensors: a second thread only adds contention on shared machines


# -- parameter counts against the reference implementation's published numbers ------------------------------


def test_unet_256_has_54_41_million_parameters():
    G = UNetGenerator(3, 3, image_size=256, base=64, upsample="transpose", norm="batch")
    assert round(count_parameters(G) / 1e6, 2) == 54.41


def test_basic_patchgan_has_2_77_million_parameters():
    D = PatchDiscriminator(6, base=64, n_layers=3, norm="batch")
    assert round(count_parameters(D) / 1e6, 2) == 2.77


def test_patchgan_receptive_field_is_70_pixels():
    # Receptive field of k4 convs with strides 2,2,2,1,1: r = 1 + sum_i (k-1) * prod(strides before i).
    strides = [2, 2, 2, 1, 1]
    field, jump = 1, 1
    for s in strides:
        field += 3 * jump
        jump *= s
    assert field == 70
    D = PatchDiscriminator(6, base=4)
    convs = [m for m in D.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride[0] for c in convs] == strides and all(c.kernel_size == (4, 4) for c in convs)


# -- shapes and ranges ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [16, 32, 64])
@pytest.mark.parametrize("upsample", ["transpose", "resize", "bilinear"])
def test_generator_output_is_tanh_of_its_last_convolution(size, upsample):
    """With the last convolution's weights zeroed and its bias set to (3, 0, -0.5), every pixel of every image
    is (tanh 3, 0, tanh -0.5), whatever the input: the output layer is that convolution and a tanh."""
    torch.manual_seed(0)
    G = UNetGenerator(12, 3, image_size=size, base=4, upsample=upsample).eval()
    last = [m for m in G.up[-1].modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([3.0, 0.0, -0.5]))
        y = G(torch.randn(2, 12, size, size) * 3)
    assert y.shape == (2, 3, size, size)
    expected = torch.tanh(torch.tensor([3.0, 0.0, -0.5])).view(1, 3, 1, 1).expand_as(y)
    assert torch.allclose(y, expected, atol=1e-6)
    assert G.depth == int(math.log2(size))


def test_generator_skip_connections_and_dropout_placement():
    G = UNetGenerator(3, 3, image_size=64, base=4, n_dropout=3)
    dropouts = [j for j, block in enumerate(G.up) if any(isinstance(m, torch.nn.Dropout) for m in block)]
    assert dropouts == [0, 1, 2]
    # A skip connection exists: changing only the input changes the output even with the bottleneck frozen
    # at zero, because the outermost decoder block sees the first encoder block's features.
    G.eval()
    with torch.no_grad():
        for p in G.down[-1].parameters():
            p.zero_()
        a, b = G(torch.zeros(1, 3, 64, 64)), G(torch.ones(1, 3, 64, 64))
    assert not torch.allclose(a, b)


def test_generator_rejects_sizes_it_cannot_halve():
    with pytest.raises(ValueError, match="power of two"):
        UNetGenerator(3, 3, image_size=48)
    with pytest.raises(ValueError, match="upsample"):
        UNetGenerator(3, 3, image_size=32, upsample="bicubic")


@pytest.mark.parametrize("size", [16, 32])
def test_resize_generator_with_reflect_padding(size):
    G = UNetGenerator(3, 3, image_size=size, base=4, upsample="resize", resize_padding="reflect").eval()
    assert G(torch.randn(1, 3, size, size)).shape == (1, 3, size, size)
    convs = [m for m in G.up.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.padding_mode == "reflect" for c in convs)
    with pytest.raises(ValueError, match="resize_padding"):
        UNetGenerator(3, 3, image_size=size, upsample="resize", resize_padding="circular")


def test_resize_generator_has_no_transposed_convolutions():
    G = UNetGenerator(3, 3, image_size=32, base=4, upsample="resize")
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in G.modules())
    assert any(isinstance(m, torch.nn.Upsample) and m.mode == "nearest" for m in G.modules())


def test_initialisation_follows_pix2pix():
    torch.manual_seed(0)
    G = UNetGenerator(3, 3, image_size=256, base=64)
    conv = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    bn = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(conv.mean()) < 1e-3 and abs(conv.std() - 0.02) < 1e-3
    assert abs(bn.mean() - 1) < 5e-3 and abs(bn.std() - 0.02) < 5e-3


def test_multiscale_discriminator_returns_features_per_scale():
    D = MultiScaleDiscriminator(6, base=4, n_layers=3, n_scales=3, image_size=64)
    out = D(torch.randn(2, 6, 64, 64))
    assert len(out) == 3
    assert [o[-1].shape[1] for o in out] == [1, 1, 1]
    assert out[0][0].shape[-1] == 32 and out[1][0].shape[-1] == 16  # scale 1 sees a half-size input
    assert out[0][-1].shape[-1] > out[1][-1].shape[-1]


def test_multiscale_discriminator_shrinks_layers_for_small_inputs_and_refuses_too_small():
    D = MultiScaleDiscriminator(6, base=4, n_scales=2, image_size=32)
    assert [d.n_layers for d in D.scales] == [3, 2]
    with pytest.raises(ValueError, match="too small"):
        MultiScaleDiscriminator(6, base=4, n_scales=4, image_size=32)


# -- variants -----------------------------------------------------------------------------------------------


def test_each_ablation_differs_from_dermgan_in_exactly_one_field():
    cfg = DermGANConfig()
    found = dg.variants(cfg, ablation=True)
    assert {"pix2pix", "dermgan", "dermgan-single-d", "dermgan-no-fm"} <= set(found)
    full = dataclasses.asdict(found["dermgan"])
    fields = [f.name for f in dataclasses.fields(dg.Variant) if f.name != "name"]
    for name, variant in found.items():
        if name in ("pix2pix", "dermgan"):
            continue
        changed = [k for k in fields if dataclasses.asdict(variant)[k] != full[k]]
        assert len(changed) == 1, (name, changed)
    # the two multi-scale switches are separate ablations now
    assert found["dermgan-single-d"].n_scales == 1 and found["dermgan-single-d"].lambda_fm == cfg.lambda_fm
    assert found["dermgan-no-fm"].n_scales == cfg.n_scales and found["dermgan-no-fm"].lambda_fm == 0
    assert found["pix2pix"] == dg.Variant("pix2pix", "transpose", 0.0, 1, 0.0, "colour")
    assert set(dg.variants(dataclasses.replace(cfg, ablation=False))) == {"pix2pix", "dermgan"}


def test_ablation_runs_cover_every_variant_and_seed():
    cfg = dataclasses.replace(DermGANConfig(), seeds=3)
    runs = dg.ablation_runs(cfg, seed=5)
    assert len(runs) == 3 * len(dg.variants(cfg)) and len({r[0] for r in runs}) == len(runs)
    assert ("dermgan-no-fm-s7", "dermgan-no-fm", 7) in runs and ("pix2pix-s5", "pix2pix", 5) in runs
    with pytest.raises(ValueError, match="seeds"):
        dg.ablation_runs(dataclasses.replace(cfg, seeds=0), seed=0)


@pytest.mark.parametrize("name", ["pix2pix", "dermgan", "dermgan-onehot"])
def test_recipe_losses_are_finite_and_backpropagate(name):
    torch.manual_seed(0)
    cfg = dataclasses.replace(PROFILES["smoke"].dermgan, base_filters=4)
    recipe = dg.build(name, cfg, image_size=32)
    channels = 3 if recipe.variant.encoding == "colour" else 12
    batch = (
        torch.rand(2, channels, 32, 32) * 2 - 1,
        torch.rand(2, 3, 32, 32) * 2 - 1,
        (torch.rand(2, 1, 32, 32) > 0.7).float(),
        torch.tensor([0, 3]),
    )
    fake = recipe.generate(recipe.generator, batch)
    loss_d, logs_d = recipe.d_loss(Critic.plain(recipe.discriminator), batch, fake.detach())
    loss_g, logs_g = recipe.g_loss(Critic.plain(recipe.discriminator), batch, fake)
    assert torch.isfinite(loss_d) and torch.isfinite(loss_g)
    loss_g.backward()
    assert all(p.grad is not None for p in recipe.generator.parameters())
    assert ("g_lesion_l1" in logs_g) == bool(recipe.variant.lambda_lesion)
    assert ("g_fm" in logs_g) == bool(recipe.variant.lambda_fm)
    rows = recipe.sample_rows(recipe.generator.eval(), batch)
    assert [r.shape for r in rows] == [(2, 32, 32, 3)] * 3 and all(r.dtype == np.uint8 for r in rows)


def test_generate_returns_uint8_and_is_batch_independent():
    torch.manual_seed(0)
    G = UNetGenerator(3, 3, image_size=32, base=4)
    maps = torch.rand(5, 3, 32, 32) * 2 - 1
    together = dg.generate(G, maps, batch_size=5)
    apart = dg.generate(G, maps, batch_size=2)
    assert together.dtype == np.uint8 and together.shape == (5, 32, 32, 3)
    assert np.array_equal(together, apart)
    assert G.training  # restored


def test_write_samples_follows_the_conventions(tmp_path):
    images = np.zeros((3, 8, 8, 3), np.uint8)
    training = {"data": {"dataset": "synthetic", "n": 3}, "code": [{"by": "test", "commit": None, "step": 0}]}
    path = dg.write_samples(tmp_path, "pix2pix", images, [0, 1, 2], [1, 2, 3], [5, 6, 7],
                            {"steps": 3, "training": training})
    with np.load(path) as saved:
        assert set(saved.files) == {"images", "condition", "fitzpatrick", "source_index"}
        assert saved["images"].dtype == np.uint8 and saved["source_index"].tolist() == [5, 6, 7]
    assert (tmp_path / "samples" / "pix2pix" / "meta.json").is_file()
    with pytest.raises(ValueError, match="condition"):
        dg.write_samples(tmp_path, "x", images, [0], [1, 2, 3], [5, 6, 7], {"training": training})
    with pytest.raises(ValueError, match="must say what trained the model"):
        dg.write_samples(tmp_path, "x", images, [0, 1, 2], [1, 2, 3], [5, 6, 7], {"steps": 3})


def test_reconstruction_errors_by_hand():
    real = np.zeros((1, 2, 2, 3), np.uint8)
    generated = real.copy()
    generated[0, 0, 0] = 255  # one pixel fully wrong, inside the lesion
    lesion = np.array([[[1, 1], [0, 0]]])
    errors = dg.reconstruction_errors(generated, real, lesion)
    assert errors["l1"] == pytest.approx(0.25) and errors["l1_lesion"] == pytest.approx(0.5)


# -- losses against hand-worked numbers ---------------------------------------------------------------------


def test_vanilla_losses():
    real, fake = torch.tensor([2.0]), torch.tensor([-1.0])
    # BCE(2, 1) = ln(1 + e^-2); BCE(-1, 0) = ln(1 + e^-1); D loss halves their sum.
    expected_d = 0.5 * (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)))
    assert losses.adversarial_d(real, fake, "vanilla").item() == pytest.approx(expected_d, rel=1e-6)
    assert losses.adversarial_g(fake, "vanilla").item() == pytest.approx(math.log1p(math.exp(1)), rel=1e-6)
    assert losses.adversarial_d(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(math.log(2), rel=1e-6)


def test_lsgan_and_hinge_losses():
    real, fake = torch.tensor([0.5, 1.5]), torch.tensor([0.5, -0.5])
    # lsgan: mean((r-1)^2) = 0.25, mean(f^2) = 0.25 -> 0.5 * 0.5; G: mean((f-1)^2) = (0.25 + 2.25) / 2
    assert losses.adversarial_d(real, fake, "lsgan").item() == pytest.approx(0.25)
    assert losses.adversarial_g(fake, "lsgan").item() == pytest.approx(1.25)
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-2.0, 0.5])
    # hinge: mean(relu(1-r)) = 0.25, mean(relu(1+f)) = 0.75 -> 0.5; G: -mean(f) = 0.75
    assert losses.adversarial_d(real, fake, "hinge").item() == pytest.approx(0.5)
    assert losses.adversarial_g(fake, "hinge").item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="wgan"):
        losses.adversarial_g(fake, "wgan")


def test_multiscale_adversarial_loss_is_the_mean_over_scales():
    a, b = torch.tensor([0.5]), torch.tensor([1.5, 3.5])
    assert losses.adversarial_g([a, b], "hinge").item() == pytest.approx((-0.5 - 2.5) / 2)


def test_l1_and_masked_l1():
    prediction = torch.zeros(1, 3, 2, 2)
    target = torch.zeros(1, 3, 2, 2)
    target[0, :, 0, 0] = 0.5  # lesion pixel, error 0.5 in each channel
    target[0, :, 1, 1] = 1.0  # healthy pixel, error 1
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert losses.l1(prediction, target).item() == pytest.approx((0.5 + 1.0) / 4)
    assert losses.masked_l1(prediction, target, mask).item() == pytest.approx(0.5)
    assert losses.masked_l1(prediction, target, mask[:, 0]).item() == pytest.approx(0.5)


def test_masked_l1_is_zero_and_differentiable_for_an_empty_mask():
    prediction = torch.randn(2, 3, 4, 4, requires_grad=True)
    loss = losses.masked_l1(prediction, torch.zeros(2, 3, 4, 4), torch.zeros(2, 1, 4, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(prediction.grad, torch.zeros_like(prediction))


def test_feature_matching_uses_pix2pixhd_weights_by_hand():
    # pix2pixHD: layer weight 4 / (number of intermediate layers) per scale, scale weight 1 / n_scales.
    # scale 0: two layers with L1 1.0 and 0.5 -> 4/2 * 1.5 = 3; scale 1: one layer with L1 0.25 -> 4/1 * 0.25 = 1.
    # total = (3 + 1) / 2 = 2. The logits (last entries, 9 apart) are ignored.
    real = [[torch.zeros(2), torch.zeros(3), torch.zeros(1)], [torch.zeros(4), torch.zeros(1)]]
    fake = [
        [torch.ones(2), torch.full((3,), 0.5), torch.full((1,), 9.0)],
        [torch.full((4,), 0.25), torch.full((1,), 9.0)],
    ]
    assert losses.feature_matching(real, fake).item() == pytest.approx(2.0)
    # one scale's list alone: no scale averaging
    assert losses.feature_matching(real[0], fake[0]).item() == pytest.approx(3.0)
    # real features are constants
    f = torch.ones(2, requires_grad=True)
    r = torch.zeros(2, requires_grad=True)
    losses.feature_matching([r, torch.zeros(1)], [f, torch.zeros(1)]).backward()
    assert r.grad is None and f.grad is not None


def test_feature_matching_on_a_patchgan_weighs_each_layer_4_over_n_layers_plus_1():
    torch.manual_seed(0)
    D = MultiScaleDiscriminator(6, base=4, n_layers=3, n_scales=2, image_size=64)
    real, fake = D(torch.randn(2, 6, 64, 64)), D(torch.randn(2, 6, 64, 64))
    assert [len(scale) for scale in real] == [5, 5]  # n_layers + 1 intermediate features + the logits
    by_hand = sum(
        0.5 * (4 / 4) * (f - r).abs().mean() for rs, fs in zip(real, fake) for r, f in zip(rs[:-1], fs[:-1])
    )
    assert losses.feature_matching(real, fake).item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_cycle_and_identity_are_l1():
    x, y = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.25)
    assert losses.cycle_loss(x, y).item() == pytest.approx(0.25)
    assert losses.identity_loss(x, y).item() == pytest.approx(0.25)


# -- joint augmentation -------------------------------------------------------------------------------------


def _blob_item(size=16, seed=0):
    """(map, image, mask, condition) whose three arrays show the same asymmetric blob: map and image are +1 on
    it and -1 elsewhere (3 channels), the mask is 1 on it."""
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(1, size, size, generator=g) > 0.6).float()
    mask[:, 1:5, 2:4] = 1.0  # something asymmetric for the flips to move
    signed = mask * 2 - 1
    return signed.expand(3, -1, -1).clone(), signed.expand(3, -1, -1).clone(), mask, torch.tensor(1)


def test_augmentation_applies_the_same_transform_to_map_image_and_mask():
    from dermgan.data.augment import AugmentedPairs

    size = 16
    base = [_blob_item(size, seed) for seed in range(4)]
    pairs = AugmentedPairs(base, copies=20, seed=3, flip=True, jitter=2.0)
    seen = set()
    for index in range(len(base), len(pairs)):
        semantic, image, mask, condition = pairs[index]
        t = pairs.transform(index, size)
        seen.add((t.top, t.left, t.flip_h, t.flip_v))
        # Independent reference: a x2 nearest resize is np.repeat; crop; flip with numpy.
        src = base[index % len(base)][2][0].numpy()
        big = np.repeat(np.repeat(src, 2, 0), 2, 1)[t.top : t.top + size, t.left : t.left + size]
        if t.flip_h:
            big = big[:, ::-1]
        if t.flip_v:
            big = big[::-1, :]
        assert np.array_equal(mask[0].numpy(), big)
        assert torch.equal(semantic, (mask * 2 - 1).expand(3, -1, -1))  # the map shows exactly the mask
        # the image was resized bilinearly: at x2 every value keeps the sign of its nearest source pixel
        assert torch.equal(image > 0, (mask > 0).expand(3, -1, -1))
        assert condition.item() == 1 and semantic.shape == (3, size, size) and image.shape == (3, size, size)
    assert len(seen) > 20  # many different crops and flips


def test_augmentation_is_a_pure_function_of_the_index_and_copy_0_is_untouched():
    from dermgan.data.augment import AugmentedPairs

    base = [_blob_item(16, seed) for seed in range(3)]
    a = AugmentedPairs(base, copies=4, seed=7, flip=True, jitter=1.25)
    b = AugmentedPairs(base, copies=4, seed=7, flip=True, jitter=1.25)
    for index in [11, 5, 11, 0, 9]:  # any order, repeated
        assert all(torch.equal(x, y) for x, y in zip(a[index], b[index]))
    for index in range(3):  # copy 0 is the data as it is (the loop's fixed sample grid)
        assert all(torch.equal(x, y) for x, y in zip(a[index], base[index]))
    other = AugmentedPairs(base, copies=4, seed=8, flip=True, jitter=1.25)
    assert any(a.transform(i, 16) != other.transform(i, 16) for i in range(3, 12))
    with pytest.raises(ValueError, match="jitter"):
        AugmentedPairs(base, copies=2, seed=0, jitter=0.9)
    with pytest.raises(IndexError):
        a[12]


def _tiny_training(tmp_path, steps, on_step=None, resume=True, **cfg_changes):
    from dermgan.data.augment import AugmentedPairs
    from dermgan.train import train

    cfg = dataclasses.replace(PROFILES["smoke"].dermgan, base_filters=4, batch_size=2, steps=steps,
                              checkpoint_every=2, sample_every=0, log_every=1, **cfg_changes)
    torch.manual_seed(0)
    recipe = dg.build("dermgan", cfg, image_size=16)
    data = AugmentedPairs([_blob_item(16, seed) for seed in range(4)], copies=4, seed=0, jitter=1.25)
    return recipe, train(recipe, data, dg.train_config(cfg, seed=0, device="cpu"), tmp_path, resume=resume,
                         on_step=on_step)


def test_augmented_training_resumes_exactly(tmp_path):
    _tiny_training(tmp_path / "whole", steps=4, resume=False)

    def crash(step):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _tiny_training(tmp_path / "resumed", steps=4, on_step=crash, resume=False)
    _tiny_training(tmp_path / "resumed", steps=4)
    whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["generator"]
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["generator"]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_evaluated_generator_is_the_ema_when_kept_and_says_so(tmp_path):
    _tiny_training(tmp_path / "ema", steps=2, ema_decay=0.5)
    saved = torch.load(tmp_path / "ema" / "generator.pt", weights_only=True)
    G, meta = dg.evaluated_generator(tmp_path / "ema", trained_on=None)
    assert meta["evaluation"] == {"weights": "ema", "normalisation": "eval", "step": 2}
    assert not G.training
    assert all(torch.equal(v, saved["ema"][k]) for k, v in G.state_dict().items())
    assert any(not torch.equal(saved["ema"][k], saved["generator"][k]) for k in saved["ema"])
    _tiny_training(tmp_path / "raw", steps=2, ema_decay=0.5, eval_weights="raw")
    G, meta = dg.evaluated_generator(tmp_path / "raw", trained_on=None)
    saved = torch.load(tmp_path / "raw" / "generator.pt", weights_only=True)
    assert meta["evaluation"]["weights"] == "raw"
    assert all(torch.equal(v, saved["generator"][k]) for k, v in G.state_dict().items())
    _tiny_training(tmp_path / "none", steps=2, ema_decay=0.0)  # no EMA kept: "ema" falls back to the raw weights
    assert dg.evaluated_generator(tmp_path / "none", trained_on=None)[1]["evaluation"]["weights"] == "raw"


# -- artefacts ----------------------------------------------------------------------------------------------


def test_flat_map_gives_a_flat_image_only_with_reflect_padding_everywhere():
    # Nothing in a flat map asks for an edge: with reflect padding every layer maps a constant to a constant, so
    # the image is exactly flat per channel. Zero padding in the encoder makes the border rows differ (the frame).
    flat = torch.full((1, 3, 64, 64), 0.3)

    def spread(encoder_padding, resize_padding="reflect"):
        torch.manual_seed(0)
        G = UNetGenerator(3, 3, 64, base=8, upsample="resize", resize_padding=resize_padding,
                          encoder_padding=encoder_padding).eval()
        with torch.no_grad():
            y = G(flat)[0]
        return (y - y[:, 32:33, 32:33]).abs().amax(dim=0)  # deviation from the centre pixel, per position

    assert spread("reflect").max().item() == 0.0
    frame = spread("zeros")
    assert frame[:3].max() > 100 * frame[8:56, 8:56].max()  # concentrated at the border
    assert spread("reflect", "zeros").max() > 1e-6
    with pytest.raises(ValueError, match="encoder_padding"):
        UNetGenerator(3, 3, 32, encoder_padding="circular")


def test_dermgan_uses_reflect_padding_and_pix2pix_keeps_zero_padding():
    cfg = PROFILES["cpu"].dermgan
    for name, mode in (("dermgan", "reflect"), ("pix2pix", "zeros"), ("dermgan-transpose", "zeros")):
        G = dg.build(name, dataclasses.replace(cfg, base_filters=4), image_size=32).generator
        assert all(block[-2 if i else -1].padding_mode == mode for i, block in enumerate(G.down)
                   if isinstance(block[-2 if i else -1], torch.nn.Conv2d)), name


def test_generate_is_batch_independent_and_leaves_the_generator_trainable():
    """Sampling (batched, channels_last, inference_mode) gives the images of a one-by-one float32 forward, and
    the generator can still be trained afterwards (no inference tensors left in its parameters)."""
    from dermgan.config import get_profile
    from dermgan.models import dermgan as dg

    torch.manual_seed(0)
    recipe = dg.build("dermgan", get_profile("smoke").dermgan, 32)
    maps = torch.rand(5, 3, 32, 32) * 2 - 1
    batched = dg.generate(recipe, maps, batch_size=4)
    recipe.generator.eval()
    with torch.no_grad():
        one_by_one = np.concatenate([dg.to_uint8(recipe.generator(maps[i:i + 1])) for i in range(5)])
    assert np.abs(batched.astype(int) - one_by_one.astype(int)).max() <= 1  # BLAS may round a level apart
    recipe.generator.train()
    recipe.generator(maps).mean().backward()
    assert all(p.is_contiguous() for p in recipe.generator.parameters())
