"""FlexRec: a Gymnasium environment for need-conditioned closed-set ranking.

``import flexrec_env`` registers ``FlexRec-v0``::

    env = gym.make("FlexRec-v0", need="trending")
    envs = gym.make_vec("FlexRec-v0", num_envs=256, need=["interest", "niche"])
    text_env = flexrec_env.TextRankingEnv(gym.make("FlexRec-v0"))  # the prompt in, the model's answer out

and ``FlexRecSession-v0`` (sessions of several requests whose need may shift, :mod:`flexrec_env.session_env`).
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

from flexrec_env.config import INVALID_ACTION_PENALTY, EnvConfig, SessionConfig, resolve_scenario
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
from flexrec_env.session_env import FlexRecSessionEnv, FlexRecSessionVectorEnv
from flexrec_env.text import TextConfig, TextRankingEnv, parse_ranking
from flexrec_env.vector_env import FlexRecVectorEnv

__all__ = [
    "INVALID_ACTION_PENALTY",
    "EnvConfig",
    "FeedbackConfig",
    "FlexRecEnv",
    "FlexRecSessionEnv",
    "FlexRecSessionVectorEnv",
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
    "SessionConfig",
    "resolve_scenario",
    "training_needs",
]

__version__ = "0.1.0"

for env_id, single, vector in (
    ("FlexRec-v0", "flexrec_env.env:FlexRecEnv", "flexrec_env.vector_env:FlexRecVectorEnv"),
    ("FlexRecSession-v0", "flexrec_env.session_env:FlexRecSessionEnv", "flexrec_env.session_env:FlexRecSessionVectorEnv"),
):
    if env_id not in registry:
        register(id=env_id, entry_point=single, vector_entry_point=vector, disable_env_checker=False)
