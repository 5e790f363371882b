"""The text interface: prompts in the Text space, answers parsed leniently, rankings round-trip, one renderer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env

import flexrec_env  # noqa: F401
from flexrec_env import INVALID_ACTION_PENALTY, TextConfig, TextRankingEnv, parse_ranking
from flexrec_env.prompts import describe_candidate

SMALL = {"need": ["interest", "trending"], "num_candidates": 6, "list_length": 4}
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "text_agent.py"


def make(env_kwargs: dict | None = None, **settings) -> TextRankingEnv:
    return TextRankingEnv(gym.make("FlexRec-v0", **(env_kwargs or SMALL)), **settings)


def labels_in_prompt(prompt: str, env: TextRankingEnv) -> list[str]:
    """Each candidate's label as the prompt writes it: read from its line ``-<label>: <description>``."""
    request = env.unwrapped.request
    lines = [line.split(": ", 1) for line in prompt.splitlines() if "; popularity: " in line]
    lines = {description: label.removeprefix("-").strip() for label, description in lines}
    return [lines[describe_candidate(request, i)] for i in range(len(request.candidates))]


# --------------------------------------------------------------------------------------------------------------------
# A ranking round-trips: written from the rendered labels, parsed, placed, rewarded as the indices are.


@pytest.mark.parametrize("reward_mode", ["swap", "marginal", "list"])
@pytest.mark.parametrize(("num_candidates", "style"), [(6, "auto"), (30, "auto"), (6, "special")])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_ranking_round_trips_to_the_same_placements_and_rewards(reward_mode, num_candidates, style, seed):
    kwargs = {**SMALL, "num_candidates": num_candidates, "reward_mode": reward_mode, "need": ["interest", "diverse"]}
    env, inner = make(kwargs, labels=style), gym.make("FlexRec-v0", **kwargs)
    prompt, info = env.reset(seed=seed)
    inner.reset(seed=seed)
    ranking = np.random.default_rng(seed).permutation(num_candidates)[: kwargs["list_length"]].tolist()
    labels = labels_in_prompt(prompt, env)
    assert labels == info["labels"] and len(set(labels)) == num_candidates
    first, rest = ranking[:1], ranking[1:]
    _, reward, terminated, _, step_info = env.step(labels[first[0]].lower())  # one label: one placement
    assert step_info["placements"] == first and not terminated
    text = " ".join(f"{p}. {labels[i]}" for p, i in enumerate(rest, 2))  # the rest as a numbered list
    _, reward_rest, terminated, _, last = env.step(text)
    assert terminated and last["placements"] == rest and env.unwrapped.ranking == ranking
    expected = [inner.step(i) for i in ranking]
    assert step_info["step_rewards"] + last["step_rewards"] == [float(r) for _, r, *_ in expected]
    assert float(reward) + float(reward_rest) == pytest.approx(sum(float(r) for _, r, *_ in expected))
    assert last["metrics"] == expected[-1][4]["metrics"] and last["ranking"].tolist() == ranking
    assert [s["item_id"] for s in last["steps"]] == [e[4]["item_id"] for e in expected[1:]]


def test_the_observation_is_in_its_text_space_throughout():
    for kwargs in (SMALL, {**SMALL, "num_candidates": 30, "list_length": 30}):
        env = make(kwargs)
        prompt, _ = env.reset(seed=3)
        done = False
        while not done:
            assert env.observation_space.contains(prompt), len(prompt)
            prompt, _, terminated, truncated, _ = env.step(env.labels[int(np.flatnonzero(env.unwrapped.action_masks())[0])])
            done = terminated or truncated
        assert env.observation_space.contains(prompt) and "Positions left: 0 of" in prompt


@pytest.mark.filterwarnings("ignore:.*is different from the unwrapped version")  # check_env's note on any wrapper
def test_check_env_and_same_seed_rollouts():
    check_env(make(), skip_render_check=True)
    runs = []
    for _ in range(2):
        env = make()
        prompts = [env.reset(seed=5)[0]]
        for text in ("F E", "d, c, b"):
            prompts.append(env.step(text)[0])
        runs.append(prompts)
    assert runs[0] == runs[1]


# --------------------------------------------------------------------------------------------------------------------
# Lenient parsing, worked out by hand.

LABELS = ["A", "B", "C", "D", "E"]


@pytest.mark.parametrize(
    ("text", "placed", "limit", "expected"),
    [
        ("C", (), None, [2]),
        ("c", (), None, [2]),
        ("C, A, E", (), None, [2, 0, 4]),
        ("1. C 2. A 3. E", (), None, [2, 0, 4]),
        ("1) C\n2) A", (), None, [2, 0]),
        ("C > A > E.", (), None, [2, 0, 4]),
        ("[c; a; e]", (), None, [2, 0, 4]),
        ("**C**", (), None, [2]),
        ("Answer: C, A", (), None, [2, 0]),
        ("My ranking: (C) (A)", (), None, [2, 0]),
        ("C, A, C, A, B", (), None, [2, 0, 1]),  # duplicates: the first mention counts
        ("C, A, B", (2,), None, [0, 1]),  # an already placed label is skipped
        ("E D C B A", (), 2, [4, 3]),  # beyond the positions left: ignored
        ("A-B", (), None, [0, 1]),
    ],
)  # fmt: skip
def test_lenient_parsing(text, placed, limit, expected):
    assert parse_ranking(text, LABELS, placed, limit) == expected


