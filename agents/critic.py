r"""The uncertainty-aware critic: each candidate's feedback grade as a categorical distribution.

What it predicts. A swap reward depends on the labels of every candidate after its position, and the feedback
observes only some of them (30% by default), with noise. So the critic does not predict the swap reward directly:
for every candidate it predicts the probability ``p_y`` of each relevance grade ``y in {0..M}`` from the per-
candidate inputs (user, need and candidate). An ensemble of E members gives the mixture ``p = mean_e p_e``; the
gain ``g = 2**y - 1`` then has

    mu = sum_y p_y g_y,        var = sum_y p_y g_y**2 - mu**2,

and, by the law of total variance, ``var`` of the mixture is the members' mean (aleatoric) variance plus the
variance of their means (epistemic): where the members disagree, the critic knows it does not know.

How it learns. Only from the labels the feedback observed, by cross-entropy through the feedback's known noise
channel (``noise_aware``): an observed label equals the true grade with probability ``1 - eps`` and is otherwise one
of the M other grades, uniformly, so

    P(observed = y) = (1 - eps) p_y + eps / M * (1 - p_y),

and the critic's ``p`` estimates the *true* grade. Each member draws its own minibatches (bootstrap-style diversity).
:class:`CriticLearner` holds the critic, its optimiser and the buffer of recent observed labels.

How it enters the rewards (:func:`completed_gains`, :func:`completed_swap_rewards`). ``completion`` chooses what
stands in for the gains ``G``:

* ``"impute"``: observed gains kept (variance 0); the critic's ``mu`` and ``var`` where the feedback saw nothing;
* ``"dr"`` (doubly robust): ``G_hat = mu + o / p_obs * (g_obs - mu)`` for every candidate (``o`` = observed, with
  probability ``p_obs``): over the observation draw, unbiased for the feedback label's gain whatever the critic;
  its error variance is ``var`` where unobserved and ``var (1 / p_obs - 1)**2`` where observed (DR gains can be
  negative; only the ideal DCG and list-level needs use their non-negative part);
* ``"none"``: the feedback's gains alone (unobserved = 0, as the ``swap`` estimator sees them), variance ``var``
  where unobserved: the critic only says how uncertain each reward is.

The closed-form swap reward of NDCG@k is linear in the gains, ``r = C @ G / IDCG``
(:func:`flexrec_env.swap.swap_coefficients`), so with independent labels

    r_hat_t = sum_i C[t, i] G_hat_i / IDCG_hat,        var(r_t) = sum_i C[t, i]**2 var_i / IDCG_hat**2,

with ``IDCG_hat`` the ideal DCG of the (non-negative part of the) completed gains. A position's swap reward is
uncertain exactly when it rests on candidates the feedback did not observe and the critic is unsure of;
:mod:`agents.advantages` turns that standard deviation into a confidence weight.

Calibration (:func:`calibration_report`), on observed labels the critic has not trained on yet: the expected
calibration error of the noisy-channel grade probabilities, and the fraction of observed gains inside ``mu ± sigma``
and ``mu ± 2 sigma`` beside the fraction the critic's own distribution predicts for those intervals. (For a
three-point distribution a calibrated critic does *not* put 68% and 95% inside them: the predicted fractions are the
right reference.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from flexrec_env.metrics import ideal_dcg
from flexrec_env.swap import swap_coefficients
from scenarios.settings import check_fields, field_types

Completion = Literal["impute", "dr", "none"]
ProbsT = TypeVar("ProbsT", torch.Tensor, NDArray[np.float64])
COMPLETIONS: tuple[Completion, ...] = get_args(Completion)


@dataclass(frozen=True)
class CriticConfig:
    """The uncertainty-aware critic's architecture and training."""

    hidden: int = 64
    """Width of each member's two hidden layers."""
    ensemble: int = 4
    """Independent members; their disagreement is the epistemic variance (1: aleatoric only)."""
    noise_aware: bool = True
    """Train through the feedback's known label-noise channel, so the grade probabilities are of the true grade."""
    learning_rate: float = 2e-3
    """AdamW step size."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    updates: int = 16
    """Gradient steps per trainer iteration, on minibatches drawn from the buffer of recent observed labels."""
    batch_size: int = 256
    """Observed labels per gradient step (each member draws its own)."""
    buffer_size: int = 32_768
    """Most recent observed labels kept for training (older ones are dropped)."""
    refit_epochs: int = 100
    """After the last iteration the critic is re-initialised and fitted for this many passes over its buffer
    (:meth:`CriticLearner.refit`): the critic that ranks and serves as the prior is then fitted on all the feedback
    of the run, as the ``supervised`` baseline is, rather than mostly on its early part (0: keep the online critic)."""

    def __post_init__(self) -> None:
        ranges = {
            "hidden": ">= 1",
            "ensemble": ">= 1",
            "learning_rate": "> 0",
            "weight_decay": ">= 0",
            "updates": ">= 0",
            "batch_size": ">= 1",
            "buffer_size": ">= 1",
            "refit_epochs": ">= 0",
        }
        check_fields(self, ranges)


def critic_setting_types() -> dict[str, Any]:
    """The agent settings that configure the critic, its config's fields prefixed with ``critic_``, with their annotations."""
    return {f"critic_{name}": annotation for name, annotation in field_types(CriticConfig).items()}


