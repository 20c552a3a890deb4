"""Do feature spaces agree on which model is better? The evaluation guard of notebook 05.

A discriminator built on a frozen ImageNet network (dermgan.models.projected) can lower Inception FID/KID
without better images (Kynkäänniemi et al., ICLR 2023), so a model's standing in Inception space is set
against its standing in spaces no discriminator used: the domain classifier's, a random CNN's
(dermgan.metrics.features).

Definitions (scores where lower is better, e.g. KID):
- rank: 1 for the lowest score; tied scores share the lowest of their ranks; a model without a finite score
  has none.
- a model's rank agrees when it is the same in the reference space and in every other space;
- Kendall's tau-b between two spaces over the models scored in both (1: same order; -1: reversed; scipy's);
- same best: the model ranked first in the reference space is ranked first in the other space;
- an "Inception-only gain": a model that improves on the baseline in the reference space but not in every
  independent space (what "improves" means, a lower point estimate or a paired interval below 0, the caller
  says).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd


def _finite(scores: Mapping[str, float]) -> dict[str, float]:
    return {model: float(v) for model, v in scores.items() if v is not None and math.isfinite(float(v))}


def ranks(scores: Mapping[str, float]) -> dict[str, int]:
    """Model -> rank, 1 = lowest score; ties share the lowest of their ranks; a non-finite score gets none."""
    kept = _finite(scores)
    return {model: 1 + sum(other < value for other in kept.values()) for model, value in kept.items()}


def kendall_tau(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Kendall's tau-b of two spaces' scores over the models finite in both (NaN for fewer than 2 models)."""
    from scipy.stats import kendalltau

    a, b = _finite(a), _finite(b)
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        return float("nan")
    return float(kendalltau([a[m] for m in common], [b[m] for m in common]).statistic)


def rank_agreement(scores: Mapping[str, Mapping[str, float]],
                   reference: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per model: its rank in every space and whether it agrees; per other space: Kendall's tau-b against the
    reference and whether the best model is the same). `scores` maps space -> model -> score."""
    if reference not in scores:
        raise ValueError(f"reference space {reference!r} has no scores; spaces: {', '.join(scores)}")
    by_space = {space: ranks(values) for space, values in scores.items()}
    models = sorted(set().union(*by_space.values()), key=lambda m: (by_space[reference].get(m, math.inf), m))
    others = [space for space in scores if space != reference]
    per_model = pd.DataFrame({f"rank ({space})": [by_space[space].get(m) for m in models]
                              for space in scores}, index=pd.Index(models, name="model"))
    per_model["rank agrees"] = [
        m in by_space[reference] and all(by_space[s].get(m) == by_space[reference][m] for s in others)
        for m in models]
    best = {space: {m for m, r in found.items() if r == 1} for space, found in by_space.items()}
    per_space = pd.DataFrame(
        {"kendall tau": [kendall_tau(scores[reference], scores[s]) for s in others],
         "same best": [bool(best[reference]) and best[reference] == best[s] for s in others],
         "models": [len(set(_finite(scores[reference])) & set(_finite(scores[s]))) for s in others]},
        index=pd.Index(others, name=f"vs {reference}"))
    return per_model, per_space


def inception_only_gains(improves: Mapping[str, Mapping[str, bool]], reference: str) -> list[str]:
    """Models that improve in the reference space but not in every other space. `improves` maps space ->
    model -> whether the model improves on the baseline there."""
    others = [space for space in improves if space != reference]
    return sorted(m for m, better in improves[reference].items()
                  if better and not all(improves[s].get(m, False) for s in others))
