"""The LLM ranking policy (tiny offline model): valid rankings, sampling equals teacher forcing, the adapter-disabled
reference, checkpoints, a short training run that learns to read the instruction (the command line: test_cli.py)."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from agents.checkpoints import load_checkpoint
from agents.evaluation import evaluate
from agents.llm import FlexRecLLMAgent, LLMPolicyConfig, LLMRankingPolicy, TinyBase
from agents.policy import RankingInputs, candidate_context
from agents.registry import load_agent
from flexrec_env.vector_env import FlexRecVectorEnv
from scenarios import RequestBatch, SyntheticScenario

SMALL = {"need": ["interest", "trending"], "num_candidates": 6, "list_length": 4}


@pytest.fixture(scope="module")
def tiny() -> TinyBase:
    return TinyBase.build()


def requests_of(env_kwargs: dict, batch: int, seed: int = 0) -> RankingInputs:
    env = FlexRecVectorEnv(batch, **env_kwargs)
    observation, _ = env.reset(seed=seed)
    return RankingInputs.from_observation(observation, env.requests())


def make(tiny: TinyBase, seed: int = 0, **config) -> LLMRankingPolicy:
    torch.manual_seed(seed)
    return LLMRankingPolicy(SMALL["num_candidates"], LLMPolicyConfig(max_history=3, **config), tiny=tiny).eval()


def perturb_adapter(policy: LLMRankingPolicy, seed: int = 1, scale: float = 0.5) -> None:
    """Random adapter weights (LoRA's B starts at zero, which would make the adapter a no-op)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in policy.parameters():
            if parameter.requires_grad:
                parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def test_prompt_shows_the_request_and_labels_each_candidate_with_one_token(tiny):
    policy = make(tiny)
    inputs = requests_of(SMALL, 3)
    assert inputs.requests is not None
    request = inputs.requests[0]
    text, chars = policy.prompt(request)
    assert request.instruction in text and all(title in text for title in request.candidate_titles)
    assert all(title in text for title in request.history_titles[-3:]) and request.history_titles[-4] not in text
    assert [text[c] for c in chars] == list("ABCDEF")
    prompts = policy.tokenize(inputs)
    assert (prompts.attention_mask == 0).any(), "prompts of different lengths: left padding is exercised"
    found = prompts.input_ids.gather(1, prompts.label_positions)
    assert torch.equal(found, policy.identifier_ids.expand(3, -1)) and len(set(policy.identifier_ids.tolist())) == 6
    policy.tokenizer.chat_template = None  # a base model's tokenizer: the plain prompt, with BOS and an answer cue
    text, chars = policy.prompt(request)
    assert text.startswith("<s>") and text.endswith("Answer:") and [text[c] for c in chars] == list("ABCDEF")
    policy.tokenize(inputs)  # the labels are found


@pytest.mark.parametrize("config", [{}, {"identifiers": "special"}], ids=["letters", "special"])
def test_sampled_rankings_are_valid_permutations(tiny, config):
    policy = make(tiny, **config)
    inputs = requests_of(SMALL, 2)
    for length in (1, 3, 6):
        rankings = policy.sample(inputs, 8, length, generator=torch.Generator().manual_seed(length)).rankings
        assert rankings.shape == (2, 8, length)
        assert all(len(set(row)) == length for row in rankings.reshape(-1, length).tolist())
        assert rankings.min() >= 0 and rankings.max() < 6


@pytest.mark.parametrize(
    "config", [{}, {"identifiers": "special"}, {"gradient_checkpointing": True}], ids=["letters", "special", "checkpointing"]
)
def test_teacher_forced_log_probs_equal_the_sampling_log_probs(tiny, config):
    policy = make(tiny, **config)
    perturb_adapter(policy)
    inputs = requests_of(SMALL, 3)
    rollout = policy.sample(inputs, 4, 4, generator=torch.Generator().manual_seed(2))
    policy.train()  # gradient checkpointing then re-runs the prompts with the rankings in one forward
    log_probs, entropy = policy.log_probs(inputs, rollout.rankings)
    # float32: the cached and the full forward round differently
    torch.testing.assert_close(log_probs, rollout.log_probs, atol=1e-5, rtol=1e-5)
    assert log_probs.requires_grad and torch.all(entropy >= 0)


def test_left_padding_changes_nothing(tiny):
    policy = make(tiny)
    perturb_adapter(policy)
    inputs = requests_of(SMALL, 3)
    with torch.no_grad():
        batched = policy.encode(inputs).logits
        alone = torch.cat([policy.encode(inputs.take([i])).logits for i in range(3)])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)


