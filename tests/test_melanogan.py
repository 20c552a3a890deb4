"""MelanoGAN baselines (DCGAN, LAPGAN, DDGAN) and Furger's unconditional model: networks, pyramid, recipe, sampling."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

import dermgan.runtime
import dermgan.train
from dermgan.config import MelanoGANConfig
from dermgan.critic import Critic
from dermgan.data.dataset import make_synthetic
from dermgan.models import lapgan as lp
from dermgan.models import melanogan as mg
from dermgan.models.dcgan import DCGANDiscriminator, DCGANGenerator, FurgerDiscriminator, FurgerGenerator
from dermgan.models.pix2pix import count_parameters
from dermgan.train import CheckpointError

TINY = MelanoGANConfig(base_filters=4, max_filters=32, level_filters=4, furger_filters=16, furger_d_filters=4,
                       pyramid_levels=3)


# ---------------------------------------------------------------------------------------------- parameter counts
# Counts worked by hand from the layer lists in the module docstrings (bias-free 4x4 DCGAN convs).

def dcgan_g_count(size, nz, base, cap, width_size=None):
    width = width_size or size
    ch = lambda r: min(cap, base * width // (2 * r))  # noqa: E731
    total, c, r = nz * ch(4) * 16 + 2 * ch(4), ch(4), 4
    while r < size:
        r *= 2
        out = 3 if r == size else ch(r)
        total += c * out * 16 + (0 if r == size else 2 * out)
        c = out
    return total


def dcgan_d_count(size, base, cap, in_channels=3, width_size=None):
    width = width_size or size
    ch = lambda r: min(cap, base * width // (2 * r))  # noqa: E731
    total, c, r, first = 0, in_channels, size, True
    while r > 4:
        r //= 2
        total += c * ch(r) * 16 + (0 if first else 2 * ch(r))
        c, first = ch(r), False
    return total + c * 16


def conv_stack_count(c_in, filters, layers, first_weights):
    """first layer (weights given, no bias) + BN, (layers - 2) x (3x3 conv + BN), 3x3 conv to 3 with bias."""
    return first_weights + 2 * filters + (layers - 2) * (9 * filters * filters + 2 * filters) + 9 * filters * 3 + 3


def test_dcgan_64_matches_the_pytorch_example_counts():
    # The PyTorch DCGAN example (nz 100, 64 filters, 64 px): G 3,576,704 and D 2,765,568 parameters.
    assert count_parameters(DCGANGenerator(64, 100, 64, 512)) == 3_576_704
    assert count_parameters(DCGANDiscriminator(64, 64, 512)) == 2_765_568


@pytest.mark.parametrize("size", [64, 128, 256])
def test_shapes_and_parameter_counts(size):
    cfg, n = TINY, 2
    levels, nz, base, cap, F_ = cfg.pyramid_levels, cfg.noise_dim, cfg.base_filters, cfg.max_filters, cfg.level_filters
    coarse = size >> (levels - 1)
    level_sizes = [coarse << k for k in range(levels)]
    per_level_lap = conv_stack_count(4, F_, cfg.level_layers, 9 * 4 * F_)
    expected = {
        "dcgan": (dcgan_g_count(size, nz, base, cap), dcgan_d_count(size, base, cap)),
        "lapgan": (dcgan_g_count(coarse, nz, base, cap, size) + (levels - 1) * per_level_lap,
                   dcgan_d_count(coarse, base, cap, 3, size)
                   + sum(dcgan_d_count(s, base, cap, 6, size) for s in level_sizes[1:])),
        "ddgan-upsample": (dcgan_g_count(coarse, nz, base, cap, size)
                           + (levels - 1) * conv_stack_count(3, F_, cfg.level_layers, 9 * 3 * F_),
                           sum(dcgan_d_count(s, base, cap, 3, size) for s in level_sizes)),
        "ddgan-deconv": (dcgan_g_count(coarse, nz, base, cap, size)
                         + (levels - 1) * conv_stack_count(3, F_, cfg.level_layers, 16 * 3 * F_),
                         sum(dcgan_d_count(s, base, cap, 3, size) for s in level_sizes)),
    }
    # Furger: dense nz -> 8x8x64 + BN1d, 5x5 transposed convs halving from `filters` + BN, 5x5 conv to 3
    n_up, f = int(math.log2(size // 8)), cfg.furger_filters
    g = cfg.furger_noise_dim * 4096 + 2 * 4096
    c = 64
    for i in range(n_up):
        g += 25 * c * (f >> i) + 2 * (f >> i)
        c = f >> i
    g += 25 * c * 3
    blocks = [cfg.furger_d_filters << i for i in range(n_up)]
    convs = sum(16 * a * b + 2 * b for a, b in zip([3] + blocks[:-1], blocks))
    d = 2 * convs + blocks[-1] * (8 * 8 + 4 * 4)  # two sub-Ds; dense from 8x8 and 4x4 maps
    expected["furger-dcgan"] = (g, d)

    for kind, (g_count, d_count) in expected.items():
        recipe = mg.build(kind, cfg, size)
        assert recipe.parameter_counts() == {"generator": g_count, "discriminator": d_count}, kind
        real = torch.rand(n, 3, size, size) * 2 - 1
        outputs = recipe.generate(recipe.generator, real)
        shapes = [tuple(o.shape) for o in outputs]
        if kind in ("dcgan", "furger-dcgan"):
            assert shapes == [(n, 3, size, size)]
        else:
            assert shapes == [(n, 3, s, s) for s in level_sizes]
        inputs = recipe._fake_inputs(real, outputs)
        logits = recipe._judge_pair(Critic.plain(recipe.discriminator), inputs, inputs)[1]
        assert [tuple(x.shape) for x in logits] == [(n,)] * len(shapes)
        assert mg.sample_images(recipe.generator, 1, seed=0).shape == (1, size, size, 3)


def test_generator_outputs_are_the_tanh_of_their_last_layer():
    """The image is tanh of the last layer's output, value for value (not clipped, not rescaled). The last
    convolution's weights are scaled up (and its bias set) so that its output leaves [-1, 1]: a clamp in tanh's
    place is caught."""
    for kind in ("dcgan", "ddgan-upsample", "ddgan-deconv", "furger-dcgan"):
        torch.manual_seed(0)
        G = mg.build(kind, TINY, 32).generator.eval()
        last_tanh = [m for m in G.modules() if isinstance(m, nn.Tanh)][-1]
        block = next(m for m in G.modules() if isinstance(m, nn.Sequential) and any(c is last_tanh for c in m))
        last_conv = list(block)[[i for i, c in enumerate(block) if c is last_tanh][0] - 1]  # the layer before it
        seen = []
        last_tanh.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
        with torch.no_grad():
            last_conv.weight.mul_(1e4)
            if last_conv.bias is not None:  # (a stage fed by a near-zero coarse image needs it)
                last_conv.bias.copy_(torch.tensor([2.0, -3.0, 0.5]))
            image = G.synthesise([torch.randn(4, *s) * 3 for s in G.noise_shapes()])
        assert torch.equal(image, torch.tanh(seen[-1])), kind
        assert seen[-1].abs().max() > 1, kind


def test_bad_sizes_and_names_are_refused():
    with pytest.raises(ValueError, match="power of two"):
        DCGANGenerator(48)
    with pytest.raises(ValueError, match="pyramid levels"):
        lp.level_sizes(32, 4)  # coarsest would be 4 px
    with pytest.raises(ValueError, match="unknown model 'furger-dcgan-melanoma'"):
        mg.parse_model("furger-dcgan-melanoma")
    with pytest.raises(ValueError, match="unknown DDGAN up-sampling"):
        lp.RefineStage("bicubic", 4)


# ---------------------------------------------------------------------------------------------- the pyramid

def test_pyramid_reconstructs_exactly_from_true_residuals():
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64) * 2 - 1
    pyramid = lp.gaussian_pyramid(x, 4)
    assert [p.shape[-1] for p in pyramid] == [8, 16, 32, 64]
    # down is 2x2 averaging: the coarsest pixel is the mean of its 8x8 block
    assert torch.allclose(pyramid[0][0, 0, 0, 0], x[0, 0, :8, :8].mean())
    assert torch.allclose(lp.reconstruct(pyramid[0], lp.laplacian_residuals(pyramid)), x, atol=1e-12)


class _Oracle(nn.Module):
    """Outputs a fixed tensor whatever its inputs: a generator that has learnt the true answer."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, *inputs):
        return self.value


