r"""Ranking policies: Plackett-Luce over the candidates not yet placed, one position at a time.

A :class:`RankingPolicy` scores the N candidates of a request at every position t given the items placed before
it; the probability of a ranking ``s`` of length K is

    pi(s) = prod_t softmax_{i not in s_<t}(logits_t(i) / T)[s_t],

a masked softmax per position (Plackett-Luce when the logits do not depend on the prefix). Subclasses implement four
hooks (:meth:`~RankingPolicy.encode`, :meth:`~RankingPolicy.start`, :meth:`~RankingPolicy.next_logits`,
:meth:`~RankingPolicy.advance`) for sampling step by step, and :meth:`~RankingPolicy.teacher_logits` for the logits
of given rankings in one pass; this class applies the *same* masking and temperature to both, so the log-
probabilities the trainer recomputes are those of the distribution it sampled from. No sampled ranking repeats an
item: placed candidates get probability 0.

:class:`TransformerRankingPolicy` is the compact torch implementation: a set transformer over the candidates (each
token reads the candidate's features with the user's and the need's, and the need's vector scales and shifts every
token, FiLM-style), then a pointer-style decoder whose query at position t reads the mean of the placed candidates'
encodings, the position, the user and the need.
"""

from __future__ import annotations

import abc
import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from scenarios import Request
from scenarios.settings import check_fields


@dataclass
class RankingInputs:
    """What a ranking policy reads about B requests (tensors with the batch axis first)."""

    candidates: torch.Tensor
    """``(B, N, F)`` candidate features."""
    user: torch.Tensor
    """``(B, U)`` user features."""
    need: torch.Tensor
    """``(B, D)`` need feature vectors."""
    requests: Sequence[Request] | None = None
    """The requests as text (history, titles, instruction), for policies that read text."""
    prior: torch.Tensor | None = None
    """``(B, N)`` prior scores added to every position's logits (times the policy's ``prior_weight``): the critic's
    expected gain per candidate when the policy starts from the critic; ``None`` for none."""

    @classmethod
    def from_observation(
        cls, observation: dict[str, Any], requests: Sequence[Request] | None = None, device: torch.device | str = "cpu"
    ) -> RankingInputs:
        """From a FlexRec observation, batched ``(B, ...)`` or single (a batch of one)."""
        candidates = np.asarray(observation["candidates"], dtype=np.float32)
        single = candidates.ndim == 2

        def tensor(key: str) -> torch.Tensor:
            array = np.asarray(observation[key], dtype=np.float32)
            return torch.from_numpy(array[None] if single else array).to(device)

        return cls(tensor("candidates"), tensor("user"), tensor("need"), requests)

    def __len__(self) -> int:
        return int(self.candidates.shape[0])

    def take(self, rows: torch.Tensor | Sequence[int]) -> RankingInputs:
        """The inputs of ``rows``."""
        index = torch.as_tensor(rows, dtype=torch.long)
        requests = None if self.requests is None else [self.requests[int(i)] for i in index]
        prior = None if self.prior is None else self.prior[index.to(self.prior.device)]
        return RankingInputs(self.candidates[index], self.user[index], self.need[index], requests, prior)


@dataclass
class Rollout:
    """G sampled rankings of each of B requests, with the log-probability of every placement."""

    rankings: torch.Tensor
    """``(B, G, K)`` candidate indices, no repeats within a ranking."""
    log_probs: torch.Tensor
    """``(B, G, K)`` log-probability of each placement under the sampling distribution."""


