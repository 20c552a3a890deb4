"""The evaluation guard of notebook 05: a random-CNN feature space that is fixed by its seed, and whether
spaces agree on the models' ranks (dermgan.metrics.agreement), on hand cases."""

import numpy as np
import pytest
import torch

from dermgan import metrics as M
from dermgan.metrics.features import RANDOM_CNN_SEED, RandomCNNExtractor, extract_features

torch.set_num_threads(1)


def _images(n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_random_cnn_features_are_fixed_by_their_seed_and_differ_across_seeds():
    images = _images()
    first = extract_features(images, RandomCNNExtractor(), batch_size=4)
    again = extract_features(images, M.get_extractor("random-cnn"), batch_size=3)  # rebuilt, other batches
    other = extract_features(images, RandomCNNExtractor(seed=RANDOM_CNN_SEED + 1), batch_size=4)
    assert first.shape == (6, 32 + 64 + 128 + 256)
    assert np.allclose(first, again, rtol=1e-5, atol=1e-7)
    assert RandomCNNExtractor().identity == M.get_extractor("random-cnn").identity
    assert RandomCNNExtractor(seed=1).identity != RandomCNNExtractor().identity  # caches never mix the two
    assert not np.allclose(first, other, rtol=0.05)
    # the space sees images: two different images get different features, the same image the same
    assert np.abs(first[0] - first[1]).max() > 1e-3


def test_building_the_random_cnn_leaves_the_global_random_stream_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    RandomCNNExtractor()
    assert torch.equal(torch.rand(3), expected)


def test_rank_agreement_on_a_hand_case():
    """Four models. Inception KID orders them A < B < C < D; the random-CNN space orders A < C < B < D; the
    domain space D < A < B < C. Against Inception, random CNN: of the 6 pairs only (B, C) is discordant, tau =
    (5 - 1) / 6 = 2/3, the best model is the same; domain: discordant pairs (A,D), (B,D), (C,D), tau = (3 - 3)
    / 6 = 0, another best model. With all three spaces no model keeps its rank everywhere (A is 1st, 1st,
    2nd); with Inception and the random CNN alone, A and D do."""
    scores = {"inception": {"A": 0.1, "B": 0.2, "C": 0.3, "D": 0.4},
              "random-cnn": {"A": 0.15, "B": 0.35, "C": 0.25, "D": 0.5},
              "domain": {"A": 0.2, "B": 0.3, "C": 0.4, "D": 0.1}}
    per_model, per_space = M.rank_agreement(scores, "inception")
    assert list(per_model.index) == ["A", "B", "C", "D"]
    assert per_model["rank (random-cnn)"].tolist() == [1, 3, 2, 4]
    assert per_model["rank (domain)"].tolist() == [2, 3, 4, 1]
    assert per_model["rank agrees"].tolist() == [False, False, False, False]
    assert per_space.loc["random-cnn", "kendall tau"] == pytest.approx(2 / 3)
    assert per_space.loc["domain", "kendall tau"] == pytest.approx(0.0)
    assert per_space["same best"].tolist() == [True, False]
    two = {k: scores[k] for k in ("inception", "random-cnn")}
    assert M.rank_agreement(two, "inception")[0]["rank agrees"].tolist() == [True, False, False, True]


def test_ranks_share_ties_and_skip_missing_scores():
    assert M.ranks({"a": 0.2, "b": 0.1, "c": 0.2, "d": float("nan")}) == {"b": 1, "a": 2, "c": 2}
    assert np.isnan(M.kendall_tau({"a": 1.0}, {"a": 2.0}))


def test_inception_only_gains_are_models_better_in_inception_but_not_everywhere():
    improves = {"inception": {"oasis": True, "projected": True, "pix2pix": False},
                "domain": {"oasis": True, "projected": False, "pix2pix": False},
                "random-cnn": {"oasis": True, "projected": True, "pix2pix": True}}
    assert M.inception_only_gains(improves, "inception") == ["projected"]
