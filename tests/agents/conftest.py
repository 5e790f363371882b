"""Fixtures of the agents' tests: a small language model of the kind a user brings."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tied_model(tmp_path_factory) -> str:
    """A 2-layer Qwen2 with tied embeddings and a word-level tokenizer, saved to a folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from agents.language_models import TINY_CHAT_TEMPLATE, tiny_tokenizer_corpus

    words = {word for line in tiny_tokenizer_corpus() for word, _ in pre_tokenizers.Whitespace().pre_tokenize_str(line)}
    words = {word for word in words if not (len(word) == 1 and word.isupper())}  # no letter labels
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "<|user|>", "<|assistant|>", *sorted(words)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    config = Qwen2Config(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True, pad_token_id=0,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tied-model")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