def test_reference_is_the_base_model_with_the_adapter_disabled(tiny):
    policy = make(tiny).train()
    reference = policy.reference()
    assert not list(reference.parameters()), "no second copy of the weights"
    inputs = requests_of(SMALL, 2)
    rankings = policy.sample(inputs, 4, 4, generator=torch.Generator().manual_seed(3)).rankings
    with torch.no_grad():
        base, _ = reference.log_probs(inputs, rankings)
        initial, _ = policy.log_probs(inputs, rankings)
    torch.testing.assert_close(initial, base, atol=1e-6, rtol=0)  # LoRA's B starts at zero
    optimizer = torch.optim.Adam([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    log_probs, _ = policy.log_probs(inputs, rankings)
    (-log_probs.mean()).backward()
    optimizer.step()
    with torch.no_grad():
        trained, _ = policy.log_probs(inputs, rankings)
        still, _ = reference.log_probs(inputs, rankings)
    assert (trained - base).abs().max() > 1e-2
    torch.testing.assert_close(still, base, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="reference_sync_every=0"):
        reference.load_state_dict(policy.state_dict())


def test_critic_inputs_are_the_context_or_the_hidden_states_at_the_labels(tiny):
    inputs = requests_of(SMALL, 2)
    features = make(tiny).critic_inputs(inputs)
    torch.testing.assert_close(features, candidate_context(inputs))  # the default: the numeric context
    features = make(tiny, critic_features="hidden").critic_inputs(inputs)
    assert features.shape == (2, 6, 64) and not features.requires_grad
    assert not torch.allclose(features[:, 0], features[:, 1])


@pytest.mark.parametrize("identifiers", ["letters", "special"])
def test_adapter_weights_round_trip(tiny, identifiers, tmp_path):
    from safetensors.torch import load_file

    policy = make(tiny, identifiers=identifiers)
    perturb_adapter(policy)
    checksum = policy.save_adapter(tmp_path / "adapter")
    state = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert any("token" in key for key in state) == (identifiers == "special")  # added identifiers' embeddings
    restored = make(tiny, seed=7, identifiers=identifiers)
    restored.load_adapter(tmp_path / "adapter", checksum)
    inputs = requests_of(SMALL, 2)
    with torch.no_grad():
        torch.testing.assert_close(restored.encode(inputs).logits, policy.encode(inputs).logits, atol=0, rtol=0)


def test_non_finite_logits_are_refused_not_ranked(tiny):
    policy = make(tiny)
    with torch.no_grad():
        next(p for p in policy.parameters() if p.requires_grad).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite logits"):
        policy.sample(requests_of(SMALL, 2), 2, 3)


# A task whose answer is in the prompt: every candidate interests the user, the first is the only trending one and the
# last the only niche one. A need-blind policy gets at most one need right; reading the instruction gets both.


class Signposts(SyntheticScenario):
    """Every candidate is interesting; candidate 0 is the only trending one, candidate N-1 the only niche one."""

    def sample_requests(self, rng: np.random.Generator, num_requests: int, num_candidates: int) -> RequestBatch:
        batch = super().sample_requests(rng, num_requests, num_candidates)
        index = np.broadcast_to(np.arange(num_candidates), batch.interest.shape)
        return replace(
            batch,
            interest=np.full(batch.interest.shape, 2),
            recent_popularity=(index == 0).astype(np.float32),
            popularity=(index != num_candidates - 1).astype(np.float32),
        )


SIGNPOSTS = {"need": ["trending", "niche"], "num_candidates": 4, "list_length": 2, "reward_labels": "true"}
LEARN = {"advantage": "swap", "requests_per_batch": 8, "group_size": 8, "minibatch_requests": 8, "epochs": 2}
LEARN |= {"learning_rate": 5e-3, "eval_every": 0, "max_history": 0}


@pytest.fixture(scope="module")
def signposts() -> dict:
    return {**SIGNPOSTS, "scenario": Signposts(num_users=50, num_items=200)}


@pytest.fixture(scope="module")
def trained(signposts) -> FlexRecLLMAgent:
    return FlexRecLLMAgent(**LEARN).learn(signposts, 8 * 8 * 2 * 40, seed=0)  # 40 iterations, about 5 s


def top1_accuracy(agent: FlexRecLLMAgent, env_kwargs: dict) -> list[float]:
    """Per need, how often the greedy ranking puts the one relevant candidate first."""
    assert agent.policy is not None
    accuracies = []
    for need, answer in (("trending", 0), ("niche", 3)):
        inputs = requests_of({**env_kwargs, "need": need}, 32, seed=123)
        accuracies.append(float((agent.policy.rank(inputs, 1)[:, 0] == answer).float().mean()))
    return accuracies


def test_training_learns_to_follow_the_instruction(trained, signposts):
    rewards = [row["reward/list"] for row in trained.history]
    assert np.mean(rewards[-3:]) > np.mean(rewards[:2]) + 0.25, rewards
    after = top1_accuracy(trained, signposts)
    with trained.base_model():
        before = top1_accuracy(trained, signposts)
    assert min(after) >= 0.7 and min(before) <= 0.5, (before, after)  # learned both needs; the base model did not


def test_checkpoint_round_trips_with_identical_rankings(trained, signposts, tmp_path):
    path = tmp_path / "llm.ckpt"
    trained.save(path)
    assert load_checkpoint(path, "flexrec-llm")["tiny"] is not None  # the tiny base model travels with the adapter
    assert (tmp_path / "llm-adapter" / "adapter_model.safetensors").is_file()  # peft's save_pretrained
    reloaded = load_agent(path)
    assert isinstance(reloaded, FlexRecLLMAgent) and reloaded.trainer_config == trained.trainer_config
    inputs = requests_of(signposts, 8, seed=5)
    assert trained.policy is not None and reloaded.policy is not None
    torch.testing.assert_close(reloaded.policy.rank(inputs, 4), trained.policy.rank(inputs, 4))
    scores = [evaluate(agent, signposts, episodes=4).values for agent in (trained, reloaded)]
    assert scores[0] == scores[1]


def test_bad_settings_name_the_value(tiny):
    with pytest.raises(ValueError, match="reference_sync_every=5"):
        FlexRecLLMAgent(reference_sync_every=5)
    with pytest.raises(ValueError, match=r"unknown flexrec-llm setting\(s\) \['lr'\]"):
        FlexRecLLMAgent(lr=0.1)
    with pytest.raises(ValueError, match="identifiers='emoji'"):
        LLMPolicyConfig(identifiers="emoji")
    with pytest.raises(ValueError, match="candidates"):
        LLMPolicyConfig(prompt_template="Rank these: {items}")
    with pytest.raises(ValueError, match="identifiers='special'"):
        LLMRankingPolicy(27, LLMPolicyConfig(identifiers="letters"), tiny=tiny)
    with pytest.raises(RuntimeError, match="untrained"):
        FlexRecLLMAgent().save(__import__("pathlib").Path("never.ckpt"))
    assert FlexRecLLMAgent().trainer_config.reference_sync_every == 0


# A model a user brings (the ``tied_model`` fixture of conftest.py): tied input/output embeddings, and a word-level
# tokenizer without single-letter tokens, so the candidate labels are added tokens <c0>, <c1>, ... whose rows train
# through peft's trainable_token_indices.


def test_a_saved_adapter_gives_the_trained_logits_back(tied_model, tmp_path):
    env = {"need": ["trending"], "num_candidates": 4, "list_length": 2}
    settings = {"requests_per_batch": 2, "group_size": 4, "max_history": 2, "learning_rate": 0.01, "eval_every": 0}
    agent = FlexRecLLMAgent(model=tied_model, **settings).learn(env, 48, seed=0)
    assert isinstance(agent.policy, LLMRankingPolicy)
    assert agent.policy.labels[0] == "<c0>", "the labels are added tokens"
    adapter = agent.policy.lm.base_model.model.model.embed_tokens.token_adapter
    rows = adapter.base_layer.weight[agent.policy.identifier_ids]  # the label rows as training started
    assert not torch.allclose(adapter.trainable_tokens_delta["default"], rows), "the label rows trained"
    prompts = agent.policy.tokenize(requests_of(env, 2))

    def logits(policy: LLMRankingPolicy) -> torch.Tensor:
        with torch.no_grad():
            return policy.lm(input_ids=prompts.input_ids, attention_mask=prompts.attention_mask).logits[
                ..., policy.identifier_ids
            ]

    trained = logits(agent.policy)
    with agent.base_model():
        assert (logits(agent.policy) - trained).abs().max() > 1e-3, "training changed the label logits"
    agent.save(tmp_path / "llm.ckpt")
    reloaded = load_agent(tmp_path / "llm.ckpt")
    assert isinstance(reloaded.policy, LLMRankingPolicy)
    torch.testing.assert_close(logits(reloaded.policy), trained, atol=1e-6, rtol=0)
    served_like_a_user(tied_model, tmp_path / "llm.ckpt", reloaded.policy, env)

    adapter = tmp_path / "llm-adapter" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:-8] + bytes(8))  # another save's adapter, or a damaged one
    with pytest.raises(ValueError, match="checksum differs"):
        load_agent(tmp_path / "llm.ckpt")
    (tmp_path / "llm-adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="travels with its checkpoint"):
        load_agent(tmp_path / "llm.ckpt")


def served_like_a_user(tied_model: str, checkpoint, policy: LLMRankingPolicy, env: dict) -> None:
    """The adapter folder beside ``checkpoint``, loaded with peft onto the base model, gives ``policy``'s logits."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = FlexRecLLMAgent.adapter_folder(checkpoint)
    base = AutoModelForCausalLM.from_pretrained(tied_model)
    vocab = base.config.vocab_size
    base.resize_token_embeddings(len(AutoTokenizer.from_pretrained(folder)), mean_resizing=False)
    with warnings.catch_warnings():  # peft 0.21 asks transformers 5 for a renamed property
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        served = PeftModel.from_pretrained(base, folder).eval()  # what a user serving the adapter does
    prompts = policy.tokenize(requests_of(env, 2))
    with torch.no_grad():
        ours = policy.lm(input_ids=prompts.input_ids, attention_mask=prompts.attention_mask).logits
        theirs = served(input_ids=prompts.input_ids, attention_mask=prompts.attention_mask).logits
    # the base vocabulary and the trained label rows; other new rows (tokens the base model lacks) start random
    columns = torch.cat([torch.arange(vocab), policy.identifier_ids])
    torch.testing.assert_close(theirs[..., columns], ours[..., columns], atol=1e-5, rtol=0)


def test_a_checkpoint_refuses_a_changed_base_model(tied_model, tmp_path):
    import shutil

    from transformers import AutoConfig, Qwen2Config, Qwen2ForCausalLM

    model = tmp_path / "model"
    shutil.copytree(tied_model, model)
    env = {"need": ["trending"], "num_candidates": 4, "list_length": 2}
    settings = {"requests_per_batch": 2, "group_size": 2, "max_history": 1, "eval_every": 0}
    FlexRecLLMAgent(model=str(model), **settings).learn(env, 8, seed=0).save(tmp_path / "llm.ckpt")
    config = AutoConfig.from_pretrained(model).to_dict()
    config.update(num_hidden_layers=1, layer_types=config["layer_types"][:1])
    Qwen2ForCausalLM(Qwen2Config(**config)).save_pretrained(model)  # the folder now holds another model
    with pytest.raises(ValueError, match="the model file or folder changed"):
        load_agent(tmp_path / "llm.ckpt")


def test_an_adapter_for_another_model_is_refused(tiny, tied_model, tmp_path):
    policy = make(tiny)
    policy.save_adapter(tmp_path / "adapter")
    other = LLMRankingPolicy(SMALL["num_candidates"], LLMPolicyConfig(model=tied_model))
    with pytest.raises(ValueError, match="adapter in .* do not fit"):
        other.load_adapter(tmp_path / "adapter")
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        other.load_adapter(tmp_path / "nowhere")


def test_a_training_checkpoint_interrupted_between_its_two_files_keeps_the_previous_pair(
    trained, signposts, tmp_path, monkeypatch
):
    """A training checkpoint's adapter is named by its content: a stop after the adapter, before the checkpoint,
    leaves the previous checkpoint and its adapter whole; a completed save removes the adapters it no longer names."""
    import agents.flexrec

    path = tmp_path / "llm.resume.ckpt"
    trained.save(path, training={"steps": 1})
    inputs = requests_of(signposts, 8, seed=5)
    before = trained.policy.rank(inputs, 4)
    save_checkpoint = agents.flexrec.save_checkpoint

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process stops after the adapter is written

    original = {k: v.detach().clone() for k, v in trained.policy.named_parameters() if v.requires_grad}
    perturb_adapter(trained.policy, seed=3)
    monkeypatch.setattr(agents.flexrec, "save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        trained.save(path, training={"steps": 2})
    monkeypatch.setattr(agents.flexrec, "save_checkpoint", save_checkpoint)
    reloaded = load_agent(path)
    assert reloaded.training_state == {"steps": 1}
    torch.testing.assert_close(reloaded.policy.rank(inputs, 4), before)
    trained.save(path, training={"steps": 2})
    folders = sorted(f.name for f in tmp_path.iterdir() if f.is_dir())
    assert len(folders) == 1 and folders[0].startswith("llm.resume-adapter-"), folders
    assert load_agent(path).training_state == {"steps": 2}
    with torch.no_grad():  # leave the shared fixture as it was
        for name, value in trained.policy.named_parameters():
            if name in original:
                value.copy_(original[name])
