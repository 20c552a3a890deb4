"""GAN losses. Every function returns a scalar tensor (mean over its elements unless said otherwise).

Discriminator outputs may be one logits tensor or a list of them (one per scale of a multi-scale D); lists are
averaged over scales, so the loss scale does not grow with the number of scales. (pix2pixHD sums the adversarial
loss over scales; we average so that the single-D ablation changes the number of scales and not, in passing, the
weight of the adversarial term against L1: that balance is set by lambda_l1 alone.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

GAN_MODES = ("vanilla", "lsgan", "hinge")


def _as_list(logits) -> list[torch.Tensor]:
    return list(logits) if isinstance(logits, (list, tuple)) else [logits]


def _check_mode(mode: str) -> None:
    if mode not in GAN_MODES:
        raise ValueError(f"unknown GAN loss {mode!r}; use one of {GAN_MODES}")


def _d_single(real: torch.Tensor, fake: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "vanilla":
        loss_real = F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
        loss_fake = F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    elif mode == "lsgan":
        loss_real = ((real - 1) ** 2).mean()
        loss_fake = (fake**2).mean()
    else:  # hinge
        loss_real = F.relu(1 - real).mean()
        loss_fake = F.relu(1 + fake).mean()
    # Halved as in pix2pix, which slows D relative to G.
    return 0.5 * (loss_real + loss_fake)


def _g_single(fake: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "vanilla":  # the non-saturating generator loss
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    if mode == "lsgan":
        return ((fake - 1) ** 2).mean()
    return -fake.mean()  # hinge


def decision_threshold(mode: str) -> float:
    """D's output between its targets for real and fake: 0 for BCE logits and hinge, 0.5 for LSGAN."""
    _check_mode(mode)
    return 0.5 if mode == "lsgan" else 0.0


def adversarial_d(real_logits, fake_logits, mode: str = "vanilla") -> torch.Tensor:
    """Discriminator loss 0.5 * (loss on reals + loss on fakes), averaged over scales.

    vanilla: BCE-with-logits (real -> 1, fake -> 0); lsgan: (D(real) - 1)^2 and D(fake)^2;
    hinge: relu(1 - D(real)) and relu(1 + D(fake)).
    """
    _check_mode(mode)
    reals, fakes = _as_list(real_logits), _as_list(fake_logits)
    if len(reals) != len(fakes):
        raise ValueError(f"{len(reals)} real but {len(fakes)} fake discriminator outputs")
    return torch.stack([_d_single(r, f, mode) for r, f in zip(reals, fakes)]).mean()


def adversarial_g(fake_logits, mode: str = "vanilla") -> torch.Tensor:
    """Generator loss, averaged over scales.

    vanilla: BCE(D(fake), 1) (non-saturating); lsgan: (D(fake) - 1)^2; hinge: -D(fake).
    """
    _check_mode(mode)
    return torch.stack([_g_single(f, mode) for f in _as_list(fake_logits)]).mean()


def l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over all elements."""
    return (prediction - target).abs().mean()


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the masked pixels only (all channels), e.g. the lesion.

    prediction, target (N,C,H,W); mask (N,1,H,W) or (N,H,W) in [0, 1]. The mean is taken over the batch's
    masked pixels together (a weighted mean), so small lesions weigh per pixel as much as large ones. With an
    empty mask the loss is 0 (and still part of the graph, so backward works).
    """
    if mask.ndim == 3:
        mask = mask[:, None]
    mask = mask.to(prediction.dtype)
    weighted = ((prediction - target).abs() * mask).sum()
    count = mask.sum() * prediction.shape[1]
    return weighted / count.clamp(min=1.0)


def feature_matching(real_features: Sequence, fake_features: Sequence) -> torch.Tensor:
    """pix2pixHD feature matching: L1 between D's intermediate features on real and on fake inputs.

    Arguments are per-scale lists of per-layer features (the last entry of each, the logits, is skipped), or
    one scale's list. Real features are treated as constants. Weighted as pix2pixHD weights it: a scale with
    L intermediate layers (L = n_layers + 1 for our PatchGAN) gives each layer's L1 the weight 4 / L, and the
    scales are summed with the weight 1 / n_scales. So one scale contributes 4 x the mean of its layers' L1 and
    the result is the mean over scales of that; lambda_fm = 10 then is pix2pixHD's lambda_feat = 10.
    """
    if real_features and isinstance(real_features[0], torch.Tensor):
        real_features, fake_features = [real_features], [fake_features]
    if len(real_features) != len(fake_features):
        raise ValueError(f"{len(real_features)} real but {len(fake_features)} fake feature scales")
    scale_weight = 1.0 / len(real_features)
    total = 0.0
    for reals, fakes in zip(real_features, fake_features):
        layers = [l1(f, r.detach()) for r, f in zip(reals[:-1], fakes[:-1])]
        if not layers:
            raise ValueError("feature matching needs at least one intermediate feature per scale")
        layer_weight = 4.0 / len(layers)
        total = total + scale_weight * layer_weight * torch.stack(layers).sum()
    return total


