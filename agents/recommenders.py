"""Need-blind trained recommenders: BPR matrix factorisation and SASRec, fitted on the scenario's histories.

Both learn from ``scenario.interaction_histories()`` only (``(U, H)`` item ids, ``-1`` padded, most recent last:
every interaction before the requests, which may be many more than a request's ``history`` shows; BPR reads them
all, SASRec cuts them into windows) and never read the need, so they show what a strong conventional recommender
does when the request asks for something else than "more of what I liked". :class:`HistoryRecommender` holds the
shared part (the training loop, negative sampling, checkpoints, ranking); :class:`BPRAgent` and
:class:`SASRecAgent` only fill in the model, the training batches and the scores.

Training budget: ``learn(env_kwargs, total_steps)`` processes ``total_steps`` *training examples*, each a positive
item with one sampled negative, drawn with replacement: for BPR a (user, positive, negative) triple, for SASRec one
next-item target of a history window (batches hold whole windows; the last one is cut to the budget). The CLI's
default ``--steps 150000`` is then about 15 passes over the default synthetic histories (10,000 interactions), a
few seconds on one CPU core for either model.

Negatives are uniform over the catalogue, redrawn when they fall in the user's history (up to
``NEGATIVE_REDRAWS`` rounds, so almost always outside it). Training is seeded (numpy draws the batches, torch the
initial weights and dropout, in a forked stream: the caller's global torch state is left as it was) and logs
``train/loss`` per update to TensorBoard when ``learn`` gets a ``logdir``.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import gymnasium as gym
import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn import functional as F

import flexrec_env  # noqa: F401  (registers FlexRec-v0)
from agents.base import TrainableAgent, portable
from agents.checkpoints import load_checkpoint, restoring, save_checkpoint
from agents.progress import Progress
from agents.resume import Checkpointing
from scenarios import Request
from scenarios.settings import check_fields, field_types

logger = logging.getLogger(__name__)

#: torch intra-op threads while training and ranking: these models are too small to gain from more, and extra
#: threads slow them down badly on a busy machine (SASRec, 200,000 examples on a loaded 2-core machine: 3.7 s on one
#: thread, 38 s on two).
TORCH_THREADS = 1
#: Rounds of redrawing negatives that fall in the user's history (what is left after them is kept).
NEGATIVE_REDRAWS = 50


# --------------------------------------------------------------------------------------------------------------------
# Settings.


@dataclass(frozen=True)
class BPRConfig:
    """Settings of :class:`BPRAgent` (Rendle et al. 2009, trained with Adam)."""

    dim: int = 64
    """Size of the user and item factors."""
    lr: float = 0.01
    """Adam step size."""
    reg: float = 0.01
    """L2 penalty on the factors and biases in each batch (per example); with ~10 items per user, BPR overfits
    quickly without it."""
    batch_size: int = 256
    """Triples per update."""

    def __post_init__(self) -> None:
        check_fields(self, {"dim": ">= 1", "lr": "(0, 1)", "reg": ">= 0", "batch_size": ">= 1"})


@dataclass(frozen=True)
class SASRecConfig:
    """Settings of :class:`SASRecAgent` (Kang & McAuley 2018)."""

    dim: int = 64
    """Size of the item embeddings and of the transformer."""
    layers: int = 2
    """Self-attention blocks."""
    heads: int = 1
    """Attention heads per block (must divide ``dim``)."""
    max_len: int = 50
    """Window length: the model reads at most this many history items (the window is the shorter of this and the
    longest training history). Training cuts every user's whole history into windows of this length; ranking reads
    the last ones of the request's history."""
    dropout: float = 0.2
    """Dropout on the embeddings and inside the blocks."""
    lr: float = 5e-3
    """Adam step size (the paper's 1e-3 needs about five times the CLI's default budget on the synthetic scenario)."""
    batch_size: int = 128
    """History windows per update."""

    def __post_init__(self) -> None:
        check_fields(
            self,
            {
                "dim": ">= 1",
                "layers": ">= 1",
                "heads": ">= 1",
                "max_len": ">= 1",
                "dropout": "[0, 1)",
                "lr": "(0, 1)",
                "batch_size": ">= 1",
            },
        )
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}; allowed: heads that divide dim")


