"""Speed of the environment: single-env and vector-env steps/s, closed-form vs brute-force swap rewards, and logs.

    python benchmarks/bench_env.py            # the figures in the README
    python benchmarks/bench_env.py --quick    # a fast look

Steps/s count item placements (env steps) including resets and the end-of-episode info (full unless the line says
lean); actions follow a fixed random permutation of the candidates (always valid, and the policy costs nothing).
``benchmarks/bench_sardine.py`` puts these beside SARDINE's simulator. Each figure is the best of
``--repeats`` timed runs. The log section reads MovieTweetings 100K from ``--data`` (default
``$FLEXREC_SHARED/data/movietweetings-100k``, else ``../shared/data/movietweetings-100k``) and is skipped without it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread: the figures are per core

import argparse
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

import flexrec_env  # noqa: F401  (registers FlexRec-v0)
from flexrec_env.metrics import ndcg
from flexrec_env.swap import brute_force_swap_rewards, swap_rewards, swap_rewards_generic

warnings.filterwarnings("ignore", category=UserWarning)
SHARED = Path(os.environ.get("FLEXREC_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def best_of(repeats: int, fn: Callable[[], float]) -> float:
    return max(fn() for _ in range(repeats))


def single_env_steps_per_s(steps: int, need: str, n: int, k: int, info_level: str = "full") -> float:
    env = gym.make("FlexRec-v0", need=need, num_candidates=n, list_length=k, info_level=info_level).unwrapped
    env.reset(seed=0)
    order = np.random.default_rng(0).permutation(n)  # a fixed valid order: every prefix is unplaced
    start, done_steps = time.perf_counter(), 0
    while done_steps < steps:
        env.reset()
        for t in range(k):
            env.step(int(order[t]))
        done_steps += k
    return done_steps / (time.perf_counter() - start)


def vector_env_steps_per_s(
    steps: int, num_envs: int, need: str, n: int, k: int, shared_rng: bool, copy: bool = True, info_level: str = "full"
) -> float:
    """Same-step autoreset, so every call places one item in every env."""
    envs = gym.make_vec(
        "FlexRec-v0", num_envs=num_envs, need=need, num_candidates=n, list_length=k,
        shared_rng=shared_rng, copy=copy, autoreset_mode=AutoresetMode.SAME_STEP, info_level=info_level,
    )  # fmt: skip
    envs.reset(seed=0)
    order = np.random.default_rng(0).permutation(n)
    actions = np.broadcast_to(order[:k, None], (k, num_envs)).astype(np.int64)
    start, done_steps = time.perf_counter(), 0
    while done_steps < steps:
        for t in range(k):
            envs.step(actions[t])
        done_steps += k * num_envs
    return done_steps / (time.perf_counter() - start)


def swap_speed(n: int, k: int, batch: int, repeats: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(0)
    relevance = rng.integers(0, 3, size=(batch, n))
    categories = rng.integers(0, 5, size=(batch, n))
    rankings = np.argsort(rng.random((batch, n)), axis=1)[:, :k]

    def per_list(fn: Callable[[], object], lists: int) -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) / lists

    closed = min(per_list(lambda: swap_rewards(rankings, relevance, k), batch) for _ in range(repeats))
    generic = min(per_list(lambda: swap_rewards_generic(ndcg, rankings, relevance, categories, k), batch) for _ in range(repeats))
    few = min(batch, 20)
    brute = min(
        per_list(lambda: [brute_force_swap_rewards(ndcg, rankings[i], relevance[i], categories[i], k) for i in range(few)], few)
        for _ in range(max(1, repeats // 2))
    )
    return closed, generic, brute


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def log_timings(folder: Path, repeats: int) -> tuple[float, float, float]:
    """Seconds to parse the log (cache cleared), build its LogScenario, and sample 1,024 requests with N=20."""
    from scenarios.logged import LogScenario
    from scenarios.logs import clear_log_cache, load_log

    load_log(folder)  # imports and first-touch costs out of the way
    parse = min(timed(lambda: (clear_log_cache(), load_log(folder))) for _ in range(repeats))
    log = load_log(folder)
    build = min(timed(lambda: LogScenario(log)) for _ in range(repeats))
    scenario, rng = LogScenario(log), np.random.default_rng(0)
    sample = min(timed(lambda: scenario.sample_requests(rng, 1024, 20)) for _ in range(repeats))
    return parse, build, sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller budgets")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "movietweetings-100k", help="MovieTweetings folder")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    print(
        f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}, "
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    )
    print("\n## Environment steps/s (N=20, K=10; resets and end-of-episode info included)")
    for need in ("trending", "diverse"):
        for level in ("full", "lean"):
            steps = int((200_000 if need == "trending" else 20_000) * scale)
            rate = best_of(
                args.repeats, lambda need=need, st=steps, lv=level: single_env_steps_per_s(st, need, 20, 10, info_level=lv)
            )
            print(f"single env, need={need:<9}, {level} info: {rate:>12,.0f} steps/s")
    for num_envs in (256, 1024):
        for shared in (False, True):
            steps = int(4_000_000 * scale)  # per-env streams: several blocks of 64 episodes per env
            rate = best_of(
                args.repeats, lambda n=num_envs, s=shared, st=steps: vector_env_steps_per_s(st, n, "trending", 20, 10, s)
            )
            label = "shared_rng=True " if shared else "per-env streams "
            print(f"vector env, {num_envs:>4} envs, {label}: {rate:>12,.0f} steps/s")
    rate = best_of(
        args.repeats, lambda: vector_env_steps_per_s(int(2_000_000 * scale), 1024, "trending", 20, 10, True, copy=False)
    )
    print(f"vector env, 1024 envs, shared_rng=True, copy=False: {rate:>12,.0f} steps/s")

    from scenarios import SyntheticScenario

    scenario, rng = SyntheticScenario(), np.random.default_rng(0)
    sample = min(timed(lambda: scenario.sample_requests(rng, 1024, 20)) for _ in range(5 * args.repeats))
    print(f"synthetic scenario, sample 1,024 requests (N=20): {sample * 1e3:6.2f} ms -> {1024 / sample:>10,.0f} requests/s")

    print("\n## Swap rewards per list (batch of 1,024 lists)")
    for n, k in ((20, 10), (100, 20)):
        closed, generic, brute = swap_speed(n, k, 1024, args.repeats)
        print(
            f"N={n:>3}, K={k:>2}: closed form {closed * 1e6:8.2f} us, generic {generic * 1e6:9.1f} us, "
            f"brute force {brute * 1e6:10.0f} us -> closed form {brute / closed:,.0f}x brute force, "
            f"{generic / closed:,.0f}x generic"
        )

    print("\n## Real logs: MovieTweetings 100K (100,000 ratings, 10,506 movies)")
    if not (args.data / "ratings.dat").is_file():
        print(f"skipped: no {args.data / 'ratings.dat'} (pass --data or set FLEXREC_SHARED)")
        return
    parse, build, sample = log_timings(args.data, args.repeats)
    print(f"parse the log:          {parse * 1e3:8.1f} ms")
    print(f"build the LogScenario:  {build * 1e3:8.1f} ms")
    print(f"sample 1,024 requests:  {sample * 1e3:8.1f} ms (N=20) -> {1024 / sample:>10,.0f} requests/s")


if __name__ == "__main__":
    main()
