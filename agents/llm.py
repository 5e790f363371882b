r"""The ``flexrec-llm`` agent: a causal language model with a LoRA adapter ranks the candidates, reading the request.

The prompt holds the user's recent history (item titles, which carry the category in the built-in scenarios), the
need's instruction as the environment sampled it, and the candidates, each labelled by an *identifier* that is one
token of the tokenizer (``" A"``, ``" B"``, ... when the tokenizer has them as single tokens, else added tokens
``<c0>``, ``<c1>``, ...). The model then "writes" the ranking one identifier per position, and its next-token logits
restricted to the N identifiers are the logits of :class:`~agents.policy.RankingPolicy`:

    logits_t(i) = LM(prompt, id(s_1), ..., id(s_{t-1}))[id(i)],

so the base class's masking makes every sample a valid ranking (no repeats, nothing outside the candidates), and
teacher forcing computes the same logits as sampling. Sampling runs the prompt once (``use_cache=True``), repeats
its key/value cache G times (rows ``b * G + g``) and feeds one identifier per step; teacher forcing runs the K
identifiers of all B * G rankings in one forward over the same (repeated) prompt cache, with gradients flowing into
the prompt's keys and values (under gradient checkpointing in training, prompts and identifiers go through one
forward instead). Prompts are left-padded; position ids count only real tokens, so padding changes nothing.

Only the adapter trains (and, with added identifier tokens, their embeddings). The reference of the KL penalty is the
same model with the adapter disabled (peft's ``disable_adapter``): no second copy in memory, and no reference sync.

``model="tiny"`` is a built-in *smoke-test* model (a 2-layer Llama-style network with random weights and a byte-level
BPE tokenizer trained on the environment's words, built offline in seconds): it exercises every code path on a
CPU, and learns what a prompt makes easy to read, but it is not a recommender. Any local folder or hub name of a
causal language model works in its place (``flexrec-agent train --agent flexrec-llm --model PATH``).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import string
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, NoReturn, get_args

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from agents.flexrec import PolicyAgent
from agents.policy import RankingInputs, RankingPolicy
from scenarios import Request

logger = logging.getLogger(__name__)

TINY_MODEL = "tiny"
DEFAULT_PROMPT_TEMPLATE = (
    "You recommend items to a user. Items the user interacted with recently, oldest first:\n{history}\n\n"
    "The user asks: {instruction}\n\n"
    "Candidates:\n{candidates}\n\n"
    "Rank the candidates for this request, best first, by their labels."
)
#: Placeholders a prompt template may use (``{candidates}`` is required, once).
PROMPT_FIELDS = ("history", "instruction", "candidates")
Identifiers = Literal["auto", "letters", "special"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
LETTERS = string.ascii_uppercase


@dataclass(frozen=True)
class LLMPolicyConfig:
    """The LLM ranking policy's settings (``flexrec-agent train --agent flexrec-llm --set KEY=VALUE`` sets them)."""

    model: str = TINY_MODEL
    """A local folder or hub name of a causal language model; ``"tiny"``: the built-in smoke-test model (random
    weights, offline), which checks the plumbing and is not a recommender."""
    local_files_only: bool = False
    """Never download: the model must be a local folder or already in the Hugging Face cache."""
    lora_rank: int = 16
    """Rank r of the LoRA adapter."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is ``alpha / r * B A``)."""
    lora_dropout: float = 0.0
    """Dropout on the adapter's input (0 keeps sampling and teacher forcing the same function)."""
    target_modules: tuple[str, ...] | str | None = None
    """Modules that get an adapter: names, ``"all-linear"``, or None for peft's default for the architecture (the
    attention query and value projections of Llama, Qwen, Mistral and GPT-2 style models)."""
    max_history: int = 10
    """Most recent history items shown in the prompt (0: none)."""
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    """The user message: a ``str.format`` template with ``{candidates}`` (once) and optionally ``{history}`` and
    ``{instruction}``; candidates are written one per line as ``-<identifier>: <title>``."""
    identifiers: Identifiers = "auto"
    """Candidate identifiers: ``"letters"`` (`` A``, `` B``, ... : must be single tokens, N <= 26), ``"special"``
    (added tokens ``<c0>``, ... with trainable embeddings) or ``"auto"`` (letters when they are single tokens)."""
    dtype: DType = "auto"
    """Weights' dtype; ``"auto"``: bfloat16 on CUDA, float32 on CPU."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, slower; teacher forcing then re-runs the prompts)."""

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, list):  # from JSON
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        checks = {
            "model": isinstance(self.model, str) and bool(self.model),
            "lora_rank": isinstance(self.lora_rank, int) and self.lora_rank >= 1,
            "lora_alpha": self.lora_alpha > 0,
            "lora_dropout": 0.0 <= self.lora_dropout < 1.0,
            "target_modules": self.target_modules is None or isinstance(self.target_modules, (str, tuple)),
            "max_history": isinstance(self.max_history, int) and self.max_history >= 0,
            "identifiers": self.identifiers in get_args(Identifiers),
            "dtype": self.dtype in get_args(DType),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            details = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ValueError(
                f"invalid LLM policy setting(s) {details}; allowed: identifiers in {list(get_args(Identifiers))}, "
                f"dtype in {list(get_args(DType))}, lora_rank >= 1, 0 <= lora_dropout < 1 (see LLMPolicyConfig's docs)"
            )
        names = [name for _, name, _, _ in string.Formatter().parse(self.prompt_template) if name is not None]
        if names.count("candidates") != 1 or set(names) - set(PROMPT_FIELDS):
            raise ValueError(
                f"prompt_template has the fields {names}; allowed: {list(PROMPT_FIELDS)}, with {{candidates}} exactly once"
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        """The dtype the weights are loaded in."""
        if self.dtype == "auto":
            return torch.bfloat16 if torch.cuda.is_available() else torch.float32
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.dtype]


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
    lines += [f"- {name} title #0 (period 0)" for name in CATEGORY_NAMES]
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


def load_language_model(config: LLMPolicyConfig, tiny: TinyBase | None = None) -> tuple[Any, Any, TinyBase | None]:
    """The causal LM and its fast tokenizer (left padding, a pad token), and the tiny model's data when it is tiny."""
    if config.model == TINY_MODEL:
        tiny = tiny or TinyBase.build()
        model, tokenizer = tiny.load(config.torch_dtype)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(config.model, local_files_only=config.local_files_only)
        model = AutoModelForCausalLM.from_pretrained(
            config.model, dtype=config.torch_dtype, local_files_only=config.local_files_only
        )
        tiny = None
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"the tokenizer of {config.model!r} is not a fast tokenizer; the LLM policy needs its offsets")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    disable_dropout(model)
    return model, tokenizer, tiny


