"""Semantic maps: encoding, rendering, editing, and the (map, image, mask, condition) dataset."""

import numpy as np
import pandas as pd
import pytest
import torch

from dermgan.data import semantic
from dermgan.data.conditions import CONDITIONS, N_CONDITIONS
from dermgan.data.dataset import RECORD_COLUMNS, SkinData
from dermgan.data.semantic import SemanticMap

SKIN = np.array([200.0, 150.0, 120.0], np.float32)


def _to_255(x: torch.Tensor) -> np.ndarray:
    return (x.numpy() + 1.0) * 127.5


def _example() -> SemanticMap:
    """32 px map: left 4 columns background, a melanoma (index 7) square and an acne (index 4) square."""
    labels = np.zeros((32, 32), np.int16)
    labels[:, :4] = -1
    labels[10:14, 10:14] = 8
    labels[20:22, 20:25] = 5
    return SemanticMap(labels, SKIN)


# -- encoding ------------------------------------------------------------------------------------------------


def test_colour_encoding_background_skin_and_lesion_pixels():
    m = _example()
    rgb = _to_255(m.encode("colour"))  # (3,H,W) 0..255
    assert m.encode("colour").shape == (3, 32, 32) and m.encode("colour").dtype == torch.float32
    assert np.allclose(rgb[:, :, :4], 0.0, atol=1e-4)  # background black
    assert np.allclose(rgb[:, 0, 10], SKIN, atol=1e-4)  # skin = the given colour
    assert np.allclose(rgb[:, 11, 11], CONDITIONS[7].map_colour, atol=1e-4)
    assert np.allclose(rgb[:, 21, 21], CONDITIONS[4].map_colour, atol=1e-4)
    assert rgb.min() >= -1e-4 and rgb.max() <= 255 + 1e-4


def test_onehot_encoding_channels():
    m = _example()
    x = m.encode("onehot").numpy()
    assert x.shape == (3 + N_CONDITIONS + 1, 32, 32) == (semantic.n_channels("onehot"), 32, 32)
    assert np.all(x[:, :, :4] == 0)  # background: all zeros
    onehot = x[3:]
    skin = m.skin_mask()
    assert np.allclose(onehot.sum(0)[skin], 1.0) and np.all(onehot.sum(0)[~skin] == 0)
    assert np.all(np.isin(onehot, [0.0, 1.0]))
    assert np.all(onehot[7][m.lesion_mask(7)] == 1) and onehot[7].sum() == m.lesion_mask(7).sum()
    assert np.all(onehot[-1][m.labels == 0] == 1)  # healthy-skin channel
    assert np.allclose(
        _to_255(torch.from_numpy(x[:3]))[:, skin], SKIN[:, None], atol=1e-3
    )  # skin colour everywhere on skin


@pytest.mark.parametrize("encoding", ["colour", "onehot"])
def test_decode_inverts_encode_and_render_shows_the_colour_code(encoding):
    m = _example()
    maps = semantic.encode_maps([m, m.with_skin(6)], encoding)
    labels, colours = semantic.decode_maps(maps, encoding)
    assert np.array_equal(labels[0], m.labels) and np.array_equal(labels[1], m.labels)
    assert np.allclose(colours[0], SKIN, atol=1e-3)
    picture = semantic.render_maps(maps, encoding)
    assert picture.dtype == np.uint8 and picture.shape == (2, 32, 32, 3)
    assert np.array_equal(picture[0, 11, 11], CONDITIONS[7].map_colour)
    assert np.array_equal(picture[0, 0, 0], [0, 0, 0])
    assert np.array_equal(picture[0], m.render())


def test_unknown_encoding_and_bad_colours_are_refused():
    with pytest.raises(ValueError, match="encoding"):
        _example().encode("rgb")
    with pytest.raises(ValueError, match="skin colour"):
        SemanticMap.blank(16, skin=(300, 0, 0))
    with pytest.raises(ValueError, match="Fitzpatrick"):
        SemanticMap.blank(16, skin=7)