def test_lapgan_synthesis_reconstructs_the_image_when_generators_output_true_residuals():
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    G = lp.LaplacianGenerator(32, 3, noise_dim=8, base=4, max_filters=16, level_filters=4)
    pyramid = lp.gaussian_pyramid(x, 3)
    G.coarse = _Oracle(pyramid[0])
    G.levels = nn.ModuleList(_Oracle(h) for h in lp.laplacian_residuals(pyramid))
    noises = [torch.randn(3, *s) for s in G.noise_shapes()]
    assert torch.allclose(G.synthesise(noises), x, atol=1e-5)


def test_lapgan_discriminators_see_residual_and_coarse_image():
    recipe = mg.build("lapgan", TINY, 32)
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    inputs = recipe._real_inputs(real)
    pyramid = lp.gaussian_pyramid(real, 3)
    assert torch.equal(inputs[0], pyramid[0])
    for k in (1, 2):
        residual, coarse_up = inputs[k][:, :3], inputs[k][:, 3:]
        assert torch.allclose(coarse_up, lp.up(pyramid[k - 1]))
        assert torch.allclose(residual + coarse_up, pyramid[k], atol=1e-6)


# ---------------------------------------------------------------------------------------------- losses

def test_furger_discriminator_loss_uses_smoothed_real_targets():
    real, fake = torch.tensor([2.0]), torch.tensor([-1.0])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    by_hand = 0.5 * (-(0.95 * math.log(sig(2.0)) + 0.05 * math.log(1 - sig(2.0))) - math.log(1 - sig(-1.0)))
    assert mg.smoothed_bce_d(real, fake, 0.1).item() == pytest.approx(by_hand, rel=1e-6)


