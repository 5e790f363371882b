r"""Advantage estimators of the FlexRec trainer: pure functions of a group's rewards, ``(B, G, K)`` out.

A batch holds B requests, G sampled rankings per request (a *group*) and K positions per ranking. Every estimator
gives each position of each ranking an advantage ``A[b, g, t]``:

``list`` (GRPO)
    One list reward ``R[b, g]`` (the need's metric on the feedback labels) per ranking, normalised across its
    group, shared by all positions: ``A[b, g, t] = (R[b, g] - mean_g R[b, :]) / (std_g R[b, :] + eps)``.

``swap``
    The environment's exact per-position swap rewards ``r[b, g, t]``, normalised per position across the group:
    ``A[b, g, t] = (r[b, g, t] - mean_g r[b, :, t]) / (std_g r[b, :, t] + eps)``. Each position is credited for its
    own placement.

``flexrec``
    Swap rewards ``r_hat`` recomputed from the observed labels with the critic's predictions standing in for the
    unobserved ones, with standard deviation ``sigma`` (:mod:`agents.critic`), normalised as for ``swap`` and
    scaled by a confidence weight: ``A[b, g, t] = w(u[b, g, t]) * normalise(r_hat)[b, g, t]``, where
    ``u = sigma / (std_g r_hat[b, :, t] + eps)`` is the uncertainty relative to the spread the normalisation
    divides by (so the weight does not depend on the reward's scale).

Confidence weights :math:`w(u)` (:func:`confidence_weights`), decreasing in ``u`` and 1 at ``u = 0``:

* ``"sigmoid"`` (default): ``w = sigmoid(-u * T) + 0.5``, in ``(0.5, 1]``: an uncertain position still teaches
  half as much, so a miscalibrated critic can slow learning but never switch it off;
* ``"inverse-variance"``: ``w = clamp(1 / (u * T)**2, w_min, 1)``: classic inverse-variance weighting, flat at 1
  while the uncertainty is below the spread, then falling as ``1 / u**2``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

EPS = 1e-8
ESTIMATORS = ("list", "swap", "flexrec")
WEIGHT_FORMS = ("sigmoid", "inverse-variance")


def group_normalise(values: NDArray, eps: float = EPS) -> FloatArray:
    """``(x - mean) / (std + eps)`` across the group axis (axis 1) of ``(B, G, ...)``; 0 where the group ties."""
    values = np.asarray(values, dtype=np.float64)
    centred = values - values.mean(axis=1, keepdims=True)
    std = values.std(axis=1, keepdims=True)
    return np.where(std > eps, centred / (std + eps), 0.0)


def list_advantages(list_rewards: NDArray, length: int) -> FloatArray:
    """GRPO: the group-normalised list reward ``(B, G)`` broadcast to all ``length`` positions: ``(B, G, K)``."""
    normalised = group_normalise(list_rewards)
    return np.repeat(normalised[..., None], length, axis=-1)


def swap_advantages(swap_rewards: NDArray) -> FloatArray:
    """Per-position swap rewards ``(B, G, K)``, normalised per position across the group."""
    return group_normalise(swap_rewards)


def confidence_weights(uncertainty: NDArray, form: str = "sigmoid", temperature: float = 1.0, floor: float = 0.05) -> FloatArray:
    """Weights in ``(0, 1]`` that decrease with the (relative) uncertainty ``u >= 0``; see the module docstring."""
    u = np.asarray(uncertainty, dtype=np.float64)
    if form == "sigmoid":
        return np.exp(-np.logaddexp(0.0, u * temperature)) + 0.5  # sigmoid(-uT), without overflow
    if form == "inverse-variance":
        scaled = np.maximum(u * temperature, EPS)
        return np.clip(1.0 / scaled**2, floor, 1.0)
    raise ValueError(f"weight form {form!r}; allowed: {list(WEIGHT_FORMS)}")


def relative_uncertainty(rewards: NDArray, std: NDArray, eps: float = EPS) -> FloatArray:
    """``sigma / (spread of the rewards across the group + eps)`` per position: ``(B, G, K)``."""
    spread = np.asarray(rewards, dtype=np.float64).std(axis=1, keepdims=True)
    return np.asarray(std, dtype=np.float64) / (spread + eps)


def flexrec_advantages(
    rewards: NDArray, std: NDArray, form: str = "sigmoid", temperature: float = 1.0
) -> tuple[FloatArray, FloatArray]:
    """Critic-completed swap rewards and their std ``(B, G, K)`` -> (advantages, confidence weights)."""
    weights = confidence_weights(relative_uncertainty(rewards, std), form, temperature)
    return weights * group_normalise(rewards), weights
