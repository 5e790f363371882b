"""FlexRec-v0: need-conditioned closed-set ranking, one item placement per step."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from numpy.typing import NDArray

from flexrec_env.config import INVALID_ACTION_PENALTY, EnvConfig, resolve
from flexrec_env.core import (
    EpisodeBatch,
    EpisodeStream,
    build_request,
    episode_needs,
    final_info,
    invalid_action_message,
    list_level_step_rewards,
    ndcg_value,
    observation_space,
    step_reward,
    step_rewards,
    validate_action,
)
from flexrec_env.metrics import discounts
from flexrec_env.needs import Need
from scenarios import Request

ObsType = dict[str, Any]


class FlexRecEnv(gym.Env[ObsType, np.int64]):
    """Rank a fixed candidate set for a user under an explicit need, one position per step.

    ## Description

    One episode is one ranking request: a user (features and history), a *need* stated as an instruction ("show
    me what is trending") and a candidate set of N items from a scenario (a user simulator). Each step places one
    candidate at the next position of the list, from the shrinking pool of candidates not yet placed, until K
    positions are filled (closed-set autoregressive ranking). Rewards come from simulated noisy, sparse feedback
    labels; the true, need-specific relevance is used only for the evaluation metrics in the last info.

    ## Action space

    ``Discrete(N)``: the index of a candidate in the request. Placing a candidate that is already placed raises a
    ``ValueError`` (``invalid_action="raise"``, default) or earns ``INVALID_ACTION_PENALTY = -1`` without advancing
    the position (``invalid_action="penalize"``; the episode is truncated after N invalid actions). Actions outside
    ``[0, N)`` or of a non-integer type always raise. ``action_masks()`` returns the valid actions (the convention of
    sb3-contrib's ``MaskablePPO``).

    ## Observation space

    A ``Dict`` (F, U depend on the scenario; D = ``NEED_FEATURE_DIM`` = 8):

    ================  ===================  =======  ===============================================================
    key               space                dtype    meaning
    ================  ===================  =======  ===============================================================
    ``candidates``    ``Box((N, F))``      float32  features of each candidate at the request time
    ``user``          ``Box((U,))``        float32  the user's features
    ``need``          ``Box((D,))``        float32  the need's feature vector (unseen needs are representable)
    ``need_id``       ``Discrete(64)``     int64    the need's id, the same in every process (built-ins 0-6)
    ``placed``        ``MultiBinary(N)``   int8     1 for candidates already placed
    ``position``      ``Discrete(K + 1)``  int64    the 0-based position filled by the next step (K when done)
    ``action_mask``   ``MultiBinary(N)``   int8     1 for valid actions (``1 - placed``)
    ================  ===================  =======  ===============================================================

    Every call returns new arrays, except that ``placed`` and ``action_mask`` are read-only views that the env never
    changes once returned. A need's id is fixed for the built-ins (``interest`` 0, ``trending`` 1, ``niche`` 2,
    ``fresh`` 3, ``diverse`` 4, ``fresh+niche`` 5, ``trending+fresh`` 6); any other need's is ``Need.need_id`` or
    derived from its name (:func:`flexrec_env.needs.name_id`). The structured request (user id, history, candidate
    item ids, need, instruction, titles) is ``env.unwrapped.request``, for agents that read text;
    :class:`flexrec_env.text.TextRankingEnv` wraps the env to show it as a prompt and to take answers as text.

    ## Rewards

    Let ``rel`` be the reward labels (the observed feedback labels, 0 where unobserved; the truth with
    ``reward_labels="true"``), ``G_i = 2**rel_i - 1``, ``d_p = 1/log2(p+1)`` for 1-based ``p <= k`` else 0,
    ``IDCG`` the ideal DCG@k over all N candidates, ``s_t`` the candidate placed at step t (1-based position t) and
    ``P_t`` the pool before step t. Per step (``reward_mode``):

    * ``"swap"`` (default): ``d_t (G_(s_t) - mean_(j in P_t minus s_t) G_j) / IDCG``, the swap reward with every
      alternative treated as outside the list (their final positions are not known yet);
    * ``"marginal"``: ``G_(s_t) d_t / IDCG``; the return is NDCG@k of the list;
    * ``"list"``: 0 until the last step, then NDCG@k of the list.

    Rewards are 0 when ``IDCG`` is 0. At the last step ``info["swap_rewards"]`` holds the K exact counterfactual swap
    rewards ``r_t = f(s) - mean_j f(s(t<->j))`` (see :mod:`flexrec_env.swap`). A list-level need (``diverse``)
    replaces NDCG@k by its own metric ``f`` (alpha-NDCG@k) in all three modes: ``"marginal"`` is
    ``f(s_1..s_t) - f(s_1..s_(t-1))``, ``"swap"`` is ``f(prefix + s_t) - mean_j f(prefix + j)``.

    ## Info

    Every step: ``action_mask`` (N, int8), ``position`` (0-based position just filled), ``item_id`` (scenario id of
    the placed item; -1 on an invalid action), ``feedback`` (its observed label, 0 if unobserved),
    ``feedback_observed`` (bool), ``swap_reward`` (the per-step swap reward, whatever ``reward_mode``),
    ``invalid_action`` (bool). The last step adds ``ranking`` (K candidate indices), ``swap_rewards`` (K exact values
    on the reward labels), ``list_reward`` (f of the list on the reward labels), ``feedback_labels`` (N, 0 where
    unobserved), ``feedback_labels_observed`` (N, int8), ``reward_labels`` / ``reward_labels_observed`` (N: the labels
    the rewards were computed from and their mask: the feedback's, or with ``reward_labels="true"`` the truth, all
    observed; trainers read these), ``clicks`` (K, int8, from the click model on the true
    relevance), ``metrics`` (``NDCG@5``, ``NDCG@10``, ``Recall@5``, ``Recall@10`` and ``need_metric`` = f@k, all on
    the *true* relevance, for evaluation only) and ``need``. With ``info_level="lean"`` the last step adds only
    ``ranking`` and ``list_reward`` (the rewards are the same; the metrics, the exact swap rewards and the clicks
    are not computed, which makes the single env faster; the README's Performance section has the figures). With
    ``expose_truth=True`` every info also carries ``relevance`` (N true grades). ``reset`` returns ``action_mask``,
    ``position``, ``need`` and ``instruction``.

    ## Episode end

    Terminated after K valid steps; truncated after N invalid actions in ``"penalize"`` mode. Stepping a finished
    episode raises ``gymnasium.error.ResetNeeded``.

    ## Arguments

    See :class:`flexrec_env.config.EnvConfig`: ``need``, ``scenario``, ``scenario_kwargs``, ``num_candidates`` (N,
    20), ``list_length`` (K, 10), ``metric_k`` (k, default K), ``reward_mode``, ``reward_labels``, ``feedback``,
    ``invalid_action``, ``expose_truth``, ``render_mode``, ``info_level``. ``reset(options={"need": ...})``
    overrides the need for one episode; ``split="train"`` draws requests from ``scenario.training_split()``
    (training feedback only). The env builds and checks its scenario with :func:`flexrec_env.config.resolve`.

    >>> import gymnasium as gym
    >>> import flexrec_env
    >>> env = gym.make("FlexRec-v0", need="trending", num_candidates=8, list_length=3)
    >>> obs, info = env.reset(seed=0)
    >>> obs["candidates"].shape[0], int(obs["position"]), info["need"]
    (8, 0, 'trending')
    >>> for _ in range(3):
    ...     obs, reward, terminated, truncated, info = env.step(int(np.flatnonzero(obs["action_mask"])[0]))
    >>> terminated, info["ranking"].shape, sorted(info["metrics"])
    (True, (3,), ['NDCG@10', 'NDCG@5', 'Recall@10', 'Recall@5', 'need_metric'])

    ## Version history

    * v0: initial version. Later additions that change no reward: ``reward_labels``/``reward_labels_observed`` in
      the last info; a composed need's feature vector is the elementwise maximum of its parts' (was the sum), so it
      stays inside the range the parts span. ``info_level`` (default ``"full"``, the info as before). ``need_id`` of
      a need a scenario or a user defines: derived from its name, no longer its registration order (the built-ins
      keep 0-6; every composition of built-ins has a fixed id by its set of parts, and another order of its parts
      is the same need). A vector env's truncated episode no longer carries the last-step info (as a single env's).
      Observations' ``placed`` and ``action_mask`` are read-only. Refused now, where they used to be ignored or to
      fail later: reset options other than ``need``, a composition that repeats a part, and ``num_candidates``
      above what the scenario can fill (``Scenario.max_candidates()``).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, **kwargs: Any) -> None:
        self.config = EnvConfig(**kwargs)
        self.scenario, self._needs = resolve(self.config)
        self.render_mode = self.config.render_mode
        self.observation_space = observation_space(self.config, self.scenario)
        self.action_space = spaces.Discrete(self.config.num_candidates)
        self._discount: list[float] = discounts(self.config.list_length, self.config.k).tolist()
        self._positions = [np.int64(t) for t in range(self.config.list_length + 1)]
        self._stream: EpisodeStream | None = None
        self._episodes: EpisodeBatch | None = None
        self._row = 0
        self._done = True

    # ------------------------------------------------------------------------------------------------------------
    # Gymnasium API. One episode's state is kept in Python scalars and lists and its rewards come from the rules of
    # ``core`` on floats (fast); the vector env runs the same rules batched, and the tests check both give the
    # same episodes.

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[ObsType, dict[str, Any]]:
        super().reset(seed=seed)
        if self._stream is None or self._stream.rng is not self.np_random:
            self._stream = EpisodeStream(self.np_random, self.config, self.scenario)
        episodes, row = self._stream.next_row(episode_needs(self._needs, options))
        if episodes is not self._episodes:
            self._block = _EpisodeLists(episodes)
        self._episodes, self._row, block = episodes, row, self._block
        self._gains, self._item_ids = block.gains[row], block.item_ids[row]
        self._labels, self._observed = block.labels[row], block.observed[row]
        self._idcg, self._list_level = block.idcg[row], block.list_level[row]
        self._pool_gain = sum(self._gains)
        self._dcg = 0.0  # DCG@k of the list so far on the reward labels: f of the list for an NDCG need is DCG / IDCG
        n, k = self.config.num_candidates, self.config.list_length
        self._is_placed = [False] * n
        # Row t of these is the placed mask / action mask before step t: a step writes only the rows after it, so the
        # masks of an observation never change once returned (read-only views of distinct rows).
        self._placed_rows = np.zeros((k + 1, n), dtype=np.int8)
        self._mask_rows = np.ones((k + 1, n), dtype=np.int8)
        self._placed_view, self._mask_view = _read_only(self._placed_rows.view()), _read_only(self._mask_rows.view())
        self._ranking: list[int] = []
        self._invalid_count = 0
        requests = episodes.requests
        self._fixed = (requests.candidate_features[row], requests.user_features[row], episodes.need_features[row])
        self._need_id = np.int64(episodes.need_ids[row])
        self._done = False
        obs = self._observation()
        info: dict[str, Any] = {"action_mask": obs["action_mask"], "position": 0, "need": block.needs[row]}
        info["instruction"] = block.instructions[row]
        if self.config.expose_truth:
            info["relevance"] = episodes.relevance[row].copy()
        return obs, info

    def step(self, action: Any) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._done:
            raise ResetNeeded("the episode is over: call reset() before step()")
        config, n = self.config, self.config.num_candidates
        a = action if type(action) is int and 0 <= action < n else validate_action(action, n)
        t = len(self._ranking)
        if self._is_placed[a]:
            return self._invalid_step(a, t)
        gain, discount = self._gains[a], self._discount[t]
        pool_gain = self._pool_gain - gain
        swap, marginal = step_rewards(gain, discount, pool_gain, n - 1 - t, self._idcg)
        if self._list_level:
            assert self._episodes is not None
            rows, prefix = np.array([self._row]), np.array([self._ranking], dtype=np.int64).reshape(1, t)
            placed = np.array([self._is_placed])
            with_marginal = config.reward_mode == "marginal"  # only that mode reads it
            swaps, marginals = list_level_step_rewards(
                self._episodes, rows, prefix, np.array([a]), placed, config.k, with_marginal
            )
            swap, marginal = float(swaps[0]), float(marginals[0])
        self._is_placed[a] = True
        self._ranking.append(a)
        self._pool_gain = pool_gain
        self._dcg += gain * discount
        self._placed_rows[t + 1 :, a] = 1
        self._mask_rows[t + 1 :, a] = 0
        obs = self._observation()
        info: dict[str, Any] = {
            "position": t,
            "item_id": self._item_ids[a],
            "feedback": self._labels[a],
            "feedback_observed": self._observed[a],
            "swap_reward": swap,
            "invalid_action": False,
            "action_mask": obs["action_mask"],
        }
        terminated = t + 1 == config.list_length
        if terminated:
            self._done = True
            assert self._episodes is not None
            ranking, rows = np.array([self._ranking], dtype=np.int64), np.array([self._row])
            ndcg = None if self._list_level else np.array([ndcg_value(self._dcg, self._idcg)])
            info.update(unbatch(final_info(self._episodes, rows, ranking, config, self.scenario.max_grade, ndcg)))
            reward = step_reward(config.reward_mode, swap, marginal, lambda: info["list_reward"])
        else:
            reward = step_reward(config.reward_mode, swap, marginal)
        if config.expose_truth:
            info["relevance"] = self._episodes.relevance[self._row].copy()  # type: ignore[union-attr]
        return obs, reward, terminated, False, info

    def _invalid_step(self, action: int, t: int) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        """Placing an already placed candidate: raise, or penalise without advancing (truncated after N of them)."""
        if self.config.invalid_action == "raise":
            raise ValueError(invalid_action_message(action, self.action_masks()))
        self._invalid_count += 1
        truncated = self._invalid_count >= self.config.num_candidates
        self._done = truncated
        obs = self._observation()
        info: dict[str, Any] = {
            "position": t,
            "item_id": -1,
            "feedback": 0.0,
            "feedback_observed": False,
            "swap_reward": 0.0,
            "invalid_action": True,
            "action_mask": obs["action_mask"],
        }
        if self.config.expose_truth:
            info["relevance"] = self._episodes.relevance[self._row].copy()  # type: ignore[union-attr]
        return obs, INVALID_ACTION_PENALTY, False, truncated, info

    def render(self) -> str | None:
        if self.render_mode is None:
            gym.logger.warn('render() called without render_mode; make the env with render_mode="ansi"')
            return None
        return render_text(self)

    # ------------------------------------------------------------------------------------------------------------
    # Extras.

    def action_masks(self) -> NDArray[np.bool_]:
        """Valid actions as a bool mask ``(N,)`` (read by sb3-contrib's ``MaskablePPO``)."""
        return np.logical_not(self._is_placed)

    @property
    def request(self) -> Request:
        """The current request as text-reading agents see it (no ground truth)."""
        if self._episodes is None:
            raise ResetNeeded("no request yet: call reset() first")
        return build_request(self._episodes, self._row, self.scenario)

    @property
    def needs(self) -> tuple[Need, ...]:
        """The needs episodes are drawn from."""
        return self._needs

    @property
    def ranking(self) -> list[int]:
        """Candidate indices placed so far, in order."""
        return list(self._ranking)

    def _observation(self) -> ObsType:
        candidates, user, need = self._fixed
        t = len(self._ranking)
        return {  # new arrays on every call, as gymnasium asks; the two masks are read-only rows of the episode's
            "candidates": candidates.copy(),
            "user": user.copy(),
            "need": need.copy(),
            "need_id": self._need_id,
            "placed": self._placed_view[t],
            "position": self._positions[t],
            "action_mask": self._mask_view[t],
        }