# -- editing -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("condition", range(N_CONDITIONS))
@pytest.mark.parametrize("size,x,y", [(0.05, 0.5, 0.5), (0.08, 0.3, 0.65)])
def test_placed_lesion_has_requested_area_and_centroid(condition, size, x, y):
    m = SemanticMap.blank(64, skin=2).add_lesion(condition, size, x, y, seed=condition)
    mask = m.lesion_mask(condition)
    yy, xx = np.nonzero(mask)
    assert mask.mean() == pytest.approx(size, rel=0.1)
    assert (xx.mean() + 0.5) / 64 == pytest.approx(x, abs=0.03)
    assert (yy.mean() + 0.5) / 64 == pytest.approx(y, abs=0.03)


def test_unreachable_lesion_area_warns():
    # acne is a scatter of papules: its footprint cannot cover 40 % of the image
    with pytest.warns(UserWarning, match="requested 0.400"):
        SemanticMap.blank(64).add_lesion("acne", 0.4, 0.2, 0.2)


def test_fallback_blob_prior_matches_area_and_centroid():
    mask = semantic.blob_mask(64, 64, 0.1, 0.35, 0.6, seed=3)
    yy, xx = np.nonzero(mask)
    assert mask.mean() == pytest.approx(0.1, rel=0.05)
    assert (xx.mean() + 0.5) / 64 == pytest.approx(0.35, abs=0.02)
    assert (yy.mean() + 0.5) / 64 == pytest.approx(0.6, abs=0.02)


def test_lesions_stay_on_skin_and_several_lesions_coexist():
    skin = np.zeros((64, 64), bool)
    skin[:, 16:] = True
    m = SemanticMap.blank(64, skin=(180, 130, 100), skin_mask=skin)
    m = m.add_lesion("melanoma", 0.04, 0.3, 0.3, seed=1).add_lesion("acne", 0.06, 0.7, 0.7, seed=2)
    assert not m.lesion_mask()[~skin].any()
    assert m.lesion_mask("melanoma").any() and m.lesion_mask("acne").any()
    assert not (m.lesion_mask("melanoma") & m.lesion_mask("acne")).any()
    x = m.encode("onehot").numpy()
    assert np.allclose(x[3:].sum(0)[skin], 1.0)


def test_tone_change_keeps_lesions_and_background():
    m = _example().add_lesion("nevus", 0.05, 0.6, 0.3)
    for encoding in ("colour", "onehot"):
        maps = semantic.encode_maps([m], encoding)
        darker = semantic.change_tone(maps, 6, encoding)
        labels, colours = semantic.decode_maps(darker, encoding)
        assert np.array_equal(labels[0], m.labels)
        assert np.allclose(colours[0], semantic.fitzpatrick_colour(6), atol=1e-3)
    assert np.array_equal(m.with_skin(1).labels, m.labels)
    assert not np.allclose(m.with_skin(1).skin_colour, m.with_skin(6).skin_colour)


def test_fitzpatrick_colours_get_darker_with_type():
    lightness = [semantic.fitzpatrick_colour(t).mean() for t in range(1, 7)]
    assert lightness == sorted(lightness, reverse=True)


def test_fitzpatrick_palette_from_a_table():
    table = pd.DataFrame(
        {
            "fitzpatrick": pd.array([1, 1, 6, None], dtype="Int64"),
            "skin_r": [200.0, 220.0, 80.0, 10.0],
            "skin_g": [150.0, 170.0, 50.0, 10.0],
            "skin_b": [120.0, 140.0, 40.0, 10.0],
        }
    )
    palette = semantic.fitzpatrick_palette(table)
    assert set(palette) == {1, 6} and np.allclose(palette[1], [210, 160, 130])


# -- dataset -------------------------------------------------------------------------------------------------


def _skin_data(n=4, size=16, with_table_colour=True) -> SkinData:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    lesion = np.zeros((n, size, size), np.uint8)
    lesion[:, 4:8, 4:8] = 1
    lesion[-1] = 0  # one image without a lesion
    skin = np.ones((n, size, size), np.uint8)
    skin[:, :, :2] = 0
    table = pd.DataFrame({c: pd.NA for c in RECORD_COLUMNS}, index=range(n))
    table["image_id"] = [f"img{i}" for i in range(n)]
    table["label"] = [7, 0, 3, 1][:n]
    table["fitzpatrick"] = pd.array([1, 2, 5, None][:n], dtype="Int64")
    table["split"] = "train"
    if with_table_colour:
        table["skin_r"], table["skin_g"], table["skin_b"] = 200.0, 150.0, 120.0
    names = tuple(c.name for c in CONDITIONS)
    return SkinData("toy", names, images, lesion, skin, table)


