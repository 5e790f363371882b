"""A natively batched FlexRec-v0 vector env: numpy over the whole batch per call.

``gym.make_vec("FlexRec-v0", num_envs=B, ...)`` builds it (the registered ``vector_entry_point``). Observations,
rewards, terminations, truncations and infos have exactly the layout of gymnasium's ``SyncVectorEnv`` over B
``FlexRecEnv`` (infos are dicts of arrays with ``_key`` masks), and the dynamics are the same code
(:class:`~flexrec_env.core.RankingCore`).

Random streams. By default (``shared_rng=False``) env i draws its episodes from its own generator, seeded with
``seed + i`` as ``SyncVectorEnv`` seeds its sub-envs, so the vector env gives *the same episodes* as B single envs
under the same seeds. Each env's episodes come in blocks of 64 from its generator; the blocks of all envs sit in one
store, so a batch of resets is one gather (only drawing a new block loops over the envs' generators). With ``shared_rng=True`` all
resets of a call are drawn at once from the vector env's own generator: one vectorised draw, much faster at large
B, reproducible from the seed, but the episodes no longer equal those of single envs. With ``copy=False`` the
observation arrays that stay fixed during an episode (``candidates``, ``user``, ``need``, ``need_id``) are returned
without a copy (valid until the next reset of that env; do not modify them), as ``SyncVectorEnv(copy=False)``.

Autoreset: ``autoreset_mode`` is ``AutoresetMode.NEXT_STEP`` (gymnasium's default), ``SAME_STEP`` (the reset
happens in the step that ends the episode; ``info["final_obs"]``/``info["final_info"]`` hold the last obs/info) or
``DISABLED`` (call ``reset(options={"reset_mask": mask})`` yourself). It is declared in ``metadata``.

Groups. With ``group_size=G`` (GRPO-style rollouts), consecutive envs ``[g*G, (g+1)*G)`` form a group that shares
one episode: the same request, need, instruction and feedback labels, drawn from the stream of the group's first
env, so G policies' lists are scored against the same labels. Groups are reset whole: ``num_envs`` must be a
multiple of G, and ``autoreset_mode`` must be ``DISABLED`` (a ``reset_mask`` must cover whole groups).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from numpy.typing import NDArray

from flexrec_env.config import EnvConfig, resolve
from flexrec_env.core import (
    EpisodeBatch,
    EpisodeStreams,
    RankingCore,
    build_request,
    draw_noise,
    episode_needs,
    materialise,
    observation_space,
)
from flexrec_env.needs import Need
from scenarios import Request


class FlexRecVectorEnv(VectorEnv):
    """B FlexRec-v0 episodes stepped together (see the module docstring and ``FlexRecEnv`` for the rules)."""

    def __init__(
        self,
        num_envs: int = 1,
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        shared_rng: bool = False,
        copy: bool = True,
        group_size: int = 1,
        **kwargs: Any,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r}; allowed: an integer >= 1")
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError:
            raise ValueError(f"autoreset_mode={autoreset_mode!r}; allowed: {[m.value for m in AutoresetMode]}") from None
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1 or num_envs % group_size:
            raise ValueError(f"group_size={group_size!r}; allowed: an integer >= 1 that divides num_envs={num_envs}")
        if group_size > 1 and mode != AutoresetMode.DISABLED:
            raise ValueError(
                f"group_size={group_size} needs autoreset_mode='Disabled' (groups are reset whole), got {mode.value!r}"
            )
        self.group_size = group_size
        self.config = EnvConfig(**kwargs)
        self.scenario, self._needs = resolve(self.config)
        self.num_envs = num_envs
        self.shared_rng = bool(shared_rng)
        self.copy = bool(copy)
        self.autoreset_mode = mode
        self.metadata = {"autoreset_mode": mode, "render_modes": []}
        self.render_mode = None
        self.single_observation_space = observation_space(self.config, self.scenario)
        self.single_action_space = spaces.Discrete(self.config.num_candidates)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._core = RankingCore(self.config, self.scenario, batch_size=num_envs)
        self._streams: EpisodeStreams | None = None
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._all_rows = np.arange(num_envs)

    # ------------------------------------------------------------------------------------------------------------
    # Gymnasium vector API.

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, NDArray], dict[str, Any]]:
        seeds = self._seeds(seed)
        super().reset(seed=seed if isinstance(seed, int) else None)
        if not self.shared_rng and (seed is not None or self._streams is None):
            self._streams = self._new_streams([seeding.np_random(s)[0] for s in seeds])
        mask = None if options is None else options.get("reset_mask")
        rows = self._all_rows if mask is None else np.flatnonzero(np.asarray(mask, dtype=bool))
        needs = self._episode_needs(options)
        self._start(rows, needs)
        self._autoreset[rows] = False
        return self._core.observation(self.copy), self._reset_info(rows, {})

    def step(self, actions: Any) -> tuple[dict[str, NDArray], NDArray, NDArray, NDArray, dict[str, Any]]:
        if self._core.episodes is None:
            raise ResetNeeded("call reset() before step()")
        actions = self._validate_actions(actions)
        if self.autoreset_mode == AutoresetMode.DISABLED and self._autoreset.any():
            raise ResetNeeded(
                f"envs {np.flatnonzero(self._autoreset).tolist()} are done: reset them with "
                "reset(options={'reset_mask': mask}) before stepping (autoreset_mode=DISABLED)"
            )
        to_reset = np.flatnonzero(self._autoreset) if self.autoreset_mode == AutoresetMode.NEXT_STEP else self._all_rows[:0]
        active = ~self._autoreset
        rewards, terminated, truncated, step_info = self._core.step(actions, active)
        done = terminated | truncated
        finished = np.flatnonzero(done)
        stepped = np.flatnonzero(active)
        infos: dict[str, Any] = {}
        step_info["action_mask"] = 1 - self._core.placed.astype(np.int8)
        add_rows(infos, {key: value[stepped] for key, value in step_info.items()}, stepped, self.num_envs)
        for completed, values in self._core.list_infos(terminated):  # a truncated episode has no list to score
            add_rows(infos, values, completed, self.num_envs)
        if self.config.expose_truth:
            add_rows(infos, {"relevance": self._core.episodes.relevance[stepped]}, stepped, self.num_envs)

        if self.autoreset_mode == AutoresetMode.SAME_STEP and len(finished):
            final_obs = np.full(self.num_envs, None, dtype=object)
            obs = self._core.observation(self.copy)
            columns = [list(value[finished]) for value in obs.values()]  # per-row values of this call's arrays
            final_obs[finished] = [dict(zip(obs, values, strict=True)) for values in zip(*columns, strict=True)]
            final_info = {"final_obs": final_obs, "_final_obs": done.copy()}
            final_info["final_info"] = _rows_view(infos, finished, self.num_envs)
            final_info["_final_info"] = done.copy()
            self._start(finished, self._needs)
            infos = self._reset_info(finished, _without_rows(infos, finished))
            infos.update(final_info)
            self._autoreset[:] = False
        else:
            if len(to_reset):
                self._start(to_reset, self._needs)
                infos = self._reset_info(to_reset, infos)
                rewards[to_reset], terminated[to_reset], truncated[to_reset] = 0.0, False, False
            self._autoreset = done
        return self._core.observation(self.copy), rewards, terminated, truncated, infos

    # ------------------------------------------------------------------------------------------------------------
    # Extras.

    def action_masks(self) -> NDArray[np.bool_]:
        """Valid actions ``(B, N)`` as bools."""
        return self._core.action_masks()

    @property
    def needs(self) -> tuple[Need, ...]:
        return self._needs

    def requests(self, rows: NDArray[np.int64] | list[int] | None = None) -> list[Request]:
        """The current requests of ``rows`` (default: all) as text-reading agents see them (no ground truth)."""
        if self._core.episodes is None:
            raise ResetNeeded("no request yet: call reset() first")
        rows = self._all_rows if rows is None else np.asarray(rows, dtype=np.int64)
        return [build_request(self._core.episodes, int(row), self.scenario) for row in rows]

    # ------------------------------------------------------------------------------------------------------------
    # Internals.

    def _seeds(self, seed: int | list[int | None] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, int):
            return [seed + i for i in range(self.num_envs)]
        if len(seed) != self.num_envs:
            raise ValueError(f"got {len(seed)} seeds for {self.num_envs} envs; allowed: an int, None or one seed per env")
        return list(seed)

    def _new_streams(self, rngs: list[np.random.Generator]) -> EpisodeStreams:
        return EpisodeStreams(rngs, self.config, self.scenario)

    def _episode_needs(self, options: dict[str, Any] | None) -> tuple[Need, ...]:
        return episode_needs(self._needs, options, allowed=("need", "reset_mask"))

    def _start(self, rows: NDArray[np.int64], needs: tuple[Need, ...]) -> None:
        """Start new episodes in ``rows`` (one per group, repeated over it)."""
        firsts, expand = self._group_firsts(rows)
        episodes = self._draw_one_per(firsts, needs)
        self._core.load(episodes if expand is None else episodes.take(expand), rows)

    def _group_firsts(self, rows: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64] | None]:
        """The rows that draw (each group's first) and the index that repeats their draws over ``rows`` (None: all)."""
        g = self.group_size
        if g == 1:
            return rows, None
        firsts = rows[::g]
        if len(rows) % g or not np.array_equal(rows, (firsts[:, None] + np.arange(g)).ravel()) or (firsts % g).any():
            raise ValueError(f"reset rows {rows.tolist()} split a group; allowed: whole groups of {g} consecutive envs")
        return firsts, np.repeat(np.arange(len(firsts)), g)

    def _draw_one_per(self, rows: NDArray[np.int64], needs: tuple[Need, ...]) -> EpisodeBatch:
        if self.shared_rng:
            return materialise(
                draw_noise(self.np_random, len(rows), self.config, self.scenario), needs, self.config, self.scenario
            )
        assert self._streams is not None
        return self._streams.next(rows, needs)

    def _validate_actions(self, actions: Any) -> NDArray[np.int64]:
        array = np.asarray(actions)
        if array.shape != (self.num_envs,) or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"actions {actions!r} (shape {array.shape}, dtype {array.dtype}); allowed: {self.num_envs} integers "
                f"in [0, {self.config.num_candidates})"
            )
        bad = (array < 0) | (array >= self.config.num_candidates)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"action {int(array[row])} of env {row} is out of range; allowed: [0, {self.config.num_candidates})")
        return array.astype(np.int64, copy=False)

    def _reset_info(self, rows: NDArray[np.int64], infos: dict[str, Any]) -> dict[str, Any]:
        """Reset infos of ``rows``, added to ``infos`` (as a single env's reset info would be)."""
        return add_rows(infos, reset_values(self._core, rows), rows, self.num_envs)


