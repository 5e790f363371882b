r"""Simulated noisy, sparse feedback: labels the environment rewards with, and clicks on the finished list.

Per request, each candidate's label is observed with probability ``observe_prob``; an observed label equals the
true relevance with probability ``1 - label_noise`` and is otherwise another grade drawn uniformly from the other
grades ``{0..max_grade} \ {rel}``. Unobserved labels are 0, with an ``observed`` mask (never NaN, so same-seed
infos compare equal). Clicks on the finished list follow a click model; the attractiveness of relevance ``rel`` is
``(2**rel - 1) / (2**max_grade - 1)``:

* ``"position"`` (position-based model): position p is examined with probability ``1 / p**eta`` and an examined
  item is clicked with its attractiveness; clicks are independent across positions.
* ``"cascade"``: the user scans from the top and clicks the first item that attracts them, then stops.

The functions here are deterministic: the environment draws their uniforms at reset (see
:func:`flexrec_env.core.draw_noise`), so the feedback of an episode is fixed by the env's seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray

from scenarios.settings import check_fields

ClickModel = Literal["position", "cascade"]


@dataclass(frozen=True)
class FeedbackConfig:
    """Parameters of the simulated feedback."""

    observe_prob: float = 0.3
    """Probability that a candidate's label is observed at all (sparsity); in [0, 1]."""
    label_noise: float = 0.1
    """Probability that an observed label is replaced by another grade (noise); in [0, 1]."""
    click_model: ClickModel = "position"
    """Click model for ``info["clicks"]``: ``"position"`` or ``"cascade"``."""
    examination_eta: float = 1.0
    """Position bias of the position-based model: examination probability ``1 / p**eta``; ``>= 0``."""

    def __post_init__(self) -> None:
        check_fields(self, {"observe_prob": "[0, 1]", "label_noise": "[0, 1]", "examination_eta": ">= 0"})

    @classmethod
    def coerce(cls, value: FeedbackConfig | dict[str, object] | None) -> FeedbackConfig:
        """A config from ``None`` (defaults), a dict of its fields, or a config."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(cls.__dataclass_fields__))
            if unknown:
                raise ValueError(f"unknown feedback parameter(s) {unknown}; allowed: {sorted(cls.__dataclass_fields__)}")
            return cls(**value)  # type: ignore[arg-type]
        raise TypeError(f"feedback must be a FeedbackConfig, a dict or None, got {type(value).__name__}")


def feedback_labels(
    relevance: NDArray[np.integer],
    observe_uniform: NDArray[np.float64],
    noise_uniform: NDArray[np.float64],
    grade_uniform: NDArray[np.float64],
    max_grade: int,
    config: FeedbackConfig,
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Observed labels and the observed mask ``(B, N)`` from the true relevance and three ``(B, N)`` uniforms."""
    relevance = np.asarray(relevance, dtype=np.int64)
    observed = observe_uniform < config.observe_prob  # (B, N)
    noisy = noise_uniform < config.label_noise  # (B, N)
    other = np.floor(grade_uniform * max_grade).astype(np.int64)  # uniform in 0..max_grade-1
    other += other >= relevance  # uniform over the grades != rel
    labels = np.where(noisy & (max_grade > 0), other, relevance) * observed
    return labels.astype(np.float32), observed


def attractiveness(relevance: NDArray, max_grade: int) -> NDArray[np.float64]:
    """Click probability of an examined item: ``(2**rel - 1) / (2**max_grade - 1)``."""
    return (np.exp2(np.asarray(relevance, dtype=np.float64)) - 1.0) / max(2.0**max_grade - 1.0, 1e-12)


def simulate_clicks(
    model: ClickModel, relevance_in_list: NDArray, uniforms: NDArray[np.float64], max_grade: int, eta: float = 1.0
) -> NDArray[np.int8]:
    """Clicks ``(B, K)`` on finished lists, from the true relevance in list order and pre-drawn uniforms."""
    attract = attractiveness(relevance_in_list, max_grade)  # (B, K)
    if model == "position":
        examine = 1.0 / np.arange(1, attract.shape[-1] + 1, dtype=np.float64) ** eta  # (K,)
        return (uniforms < examine * attract).astype(np.int8)
    if model == "cascade":
        attracted = uniforms < attract  # (B, K)
        first = attracted & (np.cumsum(attracted, axis=-1) == 1)
        return first.astype(np.int8)
    raise ValueError(f"click model {model!r}; allowed: {list(get_args(ClickModel))}")
