"""Speed of the LLM ranking policy: cached group rollouts, the teacher-forced update, and a naive rollout.

    python benchmarks/bench_llm.py --threads 1                        # the tiny model on the CPU
    python benchmarks/bench_llm.py --model Qwen/Qwen2.5-1.5B-Instruct  # a real model (on the GPU when there is one)

Three timings on the same B requests (synthetic scenario, N candidates, the last ``--history`` items shown):

* **rollout**: G rankings of K items per request, as the trainer samples them: one forward over the B prompts,
  the prompt cache repeated G times, then one cached step per position for all B * G rankings;
* **update**: the teacher-forced log-probabilities of those B * G rankings (one forward over the K identifiers on the
  prompt cache) and their backward pass: one minibatch gradient step of the trainer, without the optimiser;
* **naive rollout**: the same sampling, re-running the whole prompt and prefix at every position without a cache
  (what a loop over ``model(...)`` calls does); its greedy rankings must equal the cached ones.

Rankings/s count complete rankings; tokens/s count identifier tokens placed (rollouts) or scored (update), i.e.
rankings/s times K. Each figure is the best of ``--repeats`` timed runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from agents.llm import LLMPolicyConfig, LLMRankingPolicy, Prompts
from agents.policy import RankingInputs, RankingPolicy
from flexrec_env.vector_env import FlexRecVectorEnv

warnings.filterwarnings("ignore", category=UserWarning)


class ReencodingPolicy(RankingPolicy):
    """An LLM policy decoded without a cache: the prompt and the prefix are re-run at every position."""

    reads_text = True

    def __init__(self, policy: LLMRankingPolicy) -> None:
        super().__init__()
        self._policy = [policy]  # not a submodule: shares the weights

    @property
    def policy(self) -> LLMRankingPolicy:
        return self._policy[0]

    def encode(self, inputs: RankingInputs) -> Prompts:
        return self.policy.tokenize(inputs)

    def start(self, state: Prompts, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens so far and their mask, ``(B * G, L)`` each."""
        return state.input_ids.repeat_interleave(group_size, 0), state.attention_mask.repeat_interleave(group_size, 0)

    def next_logits(self, decoding: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        ids, mask = decoding
        return self.policy.forward_identifiers(ids, mask, use_cache=False)[0][:, -1]

    def advance(self, decoding: tuple[torch.Tensor, torch.Tensor], actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = decoding
        return torch.cat([ids, self.policy.identifier_ids[actions][:, None]], 1), torch.cat([mask, mask.new_ones(len(ids), 1)], 1)

    def teacher_logits(self, state: Any, rankings: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("the naive policy only samples")


def synchronized(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(repeats: int, device: torch.device, fn: Callable[[], object]) -> float:
    """The fastest of ``repeats`` runs of ``fn`` after a warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        synchronized(device)
        start = time.perf_counter()
        fn()
        synchronized(device)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="A local folder or hub name of a causal LM (default: tiny).")
    parser.add_argument("--requests", type=int, default=8, help="B, requests per batch.")
    parser.add_argument("--group-size", type=int, default=8, help="G, rankings per request.")
    parser.add_argument("--candidates", type=int, default=10, help="N, candidates per request.")
    parser.add_argument("--list-length", type=int, default=5, help="K, items per ranking.")
    parser.add_argument("--history", type=int, default=10, help="History items in the prompt.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per figure (the best is reported).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
    parser.add_argument("--no-naive", action="store_true", help="Skip the naive rollout (slow for large models).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    b, g, n, k = args.requests, args.group_size, args.candidates, args.list_length

    torch.manual_seed(0)
    policy = LLMRankingPolicy(n, LLMPolicyConfig(model=args.model, max_history=args.history)).to(device).eval()
    env = FlexRecVectorEnv(b, need=["interest", "trending", "niche", "fresh"], num_candidates=n, list_length=k)
    observation, _ = env.reset(seed=0)
    inputs = RankingInputs.from_observation(observation, env.requests(), device)
    prompt_tokens = policy.tokenize(inputs).attention_mask.sum(-1).float()
    generator = torch.Generator(device=device).manual_seed(0)
    rollout = policy.sample(inputs, g, k, generator=generator)

    def update() -> None:
        log_probs, _ = policy.log_probs(inputs, rollout.rankings)
        log_probs.mean().backward()

    naive = ReencodingPolicy(policy)
    rankings = b * g
    timings = {
        "rollout (cached prompt)": best_seconds(args.repeats, device, lambda: policy.sample(inputs, g, k, generator=generator)),
        "update (teacher-forced, fwd + bwd)": best_seconds(args.repeats, device, update),
    }
    if not args.no_naive:
        with torch.no_grad():
            same = torch.equal(policy.rank(inputs, k), naive.rank(inputs, k))
        assert same, "the naive rollout decodes the same distribution"
        timings["naive rollout (re-encode per position)"] = best_seconds(
            args.repeats, device, lambda: naive.sample(inputs, g, k, generator=generator)
        )

    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(f"model {args.model} on {device} ({platform.processor() or platform.machine()}, torch threads {threads})")
    print(f"B={b} requests x G={g} rankings, N={n} candidates, K={k}; prompt {prompt_tokens.mean():.0f} tokens on average")
    print(f"{'':<40}{'seconds':>10}{'rankings/s':>14}{'tokens/s':>12}")
    for name, seconds in timings.items():
        print(f"{name:<40}{seconds:>10.3f}{rankings / seconds:>14.1f}{rankings * k / seconds:>12.1f}")
    if not args.no_naive:
        ratio = timings["naive rollout (re-encode per position)"] / timings["rollout (cached prompt)"]
        print(f"cached rollout is {ratio:.1f}x faster than the naive rollout")


if __name__ == "__main__":
    main()