def cycle_loss(original: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
    """CycleGAN cycle consistency: L1(x, F(G(x)))."""
    return l1(reconstructed, original)


def identity_loss(original: torch.Tensor, mapped: torch.Tensor) -> torch.Tensor:
    """CycleGAN identity: L1(y, G(y)) for y already in G's target domain."""
    return l1(mapped, original)


def _mask_channel(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W) float mask in [0, 1] from (N,H,W) or (N,1,H,W)."""
    if mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[2:] != like.shape[2:]:
        raise ValueError(f"mask must be (N,1,H,W) or (N,H,W) matching {tuple(like.shape)}, "
                         f"got {tuple(mask.shape)}")
    return mask.to(like.dtype)


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked pixels only (all channels), a weighted mean over the batch.

    mask (N,1,H,W) or (N,H,W) in [0, 1]; pixels with mask 0 contribute nothing and receive no gradient. With
    an empty mask the loss is 0 (still in the graph).
    """
    mask = _mask_channel(mask, prediction)
    weighted = ((prediction - target) ** 2 * mask).sum()
    return weighted / (mask.sum() * prediction.shape[1]).clamp(min=1.0)


def relevancy_loss(output: torch.Tensor, source: torch.Tensor, lesion_mask: torch.Tensor) -> torch.Tensor:
    """Furger et al.'s "relevancy" term: MSE between an edited image and its source OUTSIDE the lesion mask,
    so that an edit leaves healthy skin alone. Pixels inside the mask are free (no loss, no gradient)."""
    lesion_mask = _mask_channel(lesion_mask, output)
    return masked_mse(output, source, 1.0 - lesion_mask)


# ----------------------------------------------------------------------------------------------------------
# The segmentation discriminator's (N+1)-class loss (OASIS, Schönfeld et al. 2021)
#
# D's logits (N, 1 + K, H, W): channel 0 is "fake", channel 1 + k the map's class k. Targets (N, K, H, W) are
# one-hot per pixel; a pixel with no class (all zeros: where augmentation shifted or cut the map away) counts
# nowhere.


def class_balance_weights(targets: torch.Tensor) -> torch.Tensor:
    """Per-pixel weights (N, H, W): each class present in the batch gets P / (K n_c), n_c its pixels, P all
    labelled pixels, K the classes present. Every present class then weighs as much as any other (OASIS:
    lesions are small), and the weights average 1 over the labelled pixels, so the balanced loss keeps the
    scale of the unbalanced one. Unlabelled pixels weigh 0."""
    counts = targets.sum(dim=(0, 2, 3))
    present = counts > 0
    total = counts.sum()
    per_class = torch.where(present, total / (present.sum() * counts).clamp(min=1e-12),
                            torch.zeros_like(counts))
    return (targets * per_class[None, :, None, None]).sum(1)


def segmentation_adversarial(logits: torch.Tensor, targets: torch.Tensor, as_real: bool,
                             balance: bool = True) -> torch.Tensor:
    """OASIS's (N+1)-class cross-entropy, averaged over the labelled pixels.

    as_real: every pixel should be its map class (D on real images; G on its own images), weighted by
    `class_balance_weights` when `balance`; otherwise every pixel should be "fake" (D on generated images),
    unweighted, as in OASIS.
    """
    log_p = F.log_softmax(logits.float(), dim=1)
    targets = targets.float()
    labelled = targets.sum(1)
    if as_real:
        nll = -(log_p[:, 1:] * targets).sum(1)
        weights = class_balance_weights(targets) if balance else labelled
    else:
        nll, weights = -log_p[:, 0], labelled
    return (nll * weights).sum() / labelled.sum().clamp(min=1.0)


def labelmix_consistency(mixed: torch.Tensor, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor,
                         labelled: torch.Tensor) -> torch.Tensor:
    """LabelMix (OASIS): D's logits on an image mixed from real and generated regions by `mask` (N, 1, H, W)
    should be the same mix of its logits on the real and on the generated image; mean squared difference over
    the labelled pixels (N, 1, H, W) and the classes."""
    expected = mask * real.float() + (1 - mask) * fake.float()
    squared = (mixed.float() - expected).square() * labelled
    return squared.sum() / (labelled.sum() * mixed.shape[1]).clamp(min=1.0)