def masked_log_softmax(logits: torch.Tensor, placed: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log softmax(logits / T)`` over the candidates not ``placed`` (placed ones get ``-inf``)."""
    return torch.log_softmax((logits / temperature).masked_fill(placed, float("-inf")), dim=-1)


def prefix_masks(rankings: torch.Tensor, num_candidates: int) -> torch.Tensor:
    """``placed[..., t, i]``: candidate i is among the first t items: ``(..., K) -> (..., K, N)``."""
    onehot = nn.functional.one_hot(rankings, num_candidates).to(torch.bool)  # (..., K, N)
    cumulative = torch.cumsum(onehot.to(torch.int32), dim=-2) > 0
    return torch.cat([torch.zeros_like(cumulative[..., :1, :]), cumulative[..., :-1, :]], dim=-2)


def candidate_context(inputs: RankingInputs) -> torch.Tensor:
    """Each candidate's features with the user's and the need's: ``(B, N, F + U + D)``, detached."""
    b, n, _ = inputs.candidates.shape
    context = torch.cat([inputs.user, inputs.need], dim=-1)[:, None, :].expand(b, n, -1)
    return torch.cat([inputs.candidates, context], dim=-1).detach()


class RankingPolicy(nn.Module, abc.ABC):
    """A policy over rankings; see the module docstring. ``temperature`` scales every position's logits.

    When the inputs carry a ``prior`` (the critic's expected gain per candidate), every position's logits become
    ``logits_t(i) + prior_weight * prior(i)``, with ``prior_weight`` a learned scalar: the policy starts as the
    critic's ranking and RL learns what to change.
    """

    temperature: float = 1.0
    #: Whether the policy reads ``RankingInputs.requests`` (text); the trainer builds them only then.
    reads_text: bool = False
    #: Initial weight of the prior scores.
    initial_prior_weight: float = 2.0

    def __init__(self, learns_prior: bool = True) -> None:
        super().__init__()
        self.learns_prior = learns_prior
        """Whether the policy has a ``prior_weight`` and can start from the critic (``TrainerConfig.critic_prior``)."""
        if learns_prior:
            self.prior_weight = nn.Parameter(torch.tensor(self.initial_prior_weight))

    def with_prior(self, logits: torch.Tensor, inputs: RankingInputs) -> torch.Tensor:
        """``logits (B, ..., N)`` plus ``prior_weight * prior`` broadcast over the middle axes (unchanged without one)."""
        if inputs.prior is None:
            return logits
        if not self.learns_prior:
            raise ValueError(f"{type(self).__name__} has no prior weight: it cannot start from the critic (critic_prior)")
        prior = inputs.prior.to(logits.dtype).reshape(len(inputs), *([1] * (logits.dim() - 2)), -1)
        return logits + self.prior_weight * prior

    # Hooks ----------------------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def encode(self, inputs: RankingInputs) -> Any:
        """Per-request state, computed once (candidate encodings, a prompt's cache, ...)."""

    @abc.abstractmethod
    def start(self, state: Any, group_size: int) -> Any:
        """Decoding state of ``B * G`` rankings (request-major) before the first position."""

    @abc.abstractmethod
    def next_logits(self, decoding: Any) -> torch.Tensor:
        """``(B * G, N)`` logits of the next position."""

    @abc.abstractmethod
    def advance(self, decoding: Any, actions: torch.Tensor) -> Any:
        """The decoding state after placing ``actions`` ``(B * G,)``."""

    @abc.abstractmethod
    def teacher_logits(self, state: Any, rankings: torch.Tensor) -> torch.Tensor:
        """``(B, G, K, N)`` logits at every position of ``rankings`` ``(B, G, K)`` given their true prefixes."""

    def critic_inputs(self, inputs: RankingInputs) -> torch.Tensor:
        """``(B, N, H)`` per-candidate inputs of the critic (detached). Default: :func:`candidate_context`."""
        return candidate_context(inputs)

    # Provided -------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        inputs: RankingInputs,
        group_size: int,
        length: int,
        greedy: bool = False,
        generator: torch.Generator | None = None,
    ) -> Rollout:
        """``group_size`` rankings of ``length`` items per request (greedy: the most likely item at each position)."""
        state = self.encode(inputs)
        b, n = len(inputs), int(inputs.candidates.shape[1])
        if not 1 <= length <= n:
            raise ValueError(f"length={length}; allowed: 1..{n} (the number of candidates)")
        decoding = self.start(state, group_size)
        placed = torch.zeros(b * group_size, n, dtype=torch.bool, device=inputs.candidates.device)
        rows = torch.arange(b * group_size, device=placed.device)
        actions, log_probs = [], []
        for _ in range(length):
            logits = self.with_prior(self.next_logits(decoding).reshape(b, group_size, n), inputs)  # (B, G, N)
            logp = masked_log_softmax(logits.reshape(b * group_size, n), placed, self.temperature)
            if greedy:
                action = logp.argmax(dim=-1)
            else:  # Gumbel-max: argmax of log p + Gumbel noise is a sample of p
                uniform = torch.rand(logp.shape, generator=generator, device=logp.device).clamp_(1e-20, 1.0)
                action = (logp - torch.log(-torch.log(uniform))).argmax(dim=-1)
            actions.append(action)
            log_probs.append(logp[rows, action])
            placed[rows, action] = True
            decoding = self.advance(decoding, action)
        shape = (b, group_size, length)
        chosen = torch.stack(log_probs, -1).reshape(shape)
        if not torch.isfinite(chosen).all():  # NaN logits: argmax placed some item twice; one check per rollout
            raise FloatingPointError(
                f"{type(self).__name__} produced non-finite logits (NaN or inf) while ranking: check its weights, "
                "or load them in float32 or bfloat16 rather than float16"
            )
        return Rollout(torch.stack(actions, -1).reshape(shape), chosen)

    def log_probs(self, inputs: RankingInputs, rankings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced log-probabilities and entropies of every placement of ``rankings`` ``(B, G, K)``."""
        logits = self.with_prior(self.teacher_logits(self.encode(inputs), rankings), inputs)  # (B, G, K, N)
        logp = masked_log_softmax(logits, prefix_masks(rankings, logits.shape[-1]), self.temperature)
        chosen = logp.gather(-1, rankings[..., None])[..., 0]
        entropy = -(logp.exp() * logp.masked_fill(torch.isinf(logp), 0.0)).sum(-1)
        return chosen, entropy

    def next_log_probs(self, inputs: RankingInputs, prefixes: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` log-probabilities of the next placement after ``prefixes`` ``(B, t)`` (``-inf`` on placed items).

        The distribution :meth:`sample` draws position t from, computed by teacher forcing: position t's logits read
        only the items before it, so any item stands in at position t itself.
        """
        b, t = prefixes.shape
        rankings = torch.cat([prefixes, prefixes.new_zeros(b, 1)], dim=1)[:, None, :]  # (B, 1, t + 1)
        logits = self.with_prior(self.teacher_logits(self.encode(inputs), rankings), inputs)[:, 0, t]  # (B, N)
        return masked_log_softmax(logits, prefix_masks(rankings, logits.shape[-1])[:, 0, t], self.temperature)

    def forward(self, inputs: RankingInputs, rankings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`log_probs`: the trainer calls the (possibly data-parallel wrapped) module, so gradients synchronise."""
        return self.log_probs(inputs, rankings)

    def rank(self, inputs: RankingInputs, length: int) -> torch.Tensor:
        """The greedy ranking of each request: ``(B, length)``."""
        return self.sample(inputs, 1, length, greedy=True).rankings[:, 0]

    def reference(self) -> RankingPolicy:
        """A frozen copy of this policy, the anchor of the KL penalty (LLM policies disable their adapter instead)."""
        frozen = copy.deepcopy(self)
        frozen.requires_grad_(False)
        return frozen.eval()


@dataclass(frozen=True)
class TransformerPolicyConfig:
    """Size of the transformer ranking policy."""

    dim: int = 64
    """Width of the candidate encodings."""
    layers: int = 2
    """Set-transformer layers over the candidates."""
    heads: int = 4
    """Attention heads (must divide ``dim``)."""
    max_length: int = 64
    """Longest list the position embedding covers."""
    dropout: float = 0.0
    """Dropout in the encoder (0 keeps sampling and teacher forcing identical in training mode)."""

    def __post_init__(self) -> None:
        check_fields(self, {"dim": ">= 1", "layers": ">= 0", "heads": ">= 1", "max_length": ">= 1", "dropout": "[0, 1)"})
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}; allowed: heads that divide dim")


class TransformerRankingPolicy(RankingPolicy):
    """Set transformer over the candidates plus a pointer decoder (see the module docstring)."""

    def __init__(self, candidate_dim: int, user_dim: int, need_dim: int, config: TransformerPolicyConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or TransformerPolicyConfig()
        self.dims = (candidate_dim, user_dim, need_dim)
        self.embed = nn.Sequential(nn.Linear(candidate_dim + user_dim + need_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.film = nn.Linear(need_dim, 2 * c.dim)  # FiLM: the need scales and shifts every candidate's encoding
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        layer = nn.TransformerEncoderLayer(c.dim, c.heads, 2 * c.dim, c.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.layers, enable_nested_tensor=False) if c.layers else nn.Identity()
        self.context = nn.Linear(user_dim + need_dim, c.dim)
        self.position = nn.Embedding(c.max_length, c.dim)
        self.query = nn.Sequential(nn.Linear(3 * c.dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
        self.key = nn.Linear(c.dim, c.dim)
        nn.init.zeros_(self.key.weight)  # every ranking equally likely at first (or exactly the prior's, with one)

    def encode(self, inputs: RankingInputs) -> dict[str, torch.Tensor]:
        b, n, _ = inputs.candidates.shape
        context = torch.cat([inputs.user, inputs.need], dim=-1)  # (B, U + D)
        tokens = self.embed(torch.cat([inputs.candidates, context[:, None, :].expand(b, n, -1)], dim=-1))  # (B, N, d)
        scale, shift = self.film(inputs.need)[:, None, :].chunk(2, dim=-1)  # (B, 1, d) each
        h = self.encoder(tokens * (1.0 + scale) + shift)  # (B, N, d)
        return {"h": h, "keys": self.key(h), "context": self.context(context)}

    def _logits(self, state: dict[str, torch.Tensor], placed_mean: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., N)`` for queries from the placed mean ``(..., d)`` and positions ``t``; ``...`` = (B, ...)."""
        lead = placed_mean.shape[:-1]
        context = state["context"].reshape(state["context"].shape[0], *([1] * (len(lead) - 1)), -1).expand(*lead, -1)
        q = self.query(torch.cat([placed_mean, self.position(t).expand(*lead, -1), context], dim=-1))
        keys = state["keys"].reshape(state["keys"].shape[0], *([1] * (len(lead) - 1)), *state["keys"].shape[1:])
        return (keys @ q[..., None])[..., 0] / math.sqrt(self.config.dim)

    def start(self, state: dict[str, torch.Tensor], group_size: int) -> dict[str, Any]:
        b, _, d = state["h"].shape
        return {"state": state, "group": group_size, "sum": state["h"].new_zeros(b, group_size, d), "t": 0}

    def next_logits(self, decoding: dict[str, Any]) -> torch.Tensor:
        t = torch.tensor(decoding["t"], device=decoding["sum"].device)
        mean = decoding["sum"] / max(decoding["t"], 1)
        return self._logits(decoding["state"], mean, t).flatten(0, 1)

    def advance(self, decoding: dict[str, Any], actions: torch.Tensor) -> dict[str, Any]:
        h = decoding["state"]["h"]  # (B, N, d)
        b, g = decoding["sum"].shape[:2]
        chosen = h.gather(1, actions.reshape(b, g, 1).expand(b, g, h.shape[-1]))  # (B, G, d)
        return {**decoding, "sum": decoding["sum"] + chosen, "t": decoding["t"] + 1}

    def teacher_logits(self, state: dict[str, torch.Tensor], rankings: torch.Tensor) -> torch.Tensor:
        h = state["h"]  # (B, N, d)
        b, g, k = rankings.shape
        chosen = h.gather(1, rankings.reshape(b, g * k, 1).expand(-1, -1, h.shape[-1])).reshape(b, g, k, -1)
        before = torch.cumsum(chosen, dim=2) - chosen  # sum of the items placed before each position
        count = torch.arange(k, device=h.device).clamp(min=1).to(h.dtype)[:, None]
        return self._logits(state, before / count, torch.arange(k, device=h.device))