def test_furger_discriminator_averages_two_scales():
    D = FurgerDiscriminator(32, 4).eval()
    x = torch.rand(2, 3, 32, 32)
    half = torch.nn.functional.interpolate(x, scale_factor=0.5, mode="nearest")
    assert torch.allclose(D(x), 0.5 * (D.full_scale(x) + D.half_scale(half)))
    assert count_parameters(FurgerGenerator(32, 100, 8)) > 0


# ---------------------------------------------------------------------------------------------- data

@pytest.fixture(scope="module")
def skin():
    return make_synthetic(32, 160, seed=5, workers=1)


def test_training_images_per_model(skin):
    train = skin.split("train")
    melanoma = mg.melanoma_label(skin.classes)
    assert skin.classes[melanoma] == "melanoma"
    assert len(mg.training_images("lapgan", train)) == len(train)
    assert len(mg.training_images("furger-dcgan", train)) == 2 * len(train)  # plus the healthy twins
    only = mg.training_images("dcgan-melanoma", train)
    assert len(only) == int((train.table["label"] == melanoma).sum()) > 0
    no_melanoma = train.select(np.flatnonzero(train.table["label"].to_numpy() != melanoma))
    no_melanoma.classes = tuple(c if c != "melanoma" else "other" for c in no_melanoma.classes)
    with pytest.raises(ValueError, match="no melanoma class"):
        mg.training_images("lapgan-melanoma", no_melanoma)


# ---------------------------------------------------------------------------------------------- training

def _ctx(tmp_path, **changes):
    values = dict(steps=8, batch_size=4, base_filters=8, max_filters=32, level_filters=4, furger_filters=8,
                  furger_d_filters=4, checkpoint_every=4, sample_every=4, log_every=1, lr=2e-3, furger_lr=2e-3)
    values.update(changes)
    return dermgan.runtime.start("smoke", str(tmp_path), 0, "cpu", "synthetic", None, melanogan=values)


@pytest.mark.parametrize("name", mg.KINDS)
def test_short_training_moves_losses_and_changes_samples(tmp_path, skin, name):
    ctx = _ctx(tmp_path)
    train = skin.split("train")
    torch.manual_seed(0)
    before = mg.sample_images(mg.build(name, ctx.profile.melanogan, 32).generator, 4, seed=1)
    torch.manual_seed(0)  # train_model builds its networks from the same torch state: the same initial weights
    recipe, result = mg.train_model(name, ctx, train)
    assert result.step == 8
    log = pd.read_csv(tmp_path / "logs" / f"{name}.csv")
    assert len(log) == 8 and np.isfinite(log[["loss_d", "loss_g"]].to_numpy()).all()
    assert log["loss_d"].nunique() > 4 and log["loss_g"].nunique() > 4
    G, meta = mg.load_generator(tmp_path / "checkpoints" / name)
    assert meta["model"] == name and meta["data"]["n_images"] == len(mg.training_images(name, train))
    after = mg.sample_images(G, 4, seed=1)
    change = np.abs(after.astype(float) - before.astype(float)).mean()
    assert change > 0.1  # mean absolute change in intensity levels; sampling itself is deterministic
    assert sorted(p.name for p in (tmp_path / "checkpoints" / name / "grids").glob("*.png")) == [
        "step_000004.png", "step_000008.png"]


