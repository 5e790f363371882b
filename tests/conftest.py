"""Shared fixtures: the folder of real data kept next to the repository (not part of it), a small language model of
the kind a user brings; one torch thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Two shared cores: torch's intra-op threads only contend with each other on the tiny models of the tests. The
# environment variable carries the same limit into every process a test starts (torchrun workers, the CLI).
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``$FLEXREC_SHARED`` or ``<repo>/../shared``; skips the test when MovieTweetings 100K is not there."""
    folder = Path(os.environ.get("FLEXREC_SHARED", ROOT.parent / "shared"))
    if not (folder / "data" / "movietweetings-100k" / "ratings.dat").is_file():
        pytest.skip(f"no shared data at {folder / 'data' / 'movietweetings-100k'} (set FLEXREC_SHARED to its parent folder)")
    return folder


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
