"""Drive FlexRec through its text interface: a language model reads the prompt and writes labels.

    python examples/text_agent.py [--episodes 3] [--mode ranking|label] [--model tiny]

Each step the model reads the wrapper's observation (the prompt, in the model's chat template) and writes labels:
the whole ranking at once (``--mode ranking``: one step places them all) or one label per step (``--mode label``).
Its choices are restricted to the labels of the candidates not placed yet (constrained decoding with
``prefix_allowed_tokens_fn``), so every answer is valid; the wrapper parses the decoded text as it would a free
answer. The default model is the built-in tiny smoke-test model (random weights, offline, seconds): it shows the
plumbing, not a recommender. ``--model`` also takes a local model folder or a GGUF file (never downloaded).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.language_models import load_language_model
from flexrec_env import TextRankingEnv


def label_token_ids(tokenizer: Any, labels: Sequence[str]) -> list[int]:
    """The token id of each label as an answer writes it (``" A"``); a ``ValueError`` if one is not a single token."""
    ids = [tokenizer(f" {label}", add_special_tokens=False)["input_ids"] for label in labels]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"the labels {list(labels)} are not single tokens of this tokenizer; pick another model")
    return [i[0] for i in ids]


def answer(model: Any, tokenizer: Any, prompt: str, allowed: list[int], count: int) -> str:
    """The model's answer to ``prompt``: ``count`` distinct tokens out of ``allowed``, sampled, decoded as text."""
    chat = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    input_ids = tokenizer(chat, add_special_tokens=False, return_tensors="pt")["input_ids"]
    start = input_ids.shape[1]

    def allowed_next(_: int, ids: torch.Tensor) -> list[int]:
        return [token for token in allowed if token not in ids[start:].tolist()]

    out = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=count,
        min_new_tokens=count,
        do_sample=True,
        prefix_allowed_tokens_fn=allowed_next,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(out[0, start:])


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--mode", choices=("ranking", "label"), default="ranking")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--need", default="trending")
    parser.add_argument("--num-candidates", type=int, default=8)
    parser.add_argument("--list-length", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    model, tokenizer, _ = load_language_model(args.model, torch.float32, local_files_only=True)
    env_kwargs = {"need": args.need, "num_candidates": args.num_candidates, "list_length": args.list_length}
    env = TextRankingEnv(gym.make("FlexRec-v0", **env_kwargs))
    results: list[dict[str, float]] = []
    for episode in range(args.episodes):
        prompt, info = env.reset(seed=args.seed + episode)
        tokens = label_token_ids(tokenizer, info["labels"])
        done, total, answers = False, 0.0, []
        while not done:
            flexrec = env.unwrapped  # the FlexRec-v0 env: what is left to place
            left = [token for token, free in zip(tokens, flexrec.action_masks(), strict=True) if free]
            positions_left = args.list_length - len(flexrec.ranking)
            text = answer(model, tokenizer, prompt, left, positions_left if args.mode == "ranking" else 1)
            prompt, reward, terminated, truncated, info = env.step(text)
            done, total = terminated or truncated, total + float(reward)
            answers.append(text.strip())
        results.append({**info["metrics"], "return": total})
        print(f"episode {episode}: answers {answers} -> NDCG@5 {info['metrics']['NDCG@5']:.3f}, return {total:.3f}")
    means = {key: float(np.mean([r[key] for r in results])) for key in ("NDCG@5", "Recall@5", "need_metric", "return")}
    print(
        f"{args.mode} mode, {args.model} model, {args.episodes} episodes: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items())
    )
    return means


if __name__ == "__main__":
    main()
