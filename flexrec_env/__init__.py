"""FlexRec: a Gymnasium environment for need-conditioned closed-set ranking.

``import flexrec_env`` registers ``FlexRec-v0``::

    env = gym.make("FlexRec-v0", need="trending")
    envs = gym.make_vec("FlexRec-v0", num_envs=256, need=["interest", "niche"])
    text_env = flexrec_env.TextRankingEnv(gym.make("FlexRec-v0"))  # the prompt in, the model's answer out
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from flexrec_env.config import INVALID_ACTION_PENALTY, EnvConfig, resolve_scenario
from flexrec_env.env import FlexRecEnv
from flexrec_env.feedback import FeedbackConfig
from flexrec_env.needs import (
    Need,
    all_of,
    check_scenario_needs,
    get_need,
    held_out_needs,
    register_need,
    registered_needs,
    training_needs,
)
from flexrec_env.text import TextConfig, TextRankingEnv, parse_ranking
from flexrec_env.vector_env import FlexRecVectorEnv

__all__ = [
    "INVALID_ACTION_PENALTY",
    "EnvConfig",
    "FeedbackConfig",
    "FlexRecEnv",
    "FlexRecVectorEnv",
    "Need",
    "TextConfig",
    "TextRankingEnv",
    "all_of",
    "check_scenario_needs",
    "get_need",
    "parse_ranking",
    "held_out_needs",
    "register_need",
    "registered_needs",
    "resolve_scenario",
    "training_needs",
]

__version__ = "0.1.0"

if "FlexRec-v0" not in registry:
    register(
        id="FlexRec-v0",
        entry_point="flexrec_env.env:FlexRecEnv",
        vector_entry_point="flexrec_env.vector_env:FlexRecVectorEnv",
        disable_env_checker=False,
    )
