"""FlexRec-v0 side by side with SARDINE: ranked lists per second, measured in one process, one thread.

    pip install --no-deps sardine-rec==1.0.8      # the optional benchmark dependency (pure Python, needs gymnasium)
    python benchmarks/bench_sardine.py             # the README figures
    python benchmarks/bench_sardine.py --quick     # a fast look
    python benchmarks/bench_sardine.py --profile   # where FlexRec's time goes (cProfile, top lines by own time)

SARDINE's ``sardine/SlateRerank-Static-v0`` re-ranks a slate of 10 items in one step: one ranked list per step.
FlexRec-v0 places one item per step: with N=20 candidates and K=10 positions, one ranked list per 10 steps. Both
envs run unwrapped, with resets, and a fixed valid permutation as the action (the policy costs nothing). FlexRec is
measured with the full last info (evaluation metrics, exact swap rewards, clicks) and with ``info_level="lean"``
(ranking and list reward only), the vector env with same-step autoreset at 1,024 envs, with ``shared_rng=True`` and
with per-env streams. Every ratio divides by SARDINE's single-env lists/s from the same run; each figure is the best
of ``--repeats`` runs, and the rounds interleave the envs, so a slow spell of the machine hits all of them.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread for numpy's BLAS too: a per-core comparison

import argparse
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import single_env_steps_per_s, vector_env_steps_per_s  # noqa: E402

N, K = 20, 10
warnings.filterwarnings("ignore", category=UserWarning)


def sardine_lists_per_s(lists: int) -> float:
    """SARDINE SlateRerank-Static-v0, unwrapped: one 10-item slate (a ranked list) per step, resets included."""
    import sardine  # noqa: F401  (registers the sardine/ envs)

    env = gym.make("sardine/SlateRerank-Static-v0").unwrapped
    env.reset(seed=0)
    slate = np.random.default_rng(0).permutation(env.num_items)
    start, done_lists = time.perf_counter(), 0
    while done_lists < lists:
        env.reset()
        terminated = False
        while not terminated:
            _, _, terminated, _, _ = env.step(slate)
            done_lists += 1
    return done_lists / (time.perf_counter() - start)


def vector_rate(steps: int, shared_rng: bool, info_level: str) -> float:
    return vector_env_steps_per_s(steps, 1024, "trending", N, K, shared_rng, info_level=info_level) / K


def profile_runs(steps: int, lines: int = 8) -> None:
    """cProfile's top lines (own time) for the lean single env and the lean vector env in both stream modes."""
    import cProfile
    import io
    import pstats

    runs = {
        "single env, lean info": lambda: single_env_steps_per_s(steps // 4, "trending", N, K, "lean"),
        "vector env, 1,024 envs, shared_rng=True, lean info": lambda: vector_rate(steps, True, "lean"),
        "vector env, 1,024 envs, per-env streams, lean info": lambda: vector_rate(steps, False, "lean"),
    }
    root = str(Path(__file__).resolve().parents[1]) + "/"
    for label, run in runs.items():
        profiler = cProfile.Profile()
        profiler.runcall(run)
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(lines)
        table = out.getvalue()
        table = table[table.index("   ncalls") :].replace(root, "")
        print(f"## {label}\n{table.rstrip()}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="budgets 10x smaller")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each figure is the best round")
    parser.add_argument("--profile", action="store_true", help="profile the lean single env and 1,024-env runs instead")
    args = parser.parse_args()
    if args.profile:
        profile_runs(int(2_000_000 * (0.1 if args.quick else 1.0)))
        return
    try:
        import sardine
    except ImportError:
        sys.exit("SARDINE is not installed: pip install --no-deps sardine-rec==1.0.8")
    scale = 0.1 if args.quick else 1.0
    lists = int(20_000 * scale)
    runs: dict[str, Callable[[], float]] = {
        "SARDINE SlateRerank-Static-v0, single env": lambda: sardine_lists_per_s(lists),
        "FlexRec-v0 single env, full info": lambda: single_env_steps_per_s(lists * K, "trending", N, K) / K,
        "FlexRec-v0 single env, lean info": lambda: single_env_steps_per_s(lists * K, "trending", N, K, "lean") / K,
    }
    for shared in (True, False):
        for level in ("full", "lean"):
            label = f"FlexRec-v0 vector env, 1,024 envs, {'shared_rng=True' if shared else 'per-env streams'}, {level} info"
            steps = int(5_000_000 * scale)
            runs[label] = lambda s=shared, lv=level, st=steps: vector_rate(st, s, lv)
    best = dict.fromkeys(runs, 0.0)
    for _ in range(args.repeats):
        for label, run in runs.items():
            best[label] = max(best[label], run())
    print(
        f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}, "
        f"gymnasium {gym.__version__}, sardine-rec {getattr(sardine, '__version__', '?')}, "
        f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, best of {args.repeats}"
    )
    reference = best["SARDINE SlateRerank-Static-v0, single env"]
    print(f"\n| env (N={N}, K={K} for FlexRec; a 10-item slate for SARDINE) | ranked lists/s | x SARDINE |")
    print("|---|---:|---:|")
    for label, rate in best.items():
        print(f"| {label} | {rate:,.0f} | {rate / reference:.2f} |")


if __name__ == "__main__":
    main()