#: Agent settings that configure the critic (the keys of :func:`critic_setting_types`).
CRITIC_SETTINGS = frozenset(critic_setting_types())


def critic_settings(settings: dict[str, Any]) -> tuple[CriticConfig, dict[str, Any]]:
    """Flat agent settings to the critic's (:data:`CRITIC_SETTINGS`) and the rest: ``(CriticConfig, rest)``."""
    config = CriticConfig(**{k.removeprefix("critic_"): v for k, v in settings.items() if k in CRITIC_SETTINGS})
    return config, {k: v for k, v in settings.items() if k not in CRITIC_SETTINGS}


def grade_gains(max_grade: int) -> NDArray[np.float64]:
    """``g_y = 2**y - 1`` for ``y = 0..M``."""
    return np.exp2(np.arange(max_grade + 1, dtype=np.float64)) - 1.0


def noisy_channel(probs: ProbsT, label_noise: float) -> ProbsT:
    """``P(observed = y) = (1 - eps) p_y + eps / M (1 - p_y)``: ``(..., M + 1) -> (..., M + 1)`` (tensor or array)."""
    m = probs.shape[-1] - 1
    return (1.0 - label_noise) * probs + label_noise / m * (1.0 - probs)


def gain_moments(probs: NDArray) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Mean and variance of the gain under grade probabilities ``(..., M + 1)``: ``(...), (...)``."""
    gains = grade_gains(probs.shape[-1] - 1)
    mean = probs @ gains
    return mean, np.maximum(probs @ gains**2 - mean**2, 0.0)


class GradeCritic(nn.Module):
    """An ensemble of small MLPs, each giving grade logits ``(M + 1,)`` per input row."""

    def __init__(self, input_dim: int, max_grade: int, config: CriticConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or CriticConfig()
        self.input_dim, self.max_grade = input_dim, max_grade
        self.members = nn.ModuleList(
            nn.Sequential(
                nn.Linear(input_dim, c.hidden),
                nn.SiLU(),
                nn.Linear(c.hidden, c.hidden),
                nn.SiLU(),
                nn.Linear(c.hidden, max_grade + 1),
            )
            for _ in range(c.ensemble)
        )

    def member_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's grade log-probabilities: ``(..., F) -> (E, ..., M + 1)``."""
        return torch.stack([torch.log_softmax(member(x), dim=-1) for member in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The mixture's grade probabilities: ``(..., F) -> (..., M + 1)``."""
        return self.member_log_probs(x).exp().mean(dim=0)

    def loss(self, x: torch.Tensor, labels: torch.Tensor, label_noise: float) -> torch.Tensor:
        """Mean cross-entropy of observed ``labels`` ``(E, R)`` given inputs ``x`` ``(E, R, F)``, member e on row e."""
        probs = torch.stack([torch.softmax(member(x[e]), dim=-1) for e, member in enumerate(self.members)])  # (E, R, M+1)
        if label_noise > 0:
            probs = noisy_channel(probs, label_noise)
        return -torch.log(probs.gather(-1, labels[..., None]).clamp_min(1e-12)).mean()


# --------------------------------------------------------------------------------------------------------------------
# Calibration.


def expected_calibration_error(probs: NDArray, labels: NDArray, bins: int = 10) -> float:
    """Top-label ECE: ``sum_b |B_b| / n * |accuracy(B_b) - confidence(B_b)|`` over equal-width confidence bins."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if not len(labels):
        return float("nan")
    confidence, predicted = probs.max(axis=-1), probs.argmax(axis=-1)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    error = 0.0
    for b in np.unique(which):
        inside = which == b
        error += inside.mean() * abs((predicted[inside] == labels[inside]).mean() - confidence[inside].mean())
    return float(error)


def interval_coverage(probs: NDArray, labels: NDArray, widths: tuple[float, ...] = (1.0, 2.0)) -> dict[str, float]:
    """Fraction of label gains inside ``mu ± w sigma``, observed and as the distribution predicts, for each width."""
    probs = np.asarray(probs, dtype=np.float64)
    mean, var = gain_moments(probs)
    std, gains = np.sqrt(var), grade_gains(probs.shape[-1] - 1)
    target = gains[np.asarray(labels)]
    out = {}
    for w in widths:
        inside = np.abs(gains - mean[..., None]) <= w * std[..., None] + 1e-12  # (R, M+1)
        out[f"within_{w:g}sigma"] = float((np.abs(target - mean) <= w * std + 1e-12).mean()) if len(target) else np.nan
        out[f"within_{w:g}sigma_predicted"] = float((probs * inside).sum(-1).mean()) if len(target) else np.nan
    return out


def calibration_report(probs: NDArray, labels: NDArray, label_noise: float) -> dict[str, float]:
    """ECE, NLL and interval coverage of the *observed* (noisy) labels under the critic's true-grade ``probs``."""
    observed_probs = noisy_channel(np.asarray(probs, dtype=np.float64), label_noise)
    labels = np.asarray(labels, dtype=np.int64)
    nll = -np.log(np.take_along_axis(observed_probs, labels[:, None], 1).clip(1e-12)).mean() if len(labels) else np.nan
    return {"ece": expected_calibration_error(observed_probs, labels), "nll": float(nll)} | interval_coverage(
        observed_probs, labels
    )


# --------------------------------------------------------------------------------------------------------------------
# Completing the feedback's gains and the swap rewards.


def completed_gains(
    labels: NDArray,
    observed: NDArray[np.bool_],
    mean: NDArray,
    var: NDArray,
    completion: Completion = "impute",
    observe_prob: float | NDArray[np.float64] = 1.0,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gains and their variances ``(B, N)`` that stand in for the feedback's (see the module docstring).

    Observed gains are the feedback's (noisy) labels, what the rewards measure; the critic's ``mean`` and ``var``
    are its estimate of the true grade's gain, so with label noise the two differ slightly in expectation.
    """
    observed_gain = np.exp2(np.asarray(labels, dtype=np.float64)) - 1.0
    if completion == "impute":
        return np.where(observed, observed_gain, mean), np.where(observed, 0.0, var)
    if completion == "dr":  # observe_prob: a float, or one per row (B, 1) where it differs (a session's fatigue)
        if not np.all((np.asarray(observe_prob) > 0.0) & (np.asarray(observe_prob) <= 1.0)):
            raise ValueError(f"observe_prob={observe_prob!r}; allowed: in (0, 1] for doubly robust completion")
        gain = mean + np.where(observed, (observed_gain - mean) / observe_prob, 0.0)
        return gain, np.where(observed, var * (1.0 / observe_prob - 1.0) ** 2, var)
    if completion == "none":
        return np.where(observed, observed_gain, 0.0), np.where(observed, 0.0, var)
    raise ValueError(f"completion={completion!r}; allowed: {list(COMPLETIONS)}")


def completed_swap_rewards(
    rankings: NDArray[np.integer], gain: NDArray, gain_var: NDArray, k: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Swap rewards of NDCG@k and their std from uncertain gains: ``(B, G, K), (B, N), (B, N) -> (B, G, K) x 2``."""
    batch, group, length = rankings.shape
    n = gain.shape[-1]
    coefficients = swap_coefficients(rankings.reshape(batch * group, length), n, k).reshape(batch, group, length, n)
    idcg = ideal_dcg(np.log2(1.0 + np.clip(gain, 0.0, None)), k)[:, None, None]  # (B, 1, 1); gains(log2(1 + g)) = g
    inverse = np.divide(1.0, idcg, out=np.zeros_like(idcg), where=idcg > 0)
    mean = np.einsum("bgtn,bn->bgt", coefficients, gain) * inverse
    var = np.einsum("bgtn,bn->bgt", coefficients**2, gain_var) * inverse**2
    return mean, np.sqrt(var)


# --------------------------------------------------------------------------------------------------------------------
# The learner: critic, optimiser, buffer.


class CriticLearner:
    """The critic with its optimiser and a buffer of recent observed labels: :meth:`predict`, :meth:`add`, :meth:`fit`."""

    def __init__(
        self,
        input_dim: int,
        max_grade: int,
        label_noise: float = 0.0,
        config: CriticConfig | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = c = config or CriticConfig()
        self.label_noise = label_noise if c.noise_aware else 0.0
        self.critic = GradeCritic(input_dim, max_grade, c).to(device)
        self.optimizer = self.new_optimizer()
        self.generator = torch.Generator().manual_seed(seed)
        self.inputs = torch.empty(0, input_dim, device=device)
        self.labels = torch.empty(0, dtype=torch.long, device=device)

    def new_optimizer(self) -> torch.optim.Optimizer:
        """A fresh AdamW over the critic's parameters."""
        return torch.optim.AdamW(self.critic.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay)

    def to(self, device: torch.device | str) -> CriticLearner:
        """Move the critic and its buffer to ``device`` (the optimiser starts afresh there); returns self."""
        self.critic.to(device)
        self.inputs, self.labels = self.inputs.to(device), self.labels.to(device)
        self.optimizer = self.new_optimizer()
        return self

    @torch.no_grad()
    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """Grade probabilities ``(..., M + 1)`` of the true grade for per-candidate ``features`` ``(..., F)``."""
        self.critic.eval()
        return self.critic(features)

    def predict(self, features: torch.Tensor) -> NDArray[np.float64]:
        """:meth:`probabilities` as a float64 array on the CPU."""
        return self.probabilities(features).double().cpu().numpy()

    def expected_gain(self, features: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
        """``mu`` per candidate ``(...)``, a ranking score on the features' device (``probs``: reuse a forward)."""
        probs = self.probabilities(features) if probs is None else probs
        return probs @ torch.as_tensor(grade_gains(self.critic.max_grade), dtype=probs.dtype, device=probs.device)

    def add(self, features: torch.Tensor, labels: NDArray, observed: NDArray[np.bool_]) -> None:
        """Append the observed labels (rows of ``features`` ``(B, N, F)`` where ``observed``) to the buffer."""
        mask = torch.as_tensor(np.asarray(observed, dtype=bool), device=features.device)
        x = features[mask].detach()
        y = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=features.device)[mask]
        size = self.config.buffer_size
        self.inputs, self.labels = torch.cat([self.inputs, x])[-size:], torch.cat([self.labels, y])[-size:]

    def fit(self, updates: int | None = None) -> float:
        """``updates`` gradient steps (default: the config's) on minibatches of the buffer; returns the last loss."""
        size, loss = len(self.labels), float("nan")
        if not size:
            return loss
        self.critic.train()
        e = len(self.critic.members)
        for _ in range(self.config.updates if updates is None else updates):
            rows = torch.randint(size, (e, min(self.config.batch_size, size)), generator=self.generator)
            value = self.critic.loss(self.inputs[rows], self.labels[rows], self.label_noise)
            self.optimizer.zero_grad()
            value.backward()
            self.optimizer.step()
            loss = float(value.detach())
        return loss

    def refit(self, epochs: int) -> float:
        """Re-initialise the critic and its optimiser, then :meth:`fit_epochs` on the buffer."""
        for layer in self.critic.members.modules():
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        self.optimizer = self.new_optimizer()
        return self.fit_epochs(epochs)

    def fit_epochs(self, epochs: int) -> float:
        """``epochs`` passes' worth of gradient steps over the buffer (``epochs * size / batch_size``)."""
        return self.fit(epochs * max(len(self.labels) // self.config.batch_size, 1))

    def payload(self) -> dict[str, Any]:
        """What a checkpoint keeps: sizes, the noise the loss assumed, and the critic's weights."""
        critic = self.critic
        return {"input_dim": critic.input_dim, "max_grade": critic.max_grade, "label_noise": self.label_noise,
                "state_dict": critic.state_dict()}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """Everything that continues training exactly: :meth:`payload`, the optimiser, the minibatch generator, the buffer."""
        return {**self.payload(), "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "inputs": self.inputs, "labels": self.labels}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (of a learner of the same sizes)."""
        self.critic.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        device = next(self.critic.parameters()).device
        self.inputs, self.labels = state["inputs"].to(device), state["labels"].to(device)

    @classmethod
    def from_payload(cls, data: dict[str, Any], config: CriticConfig | None = None) -> CriticLearner:
        """The learner saved by :meth:`payload` (its buffer and optimiser state are not kept)."""
        learner = cls(data["input_dim"], data["max_grade"], data["label_noise"], config)
        learner.critic.load_state_dict(data["state_dict"])
        return learner
