r"""The ``flexrec-llm`` agent: a causal language model with a LoRA adapter ranks the candidates, reading the request.

The prompt (:mod:`flexrec_env.prompts`, the renderer that the text wrapper :mod:`flexrec_env.text` shares) holds
the user's recent history (item titles), the need's instruction as the environment sampled it, and the candidates in
words (title, then popularity, recent views and release as levels), each labelled by an *identifier* that is one
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
A checkpoint ``X.ckpt`` keeps the adapter beside it in ``X-adapter/``, written by peft's ``save_pretrained``
(safetensors, with the tokenizer), so ``PeftModel.from_pretrained(base, "X-adapter")`` serves it without FlexRec.

The model (:mod:`agents.language_models`): a local GGUF file (de-quantized once and cached as safetensors, e.g.
SmolLM2-135M-Instruct from ``flexrec-agent fetch-model``), a local folder or hub name of a causal language model, or
``model="tiny"``, a built-in *smoke-test* model (a 2-layer Llama-style network with random weights, built offline in
seconds): it exercises every code path on a CPU, and learns what a prompt makes easy to read, but it is not a
recommender.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, NoReturn

import gymnasium as gym
import numpy as np
import torch

from agents.flexrec import PolicyAgent
from agents.language_models import TINY_MODEL, TinyBase, is_gguf, load_language_model, resolve_model
from agents.policy import RankingInputs, RankingPolicy
from flexrec_env.prompts import (
    DEFAULT_PROMPT_TEMPLATE,
    LETTERS,
    check_template,
    describe_candidates,
    letter_labels,
    recent_history,
    special_labels,
    user_message,
)
from scenarios import Request
from scenarios.settings import check_fields

logger = logging.getLogger(__name__)

Identifiers = Literal["auto", "letters", "special"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
CriticFeatures = Literal["context", "hidden"]


@dataclass(frozen=True)
class LLMPolicyConfig:
    """The LLM ranking policy's settings (``flexrec-agent train --agent flexrec-llm --set KEY=VALUE`` sets them)."""

    model: str = TINY_MODEL
    """A local GGUF file (de-quantized once and cached, see :mod:`agents.language_models`), a local folder or hub name
    of a causal language model; ``"tiny"``: the built-in smoke-test model (random weights, offline), which checks the
    plumbing and is not a recommender."""
    model_cache: str | None = None
    """Folder of the de-quantized copies of GGUF models (None: ``$FLEXREC_CACHE/models`` or ``~/.cache/flexrec/models``)."""
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
    ``{instruction}``; candidates are written one per line as ``-<identifier>: <description>`` (see
    :mod:`flexrec_env.prompts`)."""
    identifiers: Identifiers = "auto"
    """Candidate identifiers: ``"letters"`` (`` A``, `` B``, ... : must be single tokens, N <= 26), ``"special"``
    (added tokens ``<c0>``, ... with trainable embeddings) or ``"auto"`` (letters when they are single tokens)."""
    dtype: DType = "auto"
    """Weights' dtype; ``"auto"``: bfloat16 on CUDA, float32 on CPU."""
    critic_features: CriticFeatures = "context"
    """What the critic reads per candidate: ``"context"``, the environment's numeric features of the candidate, user
    and need (as the compact policy's critic; it learns from few labels), or ``"hidden"``, the model's last hidden
    state at the candidate's label (detached; one more prompt forward per batch, and it needs many labels)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, slower; teacher forcing then re-runs the prompts)."""

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, list):  # from JSON
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        check_fields(self, {"lora_rank": ">= 1", "lora_alpha": ">= 1", "lora_dropout": "[0, 1)", "max_history": ">= 0"})
        if not self.model:
            raise ValueError("model=''; allowed: a GGUF file, a model folder or hub name, or 'tiny'")
        check_template(self.prompt_template)

    @property
    def torch_dtype(self) -> torch.dtype:
        """The dtype the weights are loaded in."""
        if self.dtype == "auto":
            return torch.bfloat16 if torch.cuda.is_available() else torch.float32
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.dtype]


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

        super().__init__(learns_prior=False)  # the LLM ranks from its prompt alone; the critic only shapes its rewards
        self.config = c = config or LLMPolicyConfig()
        self.num_candidates = num_candidates
        model, self.tokenizer, self.tiny = load_language_model(c.model, c.torch_dtype, c.local_files_only, c.model_cache, tiny)
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
            labels = letter_labels(n) if n <= len(LETTERS) else []
            ids = self._single_token_ids(labels) if labels else None
            if ids is not None:
                return labels, ids, False
            if mode == "letters":
                raise ValueError(
                    f"identifiers='letters' needs N <= 26 labels that are single tokens of {self.config.model!r}'s "
                    f"tokenizer (N={n}); use identifiers='special'"
                )
        labels = special_labels(n)
        self.tokenizer.add_tokens(labels, special_tokens=True)
        ids = self.tokenizer.convert_tokens_to_ids(labels)
        sources = [self.tokenizer(f" {i}", add_special_tokens=False)["input_ids"] for i in range(n)]
        model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        with torch.no_grad():  # distinct starting points: the mean embedding of the label's number, when it has tokens
            for embedding in {model.get_input_embeddings().weight, model.get_output_embeddings().weight}:
                for token, source in zip(ids, sources, strict=True):
                    if source:  # else the random row resize_token_embeddings drew
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
        recent = recent_history(history, self.config.max_history)
        message, chars = user_message(self.config.prompt_template, recent, instruction, candidates, labels)
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
            )
            if message not in text:
                raise ValueError(f"the chat template of {self.config.model!r} rewrites the prompt; its labels cannot be found")
            start = text.index(message)
        else:  # a base model: the message, then the answer's cue
            bos = self.tokenizer.bos_token or ""
            text, start = f"{bos}{message}\nAnswer:", len(bos)
        return text, [start + c for c in chars]

    def prompt(self, request: Request) -> tuple[str, list[int]]:
        """The prompt of a request and the index of each candidate label's last char."""
        return self.render(request.history_titles, request.instruction, describe_candidates(request))

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
        """``(B, N, H)`` per candidate: the numeric context, or the last hidden state at its label (``critic_features``)."""
        if self.config.critic_features == "context":
            return super().critic_inputs(inputs)
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

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor], source: str = "the adapter weights") -> None:
        """Load peft adapter weights (as :meth:`save_adapter` writes them); a ``ValueError`` if they do not fit.

        With tied input and output embeddings peft saves the added identifier rows under both layers, but only the
        input one holds them (the output layer's token adapter reads its ``tied_adapter``): that copy is skipped.
        """
        from peft import set_peft_model_state_dict

        try:
            result = set_peft_model_state_dict(self.lm, state)
        except (KeyError, RuntimeError) as error:  # a missing layer, or one of another shape
            raise ValueError(f"{source} do not fit {self.config.model!r}: {str(error)[:300]}") from None
        tied = tuple(f"{name}." for name, module in self.lm.named_modules() if getattr(module, "tied_adapter", None))
        unexpected = [key for key in getattr(result, "unexpected_keys", []) if not key.startswith(tied)]
        trained = ("lora_", "trainable_tokens_delta")
        missing = getattr(result, "missing_keys", [])
        missing = [key for key in missing if any(t in key for t in trained) and not key.startswith(tied)]
        if unexpected or missing:
            raise ValueError(
                f"{source} do not fit {self.config.model!r}: unexpected keys {unexpected[:3]}, missing keys {missing[:3]}"
            )

    def save_adapter(self, folder: str | Path) -> str:
        """Write the adapter with peft's ``save_pretrained`` (safetensors) and the tokenizer to ``folder``, atomically.

        ``PeftModel.from_pretrained(base, folder)`` loads it on the base model (resized to the folder's tokenizer
        first when identifier tokens were added: their trained rows are in the adapter). Returns the SHA-256 of
        ``adapter_model.safetensors``, which the checkpoint records.
        """
        from agents.checkpoints import write_folder
        from agents.language_models import file_digest

        def write(temporary: Path) -> None:
            self.lm.save_pretrained(temporary, save_embedding_layers=False)  # "auto" would look the model up online
            self.tokenizer.save_pretrained(temporary)

        write_folder(folder, write)
        return file_digest(Path(folder) / ADAPTER_FILE)

    def load_adapter(self, folder: str | Path, sha256: str | None = None) -> None:
        """Load an adapter written by :meth:`save_adapter` (checked against ``sha256`` when given)."""
        from peft.utils import load_peft_weights

        from agents.language_models import file_digest

        folder = Path(folder)
        if not (folder / ADAPTER_FILE).is_file():
            raise FileNotFoundError(f"no adapter at {folder} ({ADAPTER_FILE} is missing); it travels with its checkpoint")
        if sha256 is not None and file_digest(folder / ADAPTER_FILE) != sha256:
            raise ValueError(f"{folder} is not the adapter its checkpoint was saved with (checksum differs)")
        self.load_adapter_state_dict(load_peft_weights(str(folder), device="cpu"), f"the adapter in {folder}")

    def base_identity(self) -> dict[str, Any]:
        """What identifies the base model: its name (for a GGUF file, its cached copy, named by its checksum) and shape."""
        config = self.lm.get_base_model().config
        shape = {key: getattr(config, key, None) for key in ("model_type", "hidden_size", "num_hidden_layers")}
        source = resolve_model(self.config.model, self.config.model_cache) if is_gguf(self.config.model) else None
        return {"model": self.config.model, "gguf_copy": None if source is None else Path(source).name, **shape}


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