def disable_dropout(model: nn.Module) -> None:
    """No dropout in the base model (as TRL does): sampling and teacher forcing then see the same function."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            vars(module)["attention_dropout"] = 0.0  # a float read in forward (Llama, Qwen, Mistral attention)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` position of each token among the real (unmasked) ones: left padding shifts nothing."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def repeat_cache(cache: Any, repeats: int) -> Any:
    """A new key/value cache with every row repeated ``repeats`` times (``b -> b * repeats + g``); ``cache`` is kept."""
    repeated = copy.copy(cache)
    repeated.layers = [copy.copy(layer) for layer in cache.layers]  # the layers rebind their tensors when repeated
    repeated.batch_repeat_interleave(repeats)
    return repeated


# --------------------------------------------------------------------------------------------------------------------
# The policy.


@dataclass
class Prompts:
    """B tokenized prompts and, once run, their cache and the identifier logits after them."""

    input_ids: torch.Tensor
    """``(B, L)`` left-padded token ids."""
    attention_mask: torch.Tensor
    """``(B, L)`` 1 for real tokens."""
    label_positions: torch.Tensor
    """``(B, N)`` position of each candidate's identifier token in the prompt."""
    cache: Any = None
    """The prompt's key/value cache (None under gradient checkpointing in training)."""
    logits: torch.Tensor | None = None
    """``(B, N)`` identifier logits of the first position."""