# ----------------------------------------------------------------------------------------------------------------
# Helpers.


def _read_only(view: NDArray) -> NDArray:
    view.flags.writeable = False
    return view


class _EpisodeLists:
    """A block of episodes' per-candidate values as Python lists (read once per block; indexing lists is fast)."""

    def __init__(self, episodes: EpisodeBatch) -> None:
        self.gains: list[list[float]] = episodes.reward_gains.tolist()
        self.item_ids: list[list[int]] = episodes.requests.candidates.tolist()
        self.labels: list[list[float]] = episodes.labels.astype(np.float64).tolist()
        self.observed: list[list[bool]] = episodes.observed.tolist()
        self.idcg: list[float] = episodes.reward_idcg.tolist()
        self.list_level: list[bool] = episodes.list_level.tolist()
        self.needs: list[str] = episodes.need_names().tolist()
        self.instructions: list[str] = episodes.instructions().tolist()


def unbatch(batched: dict[str, Any], row: int = 0) -> dict[str, Any]:
    """Row ``row`` of a batched info dict (nested dicts too), with 0-d values as Python scalars."""
    out: dict[str, Any] = {}
    for key, value in batched.items():
        if isinstance(value, dict):
            out[key] = unbatch(value, row)
        else:
            item = value[row]
            out[key] = item.item() if isinstance(item, np.generic) else item
    return out


def render_text(env: FlexRecEnv) -> str:
    """The request and the list so far, as text."""
    request, episodes = env.request, env._episodes
    assert episodes is not None
    lines = [f"Need: {request.need} - {request.instruction}", f"User {request.user_id} at time {request.time:g}"]
    if request.history_titles:
        lines.append("History (last 5): " + "; ".join(request.history_titles[-5:]))
    lines.append(f"Ranking ({len(env.ranking)}/{env.config.list_length}):")
    for position, index in enumerate(env.ranking, start=1):
        observed = episodes.observed[env._row, index]
        label = f"feedback {episodes.labels[env._row, index]:g}" if observed else "feedback unobserved"
        lines.append(f"  {position:>2}. [{index:>2}] {request.candidate_titles[index]} ({label})")
    lines.append(f"Pool: {env.config.num_candidates - len(env.ranking)} candidates left")
    return "\n".join(lines) + "\n"
