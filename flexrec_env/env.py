"""FlexRec-v0: need-conditioned closed-set ranking, one item placement per step."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from numpy.typing import NDArray

from flexrec_env.config import INVALID_ACTION_PENALTY, EnvConfig
from flexrec_env.core import EpisodeBatch, EpisodeStream, final_info, invalid_action_message, list_level_step_rewards
from flexrec_env.metrics import discounts
from flexrec_env.needs import MAX_NEEDS, NEED_FEATURE_DIM, Need, resolve_needs
from flexrec_env.swap import marginal_reward, step_swap_reward
from scenarios import Request, Scenario

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
    ``need_id``       ``Discrete(64)``     int64    the need's id in the need registry
    ``placed``        ``MultiBinary(N)``   int8     1 for candidates already placed
    ``position``      ``Discrete(K + 1)``  int64    the 0-based position filled by the next step (K when done)
    ``action_mask``   ``MultiBinary(N)``   int8     1 for valid actions (``1 - placed``)
    ================  ===================  =======  ===============================================================

    The structured request (user id, history, candidate item ids, need, instruction, titles) is
    ``env.unwrapped.request``, for agents that read text.

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
    the *true* relevance, for evaluation only) and ``need``. With ``expose_truth=True`` every info also carries
    ``relevance`` (N true grades). ``reset`` returns ``action_mask``, ``position``, ``need`` and ``instruction``.

    ## Episode end

    Terminated after K valid steps; truncated after N invalid actions in ``"penalize"`` mode. Stepping a finished
    episode raises ``gymnasium.error.ResetNeeded``.

    ## Arguments

    See :class:`flexrec_env.config.EnvConfig`: ``need``, ``scenario``, ``scenario_kwargs``, ``num_candidates`` (N,
    20), ``list_length`` (K, 10), ``metric_k`` (k, default K), ``reward_mode``, ``reward_labels``, ``feedback``,
    ``invalid_action``, ``expose_truth``, ``render_mode``. ``reset(options={"need": ...})`` overrides the need for
    one episode; ``split="train"`` draws requests from ``scenario.training_split()`` (training feedback only).

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
      stays inside the range the parts span.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, **kwargs: Any) -> None:
        self.config = EnvConfig(**kwargs)
        self.scenario: Scenario = self.config.resolved_scenario
        self.render_mode = self.config.render_mode
        self.observation_space = observation_space(self.config, self.scenario)
        self.action_space = spaces.Discrete(self.config.num_candidates)
        self._discount = discounts(self.config.list_length, self.config.k).tolist()
        self._stream: EpisodeStream | None = None
        self._episodes: EpisodeBatch | None = None
        self._row = 0
        self._done = True

    # ------------------------------------------------------------------------------------------------------------
    # Gymnasium API. The state of one episode is kept in Python scalars and small arrays (fast); the vector env
    # runs the same rules batched (core.RankingCore), and the tests check both give the same episodes.

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[ObsType, dict[str, Any]]:
        super().reset(seed=seed)
        if self._stream is None or self._stream.rng is not self.np_random:
            self._stream = EpisodeStream(self.np_random, self.config, self.scenario)
        self._episodes, self._row = episodes, row = self._stream.next_row(episode_needs(self.config, options))
        self._gains: list[float] = episodes.reward_gains[row].tolist()
        self._idcg = float(episodes.reward_idcg[row])
        self._pool_gain = float(sum(self._gains))
        self._placed = np.zeros(self.config.num_candidates, dtype=np.int8)
        self._ranking: list[int] = []
        self._invalid_count = 0
        requests = episodes.requests
        self._fixed = (requests.candidate_features[row], requests.user_features[row], episodes.need_features[row])
        self._need_id = np.int64(episodes.need_ids[row])
        self._done = False
        info: dict[str, Any] = {"action_mask": 1 - self._placed, "position": 0, "need": episodes.need_names([row])[0]}
        info["instruction"] = episodes.instructions([row])[0]
        if self.config.expose_truth:
            info["relevance"] = episodes.relevance[row].copy()
        return self._observation(), info

    def step(self, action: Any) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._done:
            raise ResetNeeded("the episode is over: call reset() before step()")
        a = validate_action(action, self.config.num_candidates)
        config, episodes, row = self.config, self._episodes, self._row
        assert episodes is not None
        t = len(self._ranking)
        terminated = truncated = False
        info: dict[str, Any]
        if self._placed[a]:
            if config.invalid_action == "raise":
                raise ValueError(invalid_action_message(a, self._placed == 0))
            self._invalid_count += 1
            truncated = self._invalid_count >= config.num_candidates
            reward = INVALID_ACTION_PENALTY
            info = {
                "position": t,
                "item_id": -1,
                "feedback": 0.0,
                "feedback_observed": False,
                "swap_reward": 0.0,
                "invalid_action": True,
            }
        else:
            gain, pool_gain = self._gains[a], self._pool_gain - self._gains[a]
            swap = step_swap_reward(gain, self._discount[t], pool_gain, config.num_candidates - 1 - t, self._idcg)
            reward = swap if config.reward_mode == "swap" else 0.0
            if config.reward_mode == "marginal":
                reward = marginal_reward(gain, self._discount[t], self._idcg)
            if episodes.list_level[row]:
                rows, prefix = np.array([row]), np.array([self._ranking], dtype=np.int64).reshape(1, t)
                with_marginal = config.reward_mode == "marginal"
                marginal, swaps = list_level_step_rewards(
                    episodes, rows, prefix, np.array([a]), self._placed[None] > 0, config.k, with_marginal
                )
                swap = float(swaps[0])
                reward = {"swap": swap, "marginal": float(marginal[0]), "list": 0.0}[config.reward_mode]
            self._placed[a] = 1
            self._ranking.append(a)
            self._pool_gain = pool_gain
            terminated = len(self._ranking) == config.list_length
            info = {
                "position": t,
                "item_id": int(episodes.requests.candidates[row, a]),
                "feedback": float(episodes.labels[row, a]),
                "feedback_observed": bool(episodes.observed[row, a]),
                "swap_reward": float(swap),
                "invalid_action": False,
            }
        obs = self._observation()
        info["action_mask"] = obs["action_mask"]
        if terminated or truncated:
            self._done = True
            ranking = np.array([self._ranking], dtype=np.int64)
            if terminated:
                info.update(unbatch(final_info(episodes, np.array([row]), ranking, config, self.scenario.max_grade)))
                if config.reward_mode == "list":
                    reward = info["list_reward"]
        if config.expose_truth:
            info["relevance"] = episodes.relevance[row].copy()
        return obs, float(reward), terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode is None:
            gym.logger.warn('render() called without render_mode; make the env with render_mode="ansi"')
            return None
        return render_text(self)

    # ------------------------------------------------------------------------------------------------------------
    # Extras.

    def action_masks(self) -> NDArray[np.bool_]:
        """Valid actions as a bool mask ``(N,)`` (read by sb3-contrib's ``MaskablePPO``)."""
        return self._placed == 0

    @property
    def request(self) -> Request:
        """The current request as text-reading agents see it (no ground truth)."""
        if self._episodes is None:
            raise ResetNeeded("no request yet: call reset() first")
        return build_request(self._episodes, self._row, self.scenario)

    @property
    def needs(self) -> tuple[Need, ...]:
        """The needs episodes are drawn from."""
        return self.config.needs

    @property
    def ranking(self) -> list[int]:
        """Candidate indices placed so far, in order."""
        return list(self._ranking)

    def _observation(self) -> ObsType:
        candidates, user, need = self._fixed
        return {
            "candidates": candidates.copy(),
            "user": user.copy(),
            "need": need.copy(),
            "need_id": self._need_id,
            "placed": self._placed.copy(),
            "position": np.int64(len(self._ranking)),
            "action_mask": 1 - self._placed,
        }


# ----------------------------------------------------------------------------------------------------------------
# Helpers shared with the vector env.


def observation_space(config: EnvConfig, scenario: Scenario) -> spaces.Dict:
    """The single-env observation space (see :class:`FlexRecEnv`)."""
    n, k = config.num_candidates, config.list_length
    return spaces.Dict(
        {
            "candidates": spaces.Box(-np.inf, np.inf, (n, scenario.candidate_feature_dim), np.float32),
            "user": spaces.Box(-np.inf, np.inf, (scenario.user_feature_dim,), np.float32),
            "need": spaces.Box(-np.inf, np.inf, (NEED_FEATURE_DIM,), np.float32),
            "need_id": spaces.Discrete(MAX_NEEDS),
            "placed": spaces.MultiBinary(n),
            "position": spaces.Discrete(k + 1),
            "action_mask": spaces.MultiBinary(n),
        }
    )


def episode_needs(config: EnvConfig, options: dict[str, Any] | None) -> tuple[Need, ...]:
    """The needs to draw from: ``options["need"]`` for this episode if given, else the configured ones."""
    if not options or options.get("need") is None:
        return config.needs
    unknown = sorted(set(options) - {"need", "reset_mask"})
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown}; allowed: ['need']")
    return resolve_needs(options["need"])