@dataclass
class Decoding:
    """B * G rankings being sampled: the repeated cache, its mask, the last logits, and identifiers not yet fed."""

    cache: Any
    attention_mask: torch.Tensor
    """``(B * G, L + t)``."""
    logits: torch.Tensor
    """``(B * G, N)`` logits of the next position (stale while ``pending`` is set)."""
    pending: torch.Tensor | None = None
    """``(B * G,)`` identifier tokens placed but not run yet (run when the next logits are asked for)."""


class LLMRankingPolicy(RankingPolicy):
    """A causal LM with a LoRA adapter writes the ranking as identifier tokens (see the module docstring)."""

    reads_text = True
    identifier_ids: torch.Tensor
    """``(N,)`` the token id of each candidate's identifier (a buffer)."""

    def __init__(self, num_candidates: int, config: LLMPolicyConfig | None = None, tiny: TinyBase | None = None) -> None:
        from peft import LoraConfig, get_peft_model

        super().__init__(learns_prior=False)  # the critic reads its hidden states; starting from it is future work
        self.config = c = config or LLMPolicyConfig()
        self.num_candidates = num_candidates
        model, self.tokenizer, self.tiny = load_language_model(c, tiny)
        self.labels, identifier_ids, added = self._identifiers(model, num_candidates)
        self.register_buffer("identifier_ids", torch.tensor(identifier_ids, dtype=torch.long), persistent=False)
        if c.gradient_checkpointing:
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        target = list(c.target_modules) if isinstance(c.target_modules, tuple) else c.target_modules
        lora = LoraConfig(
            r=c.lora_rank,
            lora_alpha=c.lora_alpha,
            lora_dropout=c.lora_dropout,
            target_modules=target,
            task_type="CAUSAL_LM",
            trainable_token_indices=identifier_ids if added else None,
        )
        with warnings.catch_warnings():  # peft 0.21 asks transformers 5 for a renamed property
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            self.lm: Any = get_peft_model(model, lora)

    # Identifiers and prompts ----------------------------------------------------------------------------------------

    def _identifiers(self, model: Any, n: int) -> tuple[list[str], list[int], bool]:
        """The N labels, their token ids, and whether they are added tokens (then the embeddings are resized)."""
        mode = self.config.identifiers
        if mode != "special":
            labels = [f" {letter}" for letter in LETTERS[:n]]
            ids = self._single_token_ids(labels) if n <= len(LETTERS) else None
            if ids is not None:
                return labels, ids, False
            if mode == "letters":
                raise ValueError(
                    f"identifiers='letters' needs N <= 26 labels that are single tokens of {self.config.model!r}'s "
                    f"tokenizer (N={n}); use identifiers='special'"
                )
        labels = [f"<c{i}>" for i in range(n)]
        self.tokenizer.add_tokens(labels, special_tokens=True)
        ids = self.tokenizer.convert_tokens_to_ids(labels)
        sources = [self.tokenizer(f" {i}", add_special_tokens=False)["input_ids"] for i in range(n)]
        model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        with torch.no_grad():  # distinct starting points: the mean embedding of the label's number
            for embedding in {model.get_input_embeddings().weight, model.get_output_embeddings().weight}:
                for token, source in zip(ids, sources, strict=True):
                    embedding[token] = embedding[source].mean(0)
        checked = self._single_token_ids(labels)
        assert checked == ids, "added special tokens are single tokens"
        return labels, ids, True

    def _single_token_ids(self, labels: list[str]) -> list[int] | None:
        """The token id of each label in a prompt, or None when one is not a single, distinct token there."""
        text, chars = self.render((), "probe", ["item"] * len(labels), labels)
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = np.asarray(encoded["offset_mapping"])  # (L, 2)
        ids = []
        for label, char in zip(labels, chars, strict=True):
            hits = np.flatnonzero((offsets[:, 0] <= char) & (char < offsets[:, 1]))
            if len(hits) != 1:
                return None
            start, end = offsets[hits[0]]
            if text[start:end].strip() != label.strip():
                return None
            ids.append(int(encoded["input_ids"][hits[0]]))
        return ids if len(set(ids)) == len(ids) else None

    def render(
        self, history: Sequence[str], instruction: str, candidates: Sequence[str], labels: Sequence[str] | None = None
    ) -> tuple[str, list[int]]:
        """The prompt text (chat template applied when the tokenizer has one) and the index of each label's last char."""
        labels = self.labels if labels is None else labels
        recent = list(history)[-self.config.max_history :] if self.config.max_history else []
        lines, chars, offset = [], [], 0
        for label, title in zip(labels, candidates, strict=True):
            chars.append(offset + len(label))  # "-" then the label: its last char
            lines.append(f"-{label}: {title}")
            offset += len(lines[-1]) + 1
        history_text = "\n".join(f"- {title}" for title in recent) or "(none)"
        sentinel = "\x00"
        message = self.config.prompt_template.format(history=history_text, instruction=instruction, candidates=sentinel)
        start = message.index(sentinel)
        message = message.replace(sentinel, "\n".join(lines))
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
            )
            if message not in text:
                raise ValueError(f"the chat template of {self.config.model!r} rewrites the prompt; its labels cannot be found")
            start += text.index(message)
        else:  # a base model: the message, then the answer's cue
            bos = self.tokenizer.bos_token or ""
            text, start = f"{bos}{message}\nAnswer:", start + len(bos)
        return text, [start + c for c in chars]

    def prompt(self, request: Request) -> tuple[str, list[int]]:
        """The prompt of a request and the index of each candidate label's last char."""
        return self.render(request.history_titles, request.instruction, request.candidate_titles)

    def tokenize(self, inputs: RankingInputs) -> Prompts:
        """The requests' prompts, left-padded, with the position of every candidate's identifier token."""
        if inputs.requests is None:
            raise ValueError("the LLM policy reads the requests as text: build RankingInputs with requests=[...]")
        n = int(inputs.candidates.shape[1])
        if n != self.num_candidates:
            raise ValueError(f"the requests have {n} candidates; this policy was built for {self.num_candidates}")
        texts, chars = zip(*(self.prompt(request) for request in inputs.requests), strict=True)
        device = self.identifier_ids.device
        encoded = self.tokenizer(
            list(texts), padding=True, add_special_tokens=False, return_offsets_mapping=True, return_tensors="pt"
        )
        offsets = encoded["offset_mapping"]  # (B, L, 2)
        label_chars = torch.tensor(chars)[:, :, None]  # (B, N, 1)
        covers = (offsets[:, None, :, 0] <= label_chars) & (label_chars < offsets[:, None, :, 1])  # (B, N, L)
        positions = covers.int().argmax(-1)  # (B, N)
        input_ids = encoded["input_ids"].to(device)
        found = input_ids.gather(1, positions.to(device))
        if not (covers.any(-1).all() and torch.equal(found, self.identifier_ids.expand_as(found))):
            raise ValueError(
                f"a candidate label is not one token in a prompt of {self.config.model!r}; use identifiers='special'"
            )
        return Prompts(input_ids, encoded["attention_mask"].to(device), positions.to(device))

    # Forward passes -------------------------------------------------------------------------------------------------

    def forward_identifiers(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: Any = None, keep: int = 1, use_cache: bool = True
    ) -> tuple[torch.Tensor, Any]:
        """Identifier logits ``(B, keep, N)`` of the last ``keep`` of ``input_ids`` ``(B, T)`` after ``cache``; the cache.

        ``attention_mask`` covers the cache and the new tokens; position ids count real tokens only. The cache comes
        back extended by the new tokens (None without ``use_cache`` or under gradient checkpointing in training).
        """
        positions = position_ids(attention_mask)[:, -input_ids.shape[1] :]
        use_cache = use_cache and not (self.config.gradient_checkpointing and self.training)
        out = self.lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=use_cache,
            logits_to_keep=keep,
        )
        return out.logits[:, -keep:, self.identifier_ids].float(), out.past_key_values if use_cache else None

    def encode(self, inputs: RankingInputs) -> Prompts:
        """Tokenize the prompts and run them once, keeping the cache (not under gradient checkpointing in training)."""
        prompts = self.tokenize(inputs)
        if self.config.gradient_checkpointing and self.training:
            return prompts  # teacher forcing re-runs the whole sequences instead
        logits, cache = self.forward_identifiers(prompts.input_ids, prompts.attention_mask)
        return replace(prompts, cache=cache, logits=logits[:, -1])

    def start(self, state: Prompts, group_size: int) -> Decoding:
        if state.cache is None or state.logits is None:
            raise RuntimeError("sampling needs the prompt cache: call policy.eval() before sampling (gradient checkpointing)")
        mask = state.attention_mask.repeat_interleave(group_size, 0)
        return Decoding(repeat_cache(state.cache, group_size), mask, state.logits.repeat_interleave(group_size, 0))

    def next_logits(self, decoding: Decoding) -> torch.Tensor:
        if decoding.pending is not None:  # feed the last placements now (the last one of a ranking is never fed)
            logits, decoding.cache = self.forward_identifiers(decoding.pending[:, None], decoding.attention_mask, decoding.cache)
            decoding.logits, decoding.pending = logits[:, -1], None
        return decoding.logits

    def advance(self, decoding: Decoding, actions: torch.Tensor) -> Decoding:
        ones = decoding.attention_mask.new_ones(len(actions), 1)
        return replace(
            decoding, attention_mask=torch.cat([decoding.attention_mask, ones], 1), pending=self.identifier_ids[actions]
        )

    def teacher_logits(self, state: Prompts, rankings: torch.Tensor) -> torch.Tensor:
        b, g, k = rankings.shape
        fed = self.identifier_ids[rankings[..., :-1]].reshape(b * g, k - 1)  # the last placement predicts nothing
        prompt_mask = state.attention_mask.repeat_interleave(g, 0)
        mask = torch.cat([prompt_mask, prompt_mask.new_ones(b * g, k - 1)], 1)
        if state.cache is None:  # gradient checkpointing: prompt and identifiers in one forward
            ids = torch.cat([state.input_ids.repeat_interleave(g, 0), fed], 1)
            logits, _ = self.forward_identifiers(ids, mask, keep=k, use_cache=False)
        else:
            assert state.logits is not None
            logits = state.logits.repeat_interleave(g, 0)[:, None]  # (B * G, 1, N): the first position
            if k > 1:  # the other K - 1 positions in one forward over the repeated prompt cache
                rest, _ = self.forward_identifiers(fed, mask, repeat_cache(state.cache, g), keep=k - 1)
                logits = torch.cat([logits, rest], 1)
        return logits.reshape(b, g, k, -1)  # (B, G, K, N)

    @torch.no_grad()
    def critic_inputs(self, inputs: RankingInputs) -> torch.Tensor:
        """``(B, N, H)``: the last hidden state at each candidate's identifier token in the prompt (detached)."""
        prompts = self.tokenize(inputs)
        out = self.lm(
            input_ids=prompts.input_ids,
            attention_mask=prompts.attention_mask,
            position_ids=position_ids(prompts.attention_mask),
            use_cache=False,
            output_hidden_states=True,
            logits_to_keep=1,
        )
        hidden = out.hidden_states[-1]  # (B, L, H)
        index = prompts.label_positions[..., None].expand(-1, -1, hidden.shape[-1])
        return hidden.gather(1, index).float().detach()

    # Adapter --------------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def adapter_disabled(self) -> Iterator[None]:
        """Within this context the policy is the base model (zero-shot): the adapter is switched off."""
        with self.lm.disable_adapter():
            yield

    def reference(self) -> AdapterDisabledReference:
        """The base model as the KL anchor: this policy with its adapter disabled (shares the weights)."""
        return AdapterDisabledReference(self)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained weights (the adapter and any added identifier embeddings), on the CPU."""
        from peft import get_peft_model_state_dict

        return {k: v.detach().cpu() for k, v in get_peft_model_state_dict(self.lm).items()}

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load weights saved with :meth:`adapter_state_dict`."""
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(self.lm, state)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(f"the adapter weights do not fit this model: unexpected keys {unexpected[:5]}")