def test_special_labels_parse_with_or_without_brackets():
    labels = ["<c0>", "<c1>", "<c2>", "<c10>"]
    assert parse_ranking("<c10>, c1, C0", labels) == [3, 1, 0]
    assert parse_ranking("1. <c2> 2. <c0>", labels) == [2, 0]


@pytest.mark.parametrize(
    ("text", "placed", "reason"),
    [
        ("", (), "names no candidate"),
        ("1. 2. 3.", (), "names no candidate"),
        ("C", (2,), "names no candidate"),
        ("Z", (), "'Z' is not a label"),
        ("I think C is best", (), "'I' is not a label"),
        ("C3", (), "'C3' is not a label"),
    ],
)  # fmt: skip
def test_texts_that_place_nothing_are_refused_with_what_is_allowed(text, placed, reason):
    with pytest.raises(ValueError, match=reason) as error:
        parse_ranking(text, LABELS, placed)
    left = ", ".join(label for i, label in enumerate(LABELS) if i not in placed)
    assert repr(text) in str(error.value) and f"allowed: labels of the candidates not placed yet ({left})" in str(error.value)


# --------------------------------------------------------------------------------------------------------------------
# The error modes.


def test_penalize_mode_places_nothing_and_truncates_after_n_invalid_texts():
    env = make()
    prompt, _ = env.reset(seed=0)
    env.step("B")
    prompt = env.step("B, D")[0]  # B skipped, D placed
    assert env.unwrapped.ranking == [1, 3]
    for count in range(1, SMALL["num_candidates"] + 1):
        again, reward, terminated, truncated, info = env.step("B" if count % 2 else "what?")
        assert again == prompt and reward == INVALID_ACTION_PENALTY and not terminated
        assert info["invalid_text"] and info["invalid_action"] and info["placements"] == [] and "allowed" in info["error"]
        assert info["position"] == 2 and info["action_mask"].tolist() == [1, 0, 1, 0, 1, 1]
        assert truncated == (count == SMALL["num_candidates"])
    with pytest.raises(ResetNeeded):
        env.step("A")
    assert env.reset(seed=1)[0] and env.step("A")[4]["placements"] == [0]  # the count starts again


def test_raise_mode_names_the_text_and_the_labels_allowed():
    env = make(invalid_text="raise")
    env.reset(seed=0)
    env.step("A")
    with pytest.raises(ValueError, match=r"text 'A' is not a ranking: .* allowed: .*\(B, C, D, E, F\)"):
        env.step("A")
    with pytest.raises(ValueError, match="'nope' is not a label"):
        env.step("nope")
    assert env.unwrapped.ranking == [0]  # nothing placed by the refused texts
    with pytest.raises(TypeError, match="not a str"):
        env.step(2)


def test_bad_settings_name_the_value():
    with pytest.raises(ValueError, match="invalid_text"):
        TextConfig(invalid_text="ignore")
    with pytest.raises(ValueError, match="candidates"):
        TextConfig(prompt_template="Rank: {items}")
    with pytest.raises(ValueError, match="at most 26"):
        make({**SMALL, "num_candidates": 30}, labels="letters")
    with pytest.raises(TypeError, match="FlexRec-v0"):
        TextRankingEnv(gym.make("CartPole-v1"))
    env = make(max_length=50)
    with pytest.raises(ValueError, match="outside the observation space"):
        env.reset(seed=0)


# --------------------------------------------------------------------------------------------------------------------
# One renderer: the wrapper shows the flexrec-llm agent's user message.


@pytest.mark.parametrize("template", [None, "{instruction}\n{candidates}\nHistory: {history}"])
def test_the_prompt_is_the_llm_agents_message(template):
    from agents.language_models import TinyBase
    from agents.llm import LLMPolicyConfig, LLMRankingPolicy

    settings = {"max_history": 3} | ({"prompt_template": template} if template else {})
    policy = LLMRankingPolicy(SMALL["num_candidates"], LLMPolicyConfig(**settings), tiny=TinyBase.build())
    env = make(**settings)
    for seed in range(3):
        prompt, info = env.reset(seed=seed)
        expected, _ = policy.prompt(env.unwrapped.request)
        chat = [{"role": "user", "content": prompt}]
        assert expected == policy.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert [label.strip() for label in policy.labels] == info["labels"]


# --------------------------------------------------------------------------------------------------------------------
# The example drives the wrapper with the tiny model.


@pytest.mark.parametrize("mode", ["ranking", "label"])
def test_the_example_plays_episodes_with_the_tiny_model(mode, capsys):
    spec = importlib.util.spec_from_file_location("text_agent_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    metrics = module.main(["--episodes", "1", "--mode", mode, "--num-candidates", "5", "--list-length", "3"])
    assert set(metrics) == {"NDCG@5", "Recall@5", "need_metric", "return"} and 0 <= metrics["NDCG@5"] <= 1
    assert f"{mode} mode, tiny model, 1 episodes" in capsys.readouterr().out
