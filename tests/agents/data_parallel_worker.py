"""Run by ``test_data_parallel.py`` under ``torchrun --nproc_per_node 2``: a few data-parallel updates, then each
process writes its policy and critic parameters, its first requests, and the policy's starting parameters."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

SMALL = {"need": ["interest", "trending"], "num_candidates": 6, "list_length": 3}
SETTINGS = {
    "compact": {"dim": 16, "layers": 1, "heads": 2, "requests_per_batch": 4, "group_size": 4, "minibatch_requests": 2},
    "llm": {"model": "tiny", "max_history": 2, "requests_per_batch": 2, "group_size": 2, "minibatch_requests": 1},
}
STEPS = {"compact": 4 * 4 * 3 * 2 * 3, "llm": 2 * 2 * 3 * 2 * 3}  # three iterations of both processes


def main(kind: str, out: Path) -> None:
    from agents.base import close_process_group
    from agents.flexrec import FlexRecAgent
    from agents.llm import FlexRecLLMAgent
    from agents.trainer import FlexRecTrainer

    torch.set_num_threads(1)
    agent_class = FlexRecLLMAgent if kind == "llm" else FlexRecAgent
    agent = agent_class(**SETTINGS[kind], epochs=2, eval_every=0, critic_refit_epochs=2)
    policy = agent.init_policy(SMALL, seed=int(os.environ["RANK"]))  # different starting points: DDP must align them
    start = {k: v.detach().clone() for k, v in policy.named_parameters() if v.requires_grad}
    trainer = FlexRecTrainer(policy, SMALL, agent.trainer_config, seed=0)
    first = trainer.collect()
    trainer.update(first)
    history = trainer.train(STEPS[kind], progress=False)
    assert trainer.critic is not None
    torch.save(
        {
            "start": start,
            "policy": {k: v.detach() for k, v in trainer.unwrapped_policy.named_parameters() if v.requires_grad},
            "critic": trainer.critic.critic.state_dict(),
            "requests": first.inputs.candidates,
            "iterations": len(history) + 1,
            "steps": trainer.steps,
            "budget": STEPS[kind],
            "history": history,
        },
        out / f"rank{os.environ['RANK']}.pt",
    )
    close_process_group()  # both processes done, then the group closed: no thread outlives it


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
