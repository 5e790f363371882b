"""The LLM policy's prompt: a request in words, rendered by :mod:`flexrec_env.prompts`.

The renderer lives in the environment package so that the text wrapper (:class:`flexrec_env.text.TextRankingEnv`)
and the ``flexrec-llm`` agent show a model the same words; this module names it for the agents.
"""

from __future__ import annotations

from flexrec_env.prompts import (
    DEFAULT_PROMPT_TEMPLATE,
    LEVELS,
    PROMPT_FIELDS,
    RELEASE_LEVELS,
    THRESHOLDS,
    check_template,
    describe_candidate,
    describe_candidates,
    level,
    recent_history,
    template_fields,
    user_message,
)

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "LEVELS",
    "PROMPT_FIELDS",
    "RELEASE_LEVELS",
    "THRESHOLDS",
    "check_template",
    "describe_candidate",
    "describe_candidates",
    "level",
    "recent_history",
    "template_fields",
    "user_message",
]