ConfigT = TypeVar("ConfigT", BPRConfig, SASRecConfig)


# --------------------------------------------------------------------------------------------------------------------
# Data.


def interaction_keys(histories: NDArray[np.int64], num_items: int) -> NDArray[np.int64]:
    """Sorted ``user * num_items + item`` of every (user, item) in ``histories`` (``(U, H)``, ``-1`` padded)."""
    users, positions = np.nonzero(histories >= 0)
    return np.unique(users * num_items + histories[users, positions])


def sample_negatives(
    rng: np.random.Generator, users: NDArray[np.int64], keys: NDArray[np.int64], num_items: int
) -> NDArray[np.int64]:
    """A uniform item per entry of ``users`` (any shape), redrawn up to ``NEGATIVE_REDRAWS`` times if in its history."""
    shape = users.shape
    users = users.reshape(-1)
    items = rng.integers(0, num_items, size=len(users))
    redraw = np.flatnonzero(_contains(keys, users * num_items + items))
    for _ in range(NEGATIVE_REDRAWS):
        if not len(redraw):
            break
        items[redraw] = rng.integers(0, num_items, size=len(redraw))
        redraw = redraw[_contains(keys, users[redraw] * num_items + items[redraw])]
    return items.reshape(shape)


def _contains(sorted_keys: NDArray[np.int64], values: NDArray[np.int64]) -> NDArray[np.bool_]:
    at = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return sorted_keys[at] == values


def right_aligned(histories: NDArray[np.int64], width: int) -> NDArray[np.int64]:
    """The last ``width`` valid items of each row as ids + 1, right-aligned and 0 padded on the left: ``(U, width)``."""
    valid = histories >= 0  # (U, H)
    count = valid.sum(axis=1)  # (U,)
    rank_from_end = count[:, None] - np.cumsum(valid, axis=1)  # (U, H): 0 for the most recent valid item
    keep = valid & (rank_from_end < width)
    rows, columns = np.nonzero(keep)
    out = np.zeros((len(histories), width), dtype=np.int64)
    out[rows, width - 1 - rank_from_end[rows, columns]] = histories[rows, columns] + 1
    return out