class AdapterDisabledReference(RankingPolicy):
    """An LLM policy with its adapter disabled: the frozen base model, without a copy of its weights."""

    reads_text = True

    def __init__(self, policy: LLMRankingPolicy) -> None:
        super().__init__(learns_prior=False)
        self._policy = [policy]  # a list, not a submodule: no parameters of its own, nothing copied or moved

    @property
    def policy(self) -> LLMRankingPolicy:
        """The policy whose base model this is."""
        return self._policy[0]

    def encode(self, inputs: RankingInputs) -> Prompts:
        with self.policy.adapter_disabled():
            return self.policy.encode(inputs)

    def start(self, state: Prompts, group_size: int) -> Decoding:
        return self.policy.start(state, group_size)

    def next_logits(self, decoding: Decoding) -> torch.Tensor:
        with self.policy.adapter_disabled():
            return self.policy.next_logits(decoding)

    def advance(self, decoding: Decoding, actions: torch.Tensor) -> Decoding:
        return self.policy.advance(decoding, actions)

    def teacher_logits(self, state: Prompts, rankings: torch.Tensor) -> torch.Tensor:
        with self.policy.adapter_disabled():
            return self.policy.teacher_logits(state, rankings)

    def critic_inputs(self, inputs: RankingInputs) -> torch.Tensor:
        with self.policy.adapter_disabled():
            return self.policy.critic_inputs(inputs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> NoReturn:
        """The base model is the reference for good: syncing it to the policy is an error."""
        raise ValueError(
            "the LLM policy's reference is its base model (adapter disabled) and cannot be synced to the policy: "
            "set reference_sync_every=0"
        )


# --------------------------------------------------------------------------------------------------------------------
# The agent.

#: Trainer defaults of the LLM agent: the base model stays the reference, and adapter-sized steps.
LLM_TRAINER_DEFAULTS: dict[str, Any] = {"reference_sync_every": 0, "learning_rate": 1e-4, "kl_coef": 0.02, "critic_prior": False}


class FlexRecLLMAgent(PolicyAgent):
    """An LLM (LoRA) ranking policy trained by FlexRec; it reads the request as text.

    Settings are the fields of :class:`LLMPolicyConfig` (``model``, ``lora_rank``, ...), of
    :class:`~agents.trainer.TrainerConfig` and of :class:`~agents.critic.CriticConfig` prefixed with ``critic_``.
    ``with agent.base_model(): ...`` evaluates the base model (zero-shot) after training, for a "before" row.
    """

    name = "flexrec-llm"
    policy_config_class = LLMPolicyConfig
    trainer_defaults = LLM_TRAINER_DEFAULTS
    rank_on_cpu = False

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        if self.trainer_config.reference_sync_every:
            raise ValueError(
                f"reference_sync_every={self.trainer_config.reference_sync_every}; allowed: 0 for flexrec-llm "
                "(the reference is the base model with the adapter disabled)"
            )

    def build_policy(self, space: gym.spaces.Dict) -> LLMRankingPolicy:
        return LLMRankingPolicy(int(space["candidates"].shape[0]), self.policy_config)  # type: ignore[index]

    def policy_payload(self, policy: RankingPolicy) -> dict[str, Any]:
        assert isinstance(policy, LLMRankingPolicy)
        tiny = None if policy.tiny is None else asdict(policy.tiny)  # the tiny model's weights: self-contained
        return {"num_candidates": policy.num_candidates, "adapter": policy.adapter_state_dict(), "tiny": tiny}

    def restore_policy(self, data: dict[str, Any]) -> LLMRankingPolicy:
        tiny = None if data["tiny"] is None else TinyBase(**data["tiny"])
        policy = LLMRankingPolicy(data["num_candidates"], self.policy_config, tiny=tiny)
        policy.load_adapter_state_dict(data["adapter"])
        return policy.to("cuda") if torch.cuda.is_available() else policy

    @contextlib.contextmanager
    def base_model(self) -> Iterator[FlexRecLLMAgent]:
        """Within this context the agent ranks with the base model (adapter disabled): the zero-shot "before" row."""
        if not isinstance(self.policy, LLMRankingPolicy):
            raise RuntimeError("this flexrec-llm agent has no model yet: call init_policy(), learn() or load() first")
        with self.policy.adapter_disabled():
            yield self