def test_dcgan_learns_to_use_its_noise_under_the_default_loss(tmp_path, skin):
    """The regression of issue 12: under LSGAN this DCGAN gave one image for every noise vector (diversity 5.0
    levels here at 400 steps, 1.0 at the cpu profile); under the default BCE loss it reached 19.1 on this
    machine. Diversity: per-pixel standard deviation across 64 samples, in intensity levels (real: ~37)."""
    cfg = MelanoGANConfig(steps=400, checkpoint_every=0, sample_every=0, log_every=50)
    train = skin.split("train")
    real = np.asarray(train.images, dtype=float)
    torch.manual_seed(0)
    recipe = mg.build("dcgan", cfg, 32)
    dermgan.train.train(recipe, mg.ImageDataset(mg.training_images("dcgan", train)),
                        mg.train_config("dcgan", cfg, 0, "cpu"), tmp_path, None, None, resume=False)
    samples = mg.sample_images(recipe.generator, 64, seed=0).astype(float)
    assert samples.std(axis=0).mean() > 0.25 * real.std(axis=0).mean()


def test_resume_refuses_other_data(tmp_path, skin):
    ctx = _ctx(tmp_path, steps=2, checkpoint_every=0, sample_every=0)
    train = skin.split("train")
    mg.train_model("dcgan", ctx, train)
    other = train.select(np.arange(len(train) - 4))
    with pytest.raises(CheckpointError, match="trained with other data"):
        mg.train_model("dcgan", ctx, other)
    _, result = mg.train_model("dcgan", ctx, other, resume=False)  # starting over is allowed
    assert result.steps_this_run == 2


def test_too_few_images_for_a_batch_is_an_error(tmp_path, skin):
    ctx = _ctx(tmp_path, batch_size=64)
    with pytest.raises(ValueError, match="dcgan-melanoma: .* fewer than one batch of 64"):
        mg.train_model("dcgan-melanoma", ctx, skin.split("train"))


# ---------------------------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("kind", ["dcgan", "lapgan", "ddgan-deconv", "furger-dcgan"])
def test_sampling_is_deterministic_per_seed_and_independent_of_batching(kind):
    torch.manual_seed(0)
    G = mg.build(kind, TINY, 32).generator
    with torch.no_grad():  # DCGAN's N(0, 0.02) init gives near-constant grey images: make outputs differ visibly
        for p in G.parameters():
            p.normal_(0.0, 0.3)
    G.train()  # sample_images must switch to eval mode itself and restore the mode
    a = mg.sample_images(G, 5, seed=3, batch_size=2)
    assert G.training
    assert np.array_equal(a, mg.sample_images(G, 5, seed=3, batch_size=2))
    # other batchings give the same noise; BLAS may round differently, so allow one intensity level
    for other in (mg.sample_images(G, 5, seed=3, batch_size=5), mg.sample_images(G, 3, seed=3)):
        assert np.abs(a[:len(other)].astype(int) - other).max() <= 1
    assert not np.array_equal(a, mg.sample_images(G, 5, seed=4))
    assert len({img.tobytes() for img in a}) == 5  # different images within a seed


def test_samples_file_for_05_and_07_comes_from_the_ema(tmp_path, skin):
    ctx = _ctx(tmp_path, steps=2, batch_size=2, checkpoint_every=0, sample_every=0, ema_decay=0.5)
    for name in ("ddgan-upsample-melanoma", "ddgan-upsample"):
        mg.train_model(name, ctx, skin.split("train"))
    images = mg.write_model_samples(ctx, "ddgan-upsample-melanoma", 6, skin.classes, {"steps": 2})
    path = tmp_path / "samples" / "ddgan-upsample-melanoma" / "samples.npz"
    with np.load(path) as npz:
        assert npz["images"].shape == (6, 32, 32, 3) and npz["images"].dtype == np.uint8
        assert np.array_equal(npz["images"], images)
        assert (npz["condition"] == skin.classes.index("melanoma")).all()
        assert (npz["fitzpatrick"] == -1).all() and (npz["source_index"] == -1).all()
    # the evaluated generator is the EMA, not the raw G
    saved = dermgan.train.load_checkpoint(tmp_path / "checkpoints" / "ddgan-upsample-melanoma" / "generator.pt")
    G, meta = mg.load_generator(tmp_path / "checkpoints" / "ddgan-upsample-melanoma")
    assert meta["weights"] == "ema"
    assert all(torch.equal(G.state_dict()[k], v) for k, v in saved["ema"].items())
    assert any(not torch.equal(saved["ema"][k], v) for k, v in saved["generator"].items())
    mg.write_model_samples(ctx, "ddgan-upsample", 6, skin.classes, {"steps": 2})
    with np.load(tmp_path / "samples" / "ddgan-upsample" / "samples.npz") as npz:
        assert (npz["condition"] == -1).all()