ADAPTER_FILE = "adapter_model.safetensors"

#: Trainer defaults of the LLM agent: the base model stays the reference, adapter-sized steps, and batches that fit a
#: CPU's memory with a 135M model (4 requests x 4 rankings per iteration, 2 requests per minibatch, one epoch);
#: on a GPU raise ``requests_per_batch``, ``group_size`` and ``minibatch_requests``.
LLM_TRAINER_DEFAULTS: dict[str, Any] = {
    "reference_sync_every": 0,
    "learning_rate": 1e-4,
    "kl_coef": 0.02,
    "critic_prior": False,
    "requests_per_batch": 4,
    "group_size": 4,
    "minibatch_requests": 2,
    "epochs": 1,
}


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

    @staticmethod
    def adapter_folder(path: Path) -> Path:
        """The adapter folder of checkpoint ``path`` (``runs/x/flexrec-llm.ckpt`` -> ``runs/x/flexrec-llm-adapter/``)."""
        return path.with_name(f"{path.stem}-adapter")

    def policy_payload(self, policy: RankingPolicy, path: Path, rewritten: bool = False) -> dict[str, Any]:
        """The adapter goes beside the checkpoint, in ``X-adapter/``; a training checkpoint's in ``X-adapter-<digest>/``.

        A training checkpoint is rewritten during training: naming its adapter by content keeps the previous pair
        (checkpoint and adapter) whole until the new checkpoint replaces it, whenever the process stops.
        """
        assert isinstance(policy, LLMRankingPolicy)
        folder = self.adapter_folder(path)
        if rewritten:
            staged = folder.with_name(f"{folder.name}-new")
            checksum = policy.save_adapter(staged)
            folder = folder.with_name(f"{folder.name}-{checksum[:16]}")
            if folder.exists():  # the same adapter, already there
                shutil.rmtree(staged)
            else:
                staged.rename(folder)
        else:
            checksum = policy.save_adapter(folder)  # before the checkpoint, which names it and records its checksum
        tiny = None if policy.tiny is None else asdict(policy.tiny)  # the tiny model's weights: self-contained
        adapter = {"folder": folder.name, "sha256": checksum, "base": policy.base_identity()}
        return {"num_candidates": policy.num_candidates, "adapter": adapter, "tiny": tiny}

    def restore_policy(self, data: dict[str, Any], path: Path) -> LLMRankingPolicy:
        tiny = None if data["tiny"] is None else TinyBase(**data["tiny"])
        policy = LLMRankingPolicy(data["num_candidates"], self.policy_config, tiny=tiny)
        adapter, base = data["adapter"], policy.base_identity()
        if base != adapter["base"]:
            raise ValueError(
                f"{path} was trained on {adapter['base']}, but its model now loads as {base} (the model file or folder changed)"
            )
        policy.load_adapter(path.with_name(adapter["folder"]), adapter["sha256"])
        return policy.to("cuda") if torch.cuda.is_available() else policy

    def saved(self, path: Path, payload: dict[str, Any]) -> None:
        """Remove the adapter folders of this checkpoint that it no longer names (a training checkpoint's earlier ones)."""
        keep = payload["adapter"]["folder"]
        for folder in self._adapter_folders(path):
            if folder.name != keep:
                shutil.rmtree(folder, ignore_errors=True)

    def discard_checkpoint(self, path: Path) -> None:
        """Delete checkpoint ``path`` and its adapter folders."""
        super().discard_checkpoint(path)
        for folder in self._adapter_folders(Path(path)):
            shutil.rmtree(folder, ignore_errors=True)

    def _adapter_folders(self, path: Path) -> list[Path]:
        base = self.adapter_folder(Path(path))
        return [f for f in base.parent.glob(f"{base.name}*") if f.is_dir() and (f == base or f.name.startswith(f"{base.name}-"))]

    @contextlib.contextmanager
    def base_model(self) -> Iterator[FlexRecLLMAgent]:
        """Within this context the agent ranks with the base model (adapter disabled): the zero-shot "before" row."""
        if not isinstance(self.policy, LLMRankingPolicy):
            raise RuntimeError("this flexrec-llm agent has no model yet: call init_policy(), learn() or load() first")
        with self.policy.adapter_disabled():
            yield self
