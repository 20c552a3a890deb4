"""The procedural renderer: determinism, shapes, colour science against hand-worked values, metadata truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dermgan.data import synth
from dermgan.data.conditions import CONDITION_NAMES, N_CONDITIONS


# --- colour science: hand-worked values
# -----------------------------------------------------------------------

def test_lab_of_white_black_and_grey():
    lab = synth.rgb_to_lab([[255, 255, 255], [0, 0, 0], [119, 119, 119]])
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=1e-3)
    np.testing.assert_allclose(lab[1], [0.0, 0.0, 0.0], atol=1e-6)
    # grey 119: linear = ((119/255 + 0.055)/1.055)^2.4 = 0.18447; L* = 116 * 0.18447^(1/3) - 16 = 50.03
    np.testing.assert_allclose(lab[2], [50.03, 0.0, 0.0], atol=0.02)


def test_lab_of_pure_red_matches_the_published_value():
    # sRGB red, D65: L* 53.24, a* 80.09, b* 67.20 (the value every colour calculator gives)
    np.testing.assert_allclose(synth.rgb_to_lab([255, 0, 0]), [53.24, 80.09, 67.20], atol=0.01)


def test_ita_formula_and_bands():
    lab = synth.rgb_to_lab([200, 150, 120])
    expected = np.degrees(np.arctan((lab[0] - 50) / lab[2]))
    assert synth.ita_from_rgb([200, 150, 120]) == pytest.approx(expected)
    types = synth.fitzpatrick_from_ita([70, 55.01, 55, 41.5, 41, 30, 28, 12, 10, -10, -30, -31, -60])
    assert types.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 6]


def test_ita_band_edges_belong_to_the_darker_type():
    # Del Bino: very light > 55, light 41-55, intermediate 28-41, tan 10-28, brown -30-10, dark <= -30
    assert synth.fitzpatrick_from_ita([55.0, 41.0, 28.0, 10.0, -30.0]).tolist() == [2, 3, 4, 5, 6]
    assert synth.fitzpatrick_from_ita([60, 50, 35, 20, 0, -40]).tolist() == [1, 2, 3, 4, 5, 6]


def test_more_melanin_gives_darker_lower_ita_skin():
    melanin = np.array([0.01, 0.05, 0.1, 0.2, 0.4])
    srgb = synth.linear_to_srgb(synth.skin_reflectance(melanin, 0.01)) * 255
    ita = synth.ita_from_rgb(srgb)
    assert np.all(np.diff(ita) < 0)
    assert ita[0] > 55 and ita[-1] < -30  # the model spans the whole Fitzpatrick range
    assert np.all(srgb[:, 0] > srgb[:, 1]) and np.all(srgb[:, 1] > srgb[:, 2])  # skin: R > G > B


def test_blood_reddens_less_on_dark_skin():
    def redness(melanin, blood):
        return synth.rgb_to_lab(synth.linear_to_srgb(synth.skin_reflectance(melanin, blood)) * 255)[1]
    light_gain = redness(0.02, 0.06) - redness(0.02, 0.01)
    dark_gain = redness(0.4, 0.06) - redness(0.4, 0.01)
    assert light_gain > 0 and dark_gain < 0.6 * light_gain


def test_lookup_table_matches_the_exact_model():
    rng = np.random.default_rng(0)
    melanin, blood = np.exp(rng.uniform(np.log(0.003), np.log(0.8), 500)), np.exp(rng.uniform(-7, -1, 500))
    np.testing.assert_allclose(synth.skin_reflectance_fast(melanin, blood),
                               synth.skin_reflectance(melanin, blood), atol=2e-3)


# --- rendering
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch():
    conditions = list(range(N_CONDITIONS)) * 2
    return synth.render_images(range(16), conditions, size=48, seed=3, workers=1)


def test_shapes_and_dtypes(batch):
    assert batch["images"].shape == (16, 48, 48, 3) and batch["images"].dtype == np.uint8
    assert batch["healthy"].shape == (16, 48, 48, 3) and batch["healthy"].dtype == np.uint8
    for key in ("lesion_masks", "skin_masks"):
        assert batch[key].shape == (16, 48, 48) and batch[key].dtype == np.uint8
        assert set(np.unique(batch[key])) <= {0, 1}
    assert all(m.any() for m in batch["lesion_masks"])
    assert np.all(batch["lesion_masks"] <= batch["skin_masks"])  # lesions lie on skin


def test_byte_identical_across_calls_and_batch_compositions(batch):
    again = synth.render_images(range(16), list(range(N_CONDITIONS)) * 2, size=48, seed=3, workers=1)
    alone = synth.render_images([5, 11], [5, 3], size=48, seed=3, workers=1)  # other neighbours, other order
    for key in ("images", "healthy", "lesion_masks", "skin_masks"):
        assert np.array_equal(again[key], batch[key])
        assert np.array_equal(alone[key][0], batch[key][5]) and np.array_equal(alone[key][1], batch[key][11])
    assert again["records"] == batch["records"]


def test_two_worker_processes_give_the_same_bytes():
    one = synth.render_images(range(6), [0, 7, 2, 3, 4, 5], size=32, seed=1, workers=1)
    two = synth.render_images(range(6), [0, 7, 2, 3, 4, 5], size=32, seed=1, workers=2)
    assert np.array_equal(one["images"], two["images"]) and one["records"] == two["records"]


def test_seed_changes_images(batch):
    other = synth.render_images([0], [0], size=48, seed=4, workers=1)
    assert not np.array_equal(other["images"][0], batch["images"][0])


def test_record_matches_masks_and_colour(batch):
    for k, record in enumerate(batch["records"]):
        mask = batch["lesion_masks"][k]
        assert record["condition"] == CONDITION_NAMES[record["label"]]
        assert record["lesion_area"] == pytest.approx(mask.mean())
        rows, cols = np.nonzero(mask)
        assert record["centroid_x"] == pytest.approx(cols.mean() / 48)
        assert record["centroid_y"] == pytest.approx(rows.mean() / 48)
        assert 0 <= record["centroid_x"] < 1 and 0 <= record["centroid_y"] < 1
        skin = np.array([record["skin_r"], record["skin_g"], record["skin_b"]])
        assert record["ita"] == pytest.approx(float(synth.ita_from_rgb(skin)))
        assert record["fitzpatrick"] == int(synth.fitzpatrick_from_ita(record["ita"]))
        # the skin colour is an average of healthy skin pixels: inside their range
        pixels = batch["healthy"][k][batch["skin_masks"][k] > 0].astype(float)
        assert np.all(skin >= pixels.min(0)) and np.all(skin <= pixels.max(0))


def test_ita_sign_follows_the_fitzpatrick_type():
    for fitz in range(1, 7):
        records = [synth.render_sample("nevus", fitzpatrick=fitz, size=32, index=i).record for i in range(4)]
        itas = np.array([r["ita"] for r in records])
        assert (itas > 0).all() if fitz <= 4 else True
        assert (itas < 0).all() if fitz == 6 else True
        assert all(r["fitzpatrick"] == fitz for r in records)  # the asked type is honoured


def test_healthy_twin_equals_the_image_away_from_the_lesion(batch):
    """Blur spreads the lesion by its radius, JPEG (4:4:4) by at most one 8x8 block: beyond, same bytes."""
    for k, record in enumerate(batch["records"]):
        reach = record["blur_px"] + (7 if record["jpeg_quality"] else 0)
        near = ndimage.binary_dilation(batch["lesion_masks"][k] > 0, np.ones((2 * reach + 1,) * 2, bool)) \
            if reach else batch["lesion_masks"][k] > 0
        assert np.array_equal(batch["images"][k][~near], batch["healthy"][k][~near])
        assert not np.array_equal(batch["images"][k], batch["healthy"][k])  # the lesion is visible


def test_same_skin_for_every_condition():
    a = synth.render_sample("nevus", size=32, seed=0, index=9)
    b = synth.render_sample("psoriasis", size=32, seed=0, index=9)
    assert np.array_equal(a.healthy, b.healthy) and np.array_equal(a.skin_mask, b.skin_mask)


def test_controllable_sample():
    sample = synth.render_sample("melanoma", fitzpatrick=2, size=64, diameter=0.3, centre=(0.3, 0.6),
                                 outline=False, hair=False)
    assert sample.record["condition"] == "melanoma" and sample.record["malignant"]
    assert sample.skin_mask.all()
    assert abs(sample.record["centroid_x"] - 0.3) < 0.1 and abs(sample.record["centroid_y"] - 0.6) < 0.1
    assert 0.3 * 0.3 < sample.record["lesion_area"] * 4 / np.pi * 4 < 0.45 * 0.45 * 4  # about a 0.3-wide disc


def test_lesion_shape_is_resolution_independent_and_public():
    small = synth.lesion_shape(np.random.default_rng(5), 64, "melanoma", diameter=0.4, centre=(0.5, 0.5))
    large = synth.lesion_shape(np.random.default_rng(5), 256, "melanoma", diameter=0.4, centre=(0.5, 0.5))
    assert small.dtype == np.uint8 and small.shape == (64, 64)
    downsampled = large.reshape(64, 4, 64, 4).mean(axis=(1, 3)) > 0.5
    assert (downsampled == small.astype(bool)).mean() > 0.97
    assert synth.lesion_shape(np.random.default_rng(1), 64, "acne").any()


@pytest.mark.parametrize("size", [31, 513, 600, 0, -64, 64.0, "64"])
def test_impossible_sizes_are_rejected(size):
    with pytest.raises(ValueError, match="size"):
        synth.render_sample("nevus", size=size)


def test_bad_condition_and_type_are_rejected():
    with pytest.raises(ValueError, match="unknown condition"):
        synth.render_sample("wart")
    with pytest.raises(ValueError, match="Fitzpatrick"):
        synth.render_sample("nevus", fitzpatrick=7)


def test_class_counts_follow_the_prevalences():
    counts = synth.class_counts(4000)
    assert counts.sum() == 4000
    assert counts.tolist() == [1440, 600, 520, 520, 480, 200, 120, 120]
    assert synth.class_counts(7).sum() == 7
    with pytest.raises(ValueError, match="n_images"):
        synth.class_counts(0)