def history_windows(histories: NDArray[np.int64], width: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Every user's whole history cut into windows of ``width`` items: ``(S, width)`` ids + 1 and their users ``(S,)``.

    Windows are right-aligned and 0 padded on the left, like :func:`right_aligned`, and step back from the most
    recent item by ``width - 1``, so consecutive windows of a user share one item and, as next-item targets (a
    window's positions 1..), every item after the user's first counts exactly once (the first too when padding
    precedes it). A user whose history fits gets the single window ``right_aligned(histories, width)`` holds.
    """
    valid = histories >= 0  # (U, H)
    rows, columns = np.nonzero(valid)
    items = histories[rows, columns]  # (P,) each user's items in order, one user after the other
    count = valid.sum(axis=1)  # (U,)
    starts = np.cumsum(count) - count  # (U,) where each user's items begin in ``items``
    step = width - 1
    per_user = np.where(count > 0, np.maximum(-(-(count - 1) // step), 1), 0)  # (U,) ceil((count - 1) / step)
    users = np.repeat(np.arange(len(histories)), per_user)  # (S,)
    back = np.arange(len(users)) - np.repeat(np.cumsum(per_user) - per_user, per_user)  # (S,) 0: the latest window
    ends = count[users] - back * step  # (S,) one past each window's last item, in its user's history
    at = ends[:, None] - width + np.arange(width)  # (S, width) positions in the user's history; < 0: padding
    windows = np.where(at >= 0, items[starts[users][:, None] + np.maximum(at, 0)] + 1, 0)
    return windows.astype(np.int64), users


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    """At most ``count`` torch intra-op threads inside the block; the previous setting after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(count, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------------------------------
# The shared agent.


class HistoryRecommender(TrainableAgent, Generic[ConfigT]):
    """A need-blind recommender fitted on interaction histories by minibatch Adam (see the module docstring).

    Subclasses set ``name`` and ``config_class`` and implement the model (:meth:`_build_model`), the training data
    (:meth:`_training_data`), a batch's loss (:meth:`_batch_loss`) and the candidates' scores (:meth:`scores`).
    """

    config_class: ClassVar[type[Any]]

    def __init__(self, config: ConfigT | None = None, seed: int | None = None, **overrides: Any) -> None:
        super().__init__()
        base = asdict(config) if config is not None else {}
        self.config: ConfigT = self.config_class(**{**base, **overrides})
        self.default_seed = seed
        self.model: nn.Module | None = None
        self.dims: dict[str, int] = {}
        """The model's sizes (``num_users``, ``num_items``, ...), as the training data set them."""
        self.env_kwargs: dict[str, Any] = {}
        self.loss_history: list[tuple[int, float]] = []
        """``(examples processed, batch loss)`` of the last :meth:`learn`."""

    @classmethod
    def setting_types(cls) -> dict[str, Any]:
        return {**field_types(cls.config_class), "seed": int | None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # Filled in by the subclasses.

    @abc.abstractmethod
    def _build_model(self, dims: dict[str, int]) -> nn.Module:
        """A freshly initialised model of the given sizes."""

    @abc.abstractmethod
    def _dims(self, histories: NDArray[np.int64], num_users: int, num_items: int) -> dict[str, int]:
        """The model's sizes for these training histories."""

    @abc.abstractmethod
    def _training_data(self, histories: NDArray[np.int64]) -> Any:
        """Whatever :meth:`_batch_loss` samples from."""

    @abc.abstractmethod
    def _batch_loss(self, data: Any, rng: np.random.Generator, remaining: int) -> tuple[torch.Tensor, int]:
        """The mean loss of a batch drawn from ``data`` with ``rng`` and its number of examples (``<= remaining``)."""

    @abc.abstractmethod
    def scores(self, request: Request) -> NDArray[np.float32]:
        """``(N,)`` score of each candidate of ``request`` (higher is better); the need is never read."""

    # The shared part.

    def _learn(
        self, env_kwargs: dict[str, Any], total_steps: int, seed: int, logdir: Path | None, checkpointing: Checkpointing | None
    ) -> None:
        """Fit on the histories of the env's scenario, ``total_steps`` training examples in all."""
        self.env_kwargs = portable(env_kwargs)  # what the checkpoint keeps (a scenario object is left out)
        env = gym.make("FlexRec-v0", **env_kwargs)
        scenario = env.unwrapped.scenario  # type: ignore[attr-defined]
        env.close()
        histories = np.asarray(scenario.interaction_histories(), dtype=np.int64)
        num_users, num_items = int(scenario.num_users), int(scenario.num_items)
        if histories.ndim != 2 or len(histories) != num_users or ((histories < -1) | (histories >= num_items)).any():
            raise ValueError(
                f"{scenario!r}.interaction_histories() has shape {histories.shape}; expected ({num_users}, H) "
                f"item ids in [0, {num_items}) padded with -1"
            )
        if not (histories >= 0).any():
            raise ValueError(f"{scenario!r} has no interactions to learn from")
        with torch.random.fork_rng(devices=[]), _torch_threads(TORCH_THREADS):  # the caller's torch stream untouched
            torch.manual_seed(seed)
            self.dims = self._dims(histories, num_users, num_items)
            self.model = self._build_model(self.dims)
            self._fit(self._training_data(histories), np.random.default_rng(seed), total_steps, logdir)

    def _fit(self, data: Any, rng: np.random.Generator, total_steps: int, logdir: Path | None) -> None:
        assert self.model is not None
        writer = None
        if logdir is not None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(log_dir=str(logdir))
        optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)
        self.loss_history = []
        self.model.train()
        processed = 0
        bar = Progress(total_steps, f"train {self.name}", unit="example")
        try:
            while processed < total_steps:
                loss, size = self._batch_loss(data, rng, total_steps - processed)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                processed += size
                bar.update(size)
                self.loss_history.append((processed, float(loss.item())))
                if writer is not None:
                    writer.add_scalar("train/loss", self.loss_history[-1][1], processed)
        finally:
            bar.close()
            self.model.eval()
            if writer is not None:
                writer.close()
        logger.info("%s: %d examples, last loss %.4f", self.name, processed, self.loss_history[-1][1])

    def rank(self, request: Request, observation: dict[str, Any], info: dict[str, Any]) -> NDArray[np.int64]:
        """Candidate indices by decreasing :meth:`scores` (ties keep the candidates' order)."""
        with _torch_threads(TORCH_THREADS):
            scores = self.scores(request)
        return np.argsort(-scores, kind="stable").astype(np.int64)

    def _items(self, ids: tuple[int, ...] | NDArray[np.int64], what: str) -> torch.Tensor:
        """Item ids as a tensor, checked against the catalogue the agent was trained on."""
        if self.model is None:
            raise RuntimeError(f"{self.name} has no model yet: call learn() or load a checkpoint")
        items = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(-1))
        if len(items) and (int(items.min()) < 0 or int(items.max()) >= self.dims["num_items"]):
            raise ValueError(
                f"{what} item ids span [{int(items.min())}, {int(items.max())}], outside the catalogue of "
                f"{self.dims['num_items']} items this agent was trained on (evaluate it on its training scenario)"
            )
        return items

    def save(self, path: Path) -> None:
        """Write the settings, the model's sizes and weights, and the training env's arguments (atomically)."""
        if self.model is None:
            raise RuntimeError(f"nothing to save: the {self.name} agent has not been trained")
        payload = {
            "config": asdict(self.config),
            "dims": self.dims,
            "state_dict": self.model.state_dict(),
            "env_kwargs": self.env_kwargs,
            "feature_sizes": self.trained_sizes,
        }
        save_checkpoint(path, kind=self.name, payload=payload)

    @classmethod
    def load(cls, path: Path) -> HistoryRecommender[Any]:
        """Rebuild an agent written by :meth:`save` (a ``ValueError`` if ``path`` holds another agent's checkpoint)."""
        data = load_checkpoint(path, kind=cls.name)
        agent = cls(cls.config_class(**data["config"]))
        agent.dims = {key: int(value) for key, value in data["dims"].items()}
        with restoring(path, "model"):
            agent.model = agent._build_model(agent.dims)
            agent.model.load_state_dict(data["state_dict"])
        agent.model.eval()
        agent.env_kwargs = dict(data.get("env_kwargs", {}))
        agent.restore_feature_sizes(data)
        return agent


# --------------------------------------------------------------------------------------------------------------------
# BPR.


class BPRModel(nn.Module):
    """User and item factors and an item bias: ``x_ui = <p_u, q_i> + b_i``."""

    def __init__(self, num_users: int, num_items: int, dim: int) -> None:
        super().__init__()
        self.user = nn.Embedding(num_users, dim)
        self.item = nn.Embedding(num_items, dim)
        self.item_bias = nn.Embedding(num_items, 1)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)
        nn.init.zeros_(self.item_bias.weight)

    def score(self, user_vectors: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(B, M)`` scores of items ``(B, M)`` for user vectors ``(B, D)``."""
        return (self.item(items) * user_vectors[:, None]).sum(-1) + self.item_bias(items)[..., 0]


@dataclass(frozen=True)
class _Interactions:
    users: NDArray[np.int64]
    """``(P,)`` user of each interaction."""
    items: NDArray[np.int64]
    """``(P,)`` item of each interaction."""
    keys: NDArray[np.int64]
    """Sorted ``user * num_items + item`` (for negative sampling)."""


class BPRAgent(HistoryRecommender[BPRConfig]):
    """BPR matrix factorisation on the histories (need-blind).

    Loss per triple: ``-log σ(x_ui - x_uj) + reg * (|p_u|² + |q_i|² + |q_j|² + b_i² + b_j²)`` with ``i`` drawn
    uniformly among the interactions and ``j`` a uniform negative outside the user's history. Ranking scores
    ``x_ui``; a user id unknown to the model (not in the training scenario) gets the mean factor of its history's
    items as ``p_u`` (zero for an empty history, which leaves the item bias, a popularity score).
    """

    name = "bpr"
    config_class = BPRConfig

    def _dims(self, histories: NDArray[np.int64], num_users: int, num_items: int) -> dict[str, int]:
        return {"num_users": num_users, "num_items": num_items}

    def _build_model(self, dims: dict[str, int]) -> BPRModel:
        return BPRModel(dims["num_users"], dims["num_items"], self.config.dim)

    def _training_data(self, histories: NDArray[np.int64]) -> _Interactions:
        users, positions = np.nonzero(histories >= 0)
        return _Interactions(users, histories[users, positions], interaction_keys(histories, self.dims["num_items"]))

    def _batch_loss(self, data: _Interactions, rng: np.random.Generator, remaining: int) -> tuple[torch.Tensor, int]:
        assert isinstance(self.model, BPRModel)
        rows = rng.integers(0, len(data.users), size=min(self.config.batch_size, remaining))
        users = data.users[rows]
        negatives = sample_negatives(rng, users, data.keys, self.dims["num_items"])
        u = torch.as_tensor(users)
        items = torch.as_tensor(np.stack([data.items[rows], negatives], axis=1))  # (B, 2): positive, negative
        p = self.model.user(u)  # (B, D)
        x = self.model.score(p, items)  # (B, 2)
        q, b = self.model.item(items), self.model.item_bias(items)  # (B, 2, D), (B, 2, 1)
        penalty = p.pow(2).sum(-1) + q.pow(2).sum((-2, -1)) + b.pow(2).sum((-2, -1))  # (B,)
        return (-F.logsigmoid(x[:, 0] - x[:, 1]) + self.config.reg * penalty).mean(), len(rows)

    @torch.no_grad()
    def scores(self, request: Request) -> NDArray[np.float32]:
        candidates = self._items(request.candidates, "candidate")
        assert isinstance(self.model, BPRModel)
        if 0 <= request.user_id < self.dims["num_users"]:
            user = self.model.user.weight[request.user_id]
        else:  # a user the model has not seen: the mean factor of its history's items
            history = self._items(tuple(i for i in request.history if i >= 0), "history")
            user = self.model.item(history).mean(0) if len(history) else torch.zeros(self.config.dim)
        return self.model.score(user[None], candidates[None])[0].numpy()


# --------------------------------------------------------------------------------------------------------------------
# SASRec.


class SASRecModel(nn.Module):
    """Item and learned position embeddings, causal self-attention blocks, a final layer norm.

    Item ``i`` is embedding row ``i + 1``; row 0 is padding. Inputs are right-aligned windows (the most recent item
    at the last position); padding positions are zeroed after the embedding and after every block, as in the paper.
    """

    def __init__(self, num_items: int, window: int, config: SASRecConfig) -> None:
        super().__init__()
        self.item = nn.Embedding(num_items + 1, config.dim, padding_idx=0)
        self.position = nn.Embedding(window, config.dim)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                config.dim, config.heads, dim_feedforward=config.dim, dropout=config.dropout, batch_first=True, norm_first=True
            )
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(config.dim)
        for table in (self.item, self.position):  # unit-scale inputs after the sqrt(dim) factor, logits near 1
            nn.init.normal_(table.weight, std=config.dim**-0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()
        self.causal: torch.Tensor
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(window), persistent=False)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        """``(B, L, D)`` hidden states of ``(B, L)`` right-aligned windows of item ids + 1 (``L <= window``)."""
        length = sequence.shape[1]
        keep = (sequence > 0).unsqueeze(-1).float()  # (B, L, 1)
        positions = torch.arange(self.position.num_embeddings - length, self.position.num_embeddings)
        h = self.item(sequence) * math.sqrt(self.item.embedding_dim) + self.position(positions)  # (B, L, D)
        h = self.dropout(h) * keep
        causal = self.causal[:length, :length]
        for block in self.blocks:
            h = block(h, src_mask=causal, is_causal=True) * keep
        return self.norm(h)


@dataclass(frozen=True)
class _Windows:
    sequences: NDArray[np.int64]
    """``(S, W + 1)`` right-aligned windows over the whole histories (item ids + 1, 0 padded): inputs ``[:, :-1]``,
    targets ``[:, 1:]``."""
    users: NDArray[np.int64]
    """``(S,)`` user of each window."""
    keys: NDArray[np.int64]
    """Sorted ``user * num_items + item`` (for negative sampling)."""
    targets: float
    """Mean number of next items to predict per window."""


class SASRecAgent(HistoryRecommender[SASRecConfig]):
    """SASRec, the self-attentive sequential recommender of Kang & McAuley (2018), on the histories (need-blind).

    Trained to predict each next item of a user's history from the items before it in its window (the whole history
    cut into windows of ``window + 1`` items, :func:`history_windows`): binary cross-entropy
    of the positive and one uniformly sampled negative per position. Ranking scores a candidate by the dot product
    of the last hidden state of the request's history (its last ``window`` items) with the candidate's embedding;
    only the history is read, so unseen users need nothing special (an empty history gives a fixed state, so a
    fixed need-blind item preference).
    """

    name = "sasrec"
    config_class = SASRecConfig

    def _dims(self, histories: NDArray[np.int64], num_users: int, num_items: int) -> dict[str, int]:
        longest = int((histories >= 0).sum(axis=1).max())
        return {"num_users": num_users, "num_items": num_items, "window": max(1, min(self.config.max_len, longest - 1))}

    def _build_model(self, dims: dict[str, int]) -> SASRecModel:
        return SASRecModel(dims["num_items"], dims["window"], self.config)

    def _training_data(self, histories: NDArray[np.int64]) -> _Windows:
        sequences, users = history_windows(histories, self.dims["window"] + 1)  # (S, W + 1): inputs [:, :-1], targets [:, 1:]
        if not len(users):
            raise ValueError("SASRec needs histories with at least one item to learn a next item; none has")
        targets = float((sequences[:, 1:] > 0).sum(axis=1).mean())
        return _Windows(sequences, users, interaction_keys(histories, self.dims["num_items"]), targets)

    def _batch_loss(self, data: _Windows, rng: np.random.Generator, remaining: int) -> tuple[torch.Tensor, int]:
        assert isinstance(self.model, SASRecModel)
        rows = rng.integers(0, len(data.sequences), size=min(self.config.batch_size, math.ceil(remaining / data.targets)))
        inputs, positives = data.sequences[rows, :-1], data.sequences[rows, 1:]  # (B, W) each
        users = np.repeat(data.users[rows, None], inputs.shape[1], axis=1)  # (B, W)
        negatives = sample_negatives(rng, users, data.keys, self.dims["num_items"]) + 1  # (B, W)
        target = positives > 0  # (B, W): real next items (after padding too, as in the paper)
        target &= np.cumsum(target).reshape(target.shape) <= remaining  # no more examples than the budget has left
        h = self.model(torch.as_tensor(inputs))  # (B, W, D)
        positive_logits = (h * self.model.item(torch.as_tensor(positives))).sum(-1)  # (B, W)
        negative_logits = (h * self.model.item(torch.as_tensor(negatives))).sum(-1)  # (B, W)
        loss = F.softplus(-positive_logits) + F.softplus(negative_logits)  # -log σ(pos) - log(1 - σ(neg)), (B, W)
        count = int(target.sum())
        return (loss * torch.as_tensor(target)).sum() / max(count, 1), count

    @torch.no_grad()
    def scores(self, request: Request) -> NDArray[np.float32]:
        candidates = self._items(request.candidates, "candidate")
        history = self._items(tuple(i for i in request.history if i >= 0), "history")
        assert isinstance(self.model, SASRecModel)
        window = right_aligned(history.numpy()[None], self.dims["window"])  # (1, W)
        state = self.model(torch.as_tensor(window))[0, -1]  # (D,)
        return (self.model.item(candidates + 1) @ state).numpy()