@pytest.mark.parametrize("encoding", ["colour", "onehot"])
def test_map_dataset_items(encoding):
    data = _skin_data()
    ds = semantic.MapDataset(data, encoding)
    semantic_map, image, lesion, condition = ds[0]
    assert (
        semantic_map.shape == (semantic.n_channels(encoding), 16, 16) and semantic_map.dtype == torch.float32
    )
    assert image.shape == (3, 16, 16)
    assert torch.allclose(image, torch.from_numpy(data.images[0] / 127.5 - 1).float().permute(2, 0, 1), atol=1e-6)
    assert lesion.shape == (1, 16, 16) and lesion.sum() == 16
    assert condition.item() == 7 and condition.dtype == torch.int64
    labels, colours = semantic.decode_maps(semantic_map[None], encoding)
    assert np.array_equal(labels[0] == 8, data.lesion_masks[0].astype(bool))
    assert np.all(labels[0][:, :2] == -1)
    assert np.allclose(colours[0], [200, 150, 120], atol=1e-3)
    assert ds.fitzpatrick.tolist() == [1, 2, 5, 0]
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    assert batch[0].shape == (4, semantic.n_channels(encoding), 16, 16)


def test_map_dataset_measures_missing_skin_colours_and_needs_masks():
    data = _skin_data(with_table_colour=False)
    ds = semantic.MapDataset(data)
    healthy = data.skin_masks[0].astype(bool) & ~data.lesion_masks[0].astype(bool)
    assert np.allclose(ds.colours[0], data.images[0][healthy].mean(0), atol=1e-3)
    data.lesion_masks = None
    with pytest.raises(ValueError, match="lesion masks"):
        semantic.MapDataset(data)


# -- controllability measurement -----------------------------------------------------------------------------


def test_segmentation_finds_a_painted_lesion_and_the_report_scores_it():
    from dermgan import controllability

    maps = [
        SemanticMap.blank(64, skin=3).add_lesion("melanoma", s, x, 0.5, seed=i)
        for i, (s, x) in enumerate([(0.03, 0.3), (0.08, 0.5), (0.15, 0.6)])
    ]
    rng = np.random.default_rng(0)
    images = np.stack([m.render() for m in maps]).astype(np.float64)
    images[..., :] = np.where(np.stack([m.lesion_mask() for m in maps])[..., None], [90, 40, 30], images)
    images = np.clip(images + rng.normal(0, 4, images.shape), 0, 255).astype(np.uint8)  # skin texture
    requested = np.stack([m.lesion_mask() for m in maps])
    colours = np.stack([m.skin_colour for m in maps])
    for background, least_iou in (("fill", 0.9), ("local", 0.8)):
        found = controllability.segment_lesions(images, colours, background=background)
        report = controllability.placement_report(requested, found)
        assert report["iou"] > least_iou and report["area_r"] > 0.95 and report["centroid_error"] < 0.02
        assert 0.85 < report["area_ratio"] < 1.15
    nothing = controllability.placement_report(requested, np.zeros_like(requested))
    assert nothing["iou"] == 0 and nothing["centroid_error"] == 0.5


def test_otsu_threshold_splits_two_modes():
    from dermgan.controllability import otsu_threshold

    values = np.concatenate([np.full(100, 10.0), np.full(50, 50.0)])
    assert 10 <= otsu_threshold(values) < 50


# -- real data: any number of classes, real class lists, condition types, skin-colour fallbacks ------------

HAM_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


def test_palette_for_any_number_of_classes_keeps_the_catalogue_and_stays_decodable():
    palette = semantic.class_palette(114)  # Fitzpatrick17k's label count
    assert palette.shape == (114, 3)
    assert np.array_equal(palette[:N_CONDITIONS], [c.map_colour for c in CONDITIONS])
    distances = np.abs(palette[:, None] - palette[None]).max(axis=2) + np.eye(114) * 999
    assert distances.min() >= 2  # decode_maps matches colours within 1 unit
    assert (palette.max(axis=1) - palette.min(axis=1) >= 128).all()  # saturated: far from any skin
    assert np.array_equal(semantic.class_palette(20), palette[:20])  # a class keeps its colour