def reset_values(core: RankingCore, rows: NDArray[np.int64]) -> dict[str, Any]:
    """The reset info of ``rows`` of ``core`` (first axis = ``rows``): what a single env's reset returns."""
    episodes = core.episodes
    assert episodes is not None
    values: dict[str, Any] = {
        "action_mask": 1 - core.placed[rows].astype(np.int8),
        "position": np.zeros(len(rows), dtype=np.int64),
        "need": episodes.need_names(rows),
        "instruction": episodes.instructions(rows),
    }
    if core.config.expose_truth:
        values["relevance"] = episodes.relevance[rows]
    return values


# ----------------------------------------------------------------------------------------------------------------
# Info batching, in the layout of gymnasium's ``VectorEnv._add_info``.


def _scalar_dtype(dtype: np.dtype) -> type | np.dtype:
    """The dtype ``SyncVectorEnv`` gives a key whose single-env value is a Python scalar."""
    if dtype == np.bool_ or dtype.kind == "O":
        return dtype
    return np.int64 if np.issubdtype(dtype, np.integer) else np.float64


def add_rows(infos: dict[str, Any], values: dict[str, Any], rows: NDArray[np.int64], num_envs: int) -> dict[str, Any]:
    """Write per-row ``values`` (first axis = ``rows``) into the batched ``infos``, setting the ``_key`` masks."""
    if len(rows) == 0:
        return infos
    for key, value in values.items():
        if isinstance(value, dict):
            infos[key] = add_rows(infos.get(key, {}), value, rows, num_envs)
        else:
            value = np.asarray(value)
            if key not in infos:
                if value.dtype == object:
                    infos[key] = np.full(num_envs, None, dtype=object)
                elif value.ndim == 1:
                    infos[key] = np.zeros(num_envs, dtype=_scalar_dtype(value.dtype))
                else:
                    infos[key] = np.zeros((num_envs, *value.shape[1:]), dtype=value.dtype)
            infos[key][rows] = value
        mask = infos.get(f"_{key}")
        if mask is None:
            mask = infos[f"_{key}"] = np.zeros(num_envs, dtype=bool)
        mask[rows] = True
    return infos


def _rows_view(infos: dict[str, Any], rows: NDArray[np.int64], num_envs: int) -> dict[str, Any]:
    """The infos of ``rows`` only, as a batched dict whose masks are false elsewhere."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        if isinstance(value, dict):
            sub = _rows_view(value, rows, num_envs)
        else:
            sub = np.full_like(value, None) if value.dtype == object else np.zeros_like(value)
            sub[rows] = value[rows]
        mask = np.zeros(num_envs, dtype=bool)
        mask[rows] = infos[f"_{key}"][rows]
        if mask.any():
            out[key], out[f"_{key}"] = sub, mask
    return out


def _without_rows(infos: dict[str, Any], rows: NDArray[np.int64]) -> dict[str, Any]:
    """``infos`` with ``rows`` cleared (their step info is replaced by the reset info after a same-step reset)."""
    out: dict[str, Any] = {}
    for key, value in infos.items():
        if key.startswith("_"):
            continue
        mask = infos[f"_{key}"].copy()
        mask[rows] = False
        if not mask.any():
            continue
        if isinstance(value, dict):
            out[key] = _without_rows(value, rows)
        else:
            out[key] = value.copy()
            out[key][rows] = None if value.dtype == object else 0
        out[f"_{key}"] = mask
    return out
