r"""The uncertainty-aware critic: each candidate's feedback gain as a Gaussian, carried into the swap rewards.

What it predicts. A swap reward depends on the labels of every candidate after its position, and the feedback
observes only some of them (30% by default), with noise. So the critic does not predict the swap reward directly:
it predicts, for every candidate, the *gain* of its feedback label ``g = 2**label - 1`` as a Gaussian with mean
``mu_i`` and variance ``var_i``, from the policy's per-candidate inputs (user, need and candidate). It learns only
from the labels the feedback observed (heteroscedastic Gaussian NLL, or beta-NLL, which weights each point's NLL by
``var**beta`` to stop the variance from absorbing the error), with a small ensemble whose disagreement adds the
epistemic part: ``mu = mean_e mu_e`` and ``var = mean_e var_e + var_e mu_e``.

How it enters the rewards (:func:`completed_swap_rewards`). Observed candidates keep their observed gain (variance
0); unobserved ones get ``mu_i`` and ``var_i``. The closed-form swap reward of NDCG@k is linear in the gains,
``r = C @ G / IDCG`` (:func:`flexrec_env.swap.swap_coefficients`), so with independent labels

    r_hat_t = sum_i C[t, i] G_hat_i / IDCG_hat,        var(r_t) = sum_i C[t, i]**2 var_i / IDCG_hat**2,

with ``IDCG_hat`` the ideal DCG of the completed gains. A position's swap reward is uncertain exactly when it rests
on candidates the feedback did not observe and the critic is unsure of; :mod:`agents.advantages` turns that
standard deviation into a confidence weight. (For list-level needs such as ``diverse`` the trainer keeps the
environment's exact swap rewards as the mean and uses this linear variance as the uncertainty.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from flexrec_env.metrics import ideal_dcg
from flexrec_env.swap import swap_coefficients
from scenarios.tools import check_settings


@dataclass(frozen=True)
class CriticConfig:
    """The uncertainty-aware critic's architecture and training."""

    hidden: int = 64
    """Width of each member's two hidden layers."""
    ensemble: int = 3
    """Independent members; their disagreement is the epistemic variance (1: aleatoric only)."""
    loss: str = "beta-nll"
    """``"gaussian-nll"`` or ``"beta-nll"`` (Seitzer et al. 2022, with ``beta``)."""
    beta: float = 0.5
    """Exponent of beta-NLL (0 gives the Gaussian NLL)."""
    learning_rate: float = 1e-3
    """Adam step size."""
    updates: int = 8
    """Gradient steps per iteration, on minibatches drawn from the buffer of recent observed labels."""
    batch_size: int = 256
    """Observed labels per gradient step."""
    buffer_size: int = 8192
    """Most recent observed labels kept for training (older ones are dropped)."""
    min_std: float = 1e-3
    """Floor of each member's predicted standard deviation."""

    def __post_init__(self) -> None:
        checks = {
            "hidden": self.hidden >= 1,
            "ensemble": self.ensemble >= 1,
            "loss": self.loss in ("gaussian-nll", "beta-nll"),
            "beta": 0.0 <= self.beta <= 1.0,
            "learning_rate": self.learning_rate > 0,
            "updates": self.updates >= 0,
            "batch_size": self.batch_size >= 1,
            "buffer_size": self.buffer_size >= 1,
            "min_std": self.min_std > 0,
        }
        check_settings(self, checks)


def gaussian_nll(mean: torch.Tensor, var: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise ``0.5 * (log(2 pi var) + (target - mean)**2 / var)``."""
    return 0.5 * (torch.log(2 * math.pi * var) + (target - mean) ** 2 / var)


def calibration(mean: NDArray, std: NDArray, target: NDArray) -> tuple[float, float]:
    """Fractions of ``target`` inside ``mean ± std`` and ``mean ± 2 std`` (0.68 and 0.95 when calibrated)."""
    z = np.abs(np.asarray(target) - np.asarray(mean)) / np.maximum(np.asarray(std), 1e-12)
    return (float((z <= 1).mean()), float((z <= 2).mean())) if z.size else (float("nan"), float("nan"))


class UncertaintyCritic(nn.Module):
    """An ensemble of small MLPs, each giving a mean and a variance per input row."""

    def __init__(self, input_dim: int, config: CriticConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or CriticConfig()
        self.members = nn.ModuleList(
            nn.Sequential(
                nn.Linear(input_dim, c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.hidden), nn.SiLU(), nn.Linear(c.hidden, 2)
            )
            for _ in range(c.ensemble)
        )

    def member_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and variances of every member: ``(..., F) -> (E, ...), (E, ...)``."""
        out = torch.stack([member(x) for member in self.members])  # (E, ..., 2)
        std = nn.functional.softplus(out[..., 1]) + self.config.min_std
        return out[..., 0], std**2

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictive mean and total variance (aleatoric + epistemic): ``(..., F) -> (...), (...)``."""
        means, variances = self.member_outputs(x)
        mean = means.mean(dim=0)
        epistemic = means.var(dim=0, unbiased=False) if len(self.members) > 1 else torch.zeros_like(mean)
        return mean, variances.mean(dim=0) + epistemic

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean NLL (or beta-NLL) of ``target`` over rows and members (rows: observed labels only)."""
        means, variances = self.member_outputs(x)
        nll = gaussian_nll(means, variances, target.expand_as(means))
        if self.config.loss == "beta-nll" and self.config.beta > 0:
            nll = nll * variances.detach() ** self.config.beta
        return nll.mean()


def completed_gains(
    labels: NDArray, observed: NDArray[np.bool_], mean: NDArray, var: NDArray
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Observed gains kept (variance 0); the critic's mean and variance where the feedback saw nothing."""
    observed_gain = np.exp2(np.asarray(labels, dtype=np.float64)) - 1.0
    gain = np.where(observed, observed_gain, np.clip(mean, 0.0, None))
    return gain, np.where(observed, 0.0, var)


def completed_swap_rewards(
    rankings: NDArray[np.integer], gain: NDArray, gain_var: NDArray, k: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Swap rewards of NDCG@k and their std from uncertain gains: ``(B, G, K), (B, N), (B, N) -> (B, G, K) x 2``."""
    batch, group, length = rankings.shape
    n = gain.shape[-1]
    coefficients = swap_coefficients(rankings.reshape(batch * group, length), n, k).reshape(batch, group, length, n)
    idcg = ideal_dcg(np.log2(1.0 + gain), k)[:, None, None]  # (B, 1, 1); gains(log2(1 + g)) = g
    inverse = np.divide(1.0, idcg, out=np.zeros_like(idcg), where=idcg > 0)
    mean = np.einsum("bgtn,bn->bgt", coefficients, gain) * inverse
    var = np.einsum("bgtn,bn->bgt", coefficients**2, gain_var) * inverse**2
    return mean, np.sqrt(var)