@pytest.mark.parametrize("encoding", ["colour", "onehot"])
def test_twelve_classes_encode_and_decode(encoding):
    labels = np.zeros((1, 16, 16), np.int16)
    labels[0, :, :2] = -1
    for c in range(12):
        labels[0, c + 2, 3:6] = c + 1
    maps = semantic.encode_labels(labels, SKIN[None], encoding, n_conditions=12)
    assert maps.shape[1] == semantic.n_channels(encoding, 12)
    decoded, colours = semantic.decode_maps(maps, encoding, n_conditions=12)
    assert np.array_equal(decoded, labels) and np.allclose(colours[0], SKIN, atol=1e-3)


def test_conditions_accept_numpy_integers_and_refuse_bools():
    blank = SemanticMap.blank(32, skin=3)
    assert blank.add_lesion(np.int64(3), 0.05, seed=1).lesion_mask(3).any()
    with pytest.raises(ValueError, match="not the bool True"):
        blank.add_lesion(True, 0.05)
    with pytest.raises(ValueError, match="not the bool"):
        blank.lesion_mask(np.bool_(False))
    with pytest.raises(ValueError, match="out of range 0..7"):
        blank.add_lesion(8, 0.05)
    # the synthetic catalogue's own entry points take the same rule (True used to mean class 1 there)
    from dermgan.data.synth import render_sample

    with pytest.raises(ValueError, match="not the bool True"):
        semantic.lesion_shape(32, 32, 0.05, 0.5, 0.5, condition=True)
    with pytest.raises(ValueError, match="not the bool True"):
        render_sample(True, size=32)
    assert render_sample(np.int64(1), size=32).record["condition"] == "seborrheic_keratosis"


def test_map_on_a_real_class_list():
    m = SemanticMap.blank(32, skin=(200, 150, 160), classes=HAM_CLASSES).add_lesion("mel", 0.08, 0.5, 0.5)
    assert set(np.unique(m.labels)) == {0, 5}  # mel is class 4 of HAM10000
    assert m.encode("onehot").shape == (3 + 7 + 1, 32, 32)
    assert np.array_equal(m.render()[16, 16], CONDITIONS[4].map_colour)  # colours follow the class index
    assert m.with_skin(2).classes == HAM_CLASSES and m.without_lesions().classes == HAM_CLASSES
    with pytest.raises(ValueError, match="unknown condition 'melanoma'; use an index 0..6 or one of: akiec"):
        m.add_lesion("melanoma", 0.05)
    with pytest.raises(ValueError, match="different class lists"):
        semantic.encode_maps([m, SemanticMap.blank(32)])


def test_skin_colour_fallback_chain_on_a_split_without_table_colours():
    data = _skin_data(n=4, with_table_colour=False)
    data.skin_masks = None
    data.images[1] = 120  # image 1: its lesion covers everything; its border ring is plain skin
    data.images[1, 6:10, 6:10] = (40, 20, 10)
    data.lesion_masks[1] = 1
    data.images[2] = 0  # image 2: black, no usable skin anywhere
    data.lesion_masks[2] = 1
    colours, sources = semantic.skin_colours_and_sources(data)
    assert list(sources) == ["healthy pixels", "border ring", "dataset median", "healthy pixels"]
    healthy = (data.lesion_masks[0] == 0) & (data.images[0].max(axis=2) >= semantic.DARK_LEVEL)
    assert np.allclose(colours[0], data.images[0][healthy].mean(0), atol=1e-3)
    assert np.allclose(colours[1], 120)
    assert np.allclose(colours[2], np.median(colours[[0, 1, 3]], axis=0))
    ds = semantic.MapDataset(data)  # used to stop with "no healthy-skin pixel to measure it from"
    assert np.allclose(ds.colours, colours)


def test_classes_absent_from_a_split_keep_the_map_channels_and_unknown_types_become_zero():
    data = _skin_data(n=4)
    only_two = data.select([0, 1])  # classes 3 and 1 are absent from this "split"
    ds = semantic.MapDataset(only_two, "onehot")
    assert ds.channels == semantic.n_channels("onehot", len(data.classes))
    assert ds.maps([0, 1]).shape[1] == ds.channels
    assert semantic.MapDataset(data).fitzpatrick.tolist() == [1, 2, 5, 0]  # NA type -> 0 = unknown