def validate_action(action: Any, num_candidates: int) -> int:
    """The action as an int in ``[0, N)``, or a ``ValueError`` that names it."""
    value = action.item() if isinstance(action, np.ndarray) and action.shape in ((), (1,)) else action
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"action {action!r} is not an integer; allowed: an int in [0, {num_candidates})")
    if not 0 <= value < num_candidates:
        raise ValueError(f"action {int(value)} is out of range; allowed: an int in [0, {num_candidates})")
    return int(value)


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


def build_request(episodes: EpisodeBatch, row: int, scenario: Scenario) -> Request:
    """Episode ``row`` of ``episodes`` as a :class:`~scenarios.Request` (what text-reading agents see; no truth)."""
    r = episodes.requests
    history = tuple(int(i) for i in r.history[row] if i >= 0)
    candidates = tuple(int(i) for i in r.candidates[row])
    return Request(
        user_id=int(r.user_ids[row]),
        time=float(r.times[row]),
        history=history,
        candidates=candidates,
        need=episodes.need_names([row])[0],
        instruction=episodes.instructions([row])[0],
        history_titles=tuple(scenario.item_title(i) for i in history),
        candidate_titles=tuple(scenario.item_title(i) for i in candidates),
        history_categories=tuple(int(scenario.item_category[i]) for i in history),
        category=r.category[row].copy(),
        popularity=r.popularity[row].copy(),
        recent_popularity=r.recent_popularity[row].copy(),
        freshness=r.freshness[row].copy(),
    )
