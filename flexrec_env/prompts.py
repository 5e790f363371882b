"""A request in words: the one renderer of the prompt that LLM agents read.

The text wrapper (:class:`flexrec_env.text.TextRankingEnv`) shows this text as its observation and the
``flexrec-llm`` agent (:mod:`agents.llm`) puts it in its chat prompt, so both read the same words.

A pretrained model reads words, not feature vectors, so each candidate is written as its title (with the year and
genre where the scenario has them) followed by what the scenario knows of it at the request time, as levels:

    -A: Fish Tank (2009) [Drama]; popularity: high; recent views: very low; release: new

The levels come from the candidate's percentiles in the catalogue (all-time popularity, popularity in the recent
window, release recency): ``very high`` / ``high`` / ``low`` / ``very low`` for the top fifth, the rest of the upper
half, the lower half down to the bottom fifth, and the bottom fifth (release: ``very new`` ... ``very old``). They
are features every ranker sees; the need's relevance (and the user's interest) is never written: the model must read
the instruction and the user's history to rank.

Each candidate carries a *label*: ``" A"``, ``" B"``, ... (:func:`letter_labels`, up to 26) or ``"<c0>"``,
``"<c1>"``, ... (:func:`special_labels`). A letter label keeps its leading space in the prompt (``-<label>:``), so
that it is the same token as in an answer that writes ``" C A F"``.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from scenarios import Request

DEFAULT_PROMPT_TEMPLATE = (
    "You recommend items to a user. Items the user interacted with recently, oldest first:\n{history}\n\n"
    "The user asks: {instruction}\n\n"
    "Candidates:\n{candidates}\n\n"
    "Rank the candidates for this request, best first, by their labels."
)
#: Placeholders a prompt template may use (``{candidates}`` is required, once).
PROMPT_FIELDS = ("history", "instruction", "candidates")
#: Level words of a percentile p, highest first: p >= 0.8, p >= 0.5, p >= 0.2, else.
LEVELS = ("very high", "high", "low", "very low")
RELEASE_LEVELS = ("very new", "new", "old", "very old")
THRESHOLDS = (0.8, 0.5, 0.2)
LETTERS = string.ascii_uppercase


# --------------------------------------------------------------------------------------------------------------------
# Labels.


def letter_labels(n: int) -> list[str]:
    """Labels ``" A"``, ``" B"``, ... of ``n <= 26`` candidates (with the leading space they have in an answer).

    >>> letter_labels(3)
    [' A', ' B', ' C']
    """
    if not 0 <= n <= len(LETTERS):
        raise ValueError(f"{n} candidates cannot have letter labels; allowed: at most {len(LETTERS)} (or special labels)")
    return [f" {letter}" for letter in LETTERS[:n]]


def special_labels(n: int) -> list[str]:
    """Labels ``"<c0>"``, ``"<c1>"``, ... of ``n`` candidates.

    >>> special_labels(2)
    ['<c0>', '<c1>']
    """
    return [f"<c{i}>" for i in range(n)]


# --------------------------------------------------------------------------------------------------------------------
# Candidates in words.


def level(percentile: float, words: Sequence[str] = LEVELS) -> str:
    """The word for a percentile in [0, 1]: ``words[0]`` for the top fifth, ... ``words[3]`` for the bottom fifth.

    >>> level(0.95), level(0.5), level(0.3), level(0.1, RELEASE_LEVELS)
    ('very high', 'high', 'low', 'very old')
    """
    return words[sum(percentile < t for t in THRESHOLDS)]


def describe_item(title: str, popularity: str, recent_views: str, release: str) -> str:
    """An item in words from its title and its three level words."""
    return f"{title}; popularity: {popularity}; recent views: {recent_views}; release: {release}"


def describe_candidate(request: Request, index: int) -> str:
    """Candidate ``index`` of ``request`` in words: its title, then its popularity, recent views and release as levels."""
    return describe_item(
        request.candidate_titles[index],
        level(float(request.popularity[index])),
        level(float(request.recent_popularity[index])),
        level(float(request.freshness[index]), RELEASE_LEVELS),
    )


def describe_candidates(request: Request) -> list[str]:
    """Every candidate of ``request`` in words (see :func:`describe_candidate`)."""
    return [describe_candidate(request, i) for i in range(len(request.candidates))]


# --------------------------------------------------------------------------------------------------------------------
# The message.


def template_fields(template: str) -> list[str]:
    """The placeholders of a ``str.format`` template, in order."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def check_template(template: str) -> None:
    """A ``ValueError`` unless ``template`` has ``{candidates}`` once and no placeholder outside :data:`PROMPT_FIELDS`."""
    names = template_fields(template)
    if names.count("candidates") != 1 or set(names) - set(PROMPT_FIELDS):
        raise ValueError(
            f"prompt_template has the fields {names}; allowed: {list(PROMPT_FIELDS)}, with {{candidates}} exactly once"
        )


def recent_history(history: Sequence[str], max_history: int) -> list[str]:
    """The last ``max_history`` items of ``history`` (none when ``max_history`` is 0)."""
    return list(history)[-max_history:] if max_history else []


def user_message(
    template: str, history: Sequence[str], instruction: str, descriptions: Sequence[str], labels: Sequence[str]
) -> tuple[str, list[int]]:
    """The user message and the index of each label's last character in it.

    Candidates are written one per line as ``-<label>: <description>`` (a label such as ``" A"`` keeps its space, so
    it is the same token as in the answer); the history one per line as ``- <title>``, or ``(none)``.
    """
    lines, chars, offset = [], [], 0
    for label, description in zip(labels, descriptions, strict=True):
        chars.append(offset + len(label))  # "-" then the label: its last char
        lines.append(f"-{label}: {description}")
        offset += len(lines[-1]) + 1
    history_text = "\n".join(f"- {title}" for title in history) or "(none)"
    sentinel = "\x00"
    message = template.format(history=history_text, instruction=instruction, candidates=sentinel)
    start = message.index(sentinel)
    return message.replace(sentinel, "\n".join(lines)), [start + c for c in chars]


def placed_section(placed_labels: Sequence[str], placed_titles: Sequence[str], list_length: int) -> str:
    """The items placed so far, to append to the message (``""`` when none is).

    >>> print(placed_section([" C", " A"], ["Up", "Heat"], 3))
    <BLANKLINE>
    <BLANKLINE>
    Placed so far, best first:
    1. C: Up
    2. A: Heat
    Positions left: 1 of 3. Write the labels of the next candidates, best first.
    """
    if not placed_labels:
        return ""
    pairs = zip(placed_labels, placed_titles, strict=True)
    lines = [f"{p}. {label.strip()}: {title}" for p, (label, title) in enumerate(pairs, 1)]
    left = list_length - len(lines)
    tail = "Write the labels of the next candidates, best first." if left else "The list is complete."
    return "\n\nPlaced so far, best first:\n" + "\n".join(lines) + f"\nPositions left: {left} of {list_length}. {tail}"


def request_prompt(
    request: Request,
    labels: Sequence[str],
    template: str = DEFAULT_PROMPT_TEMPLATE,
    max_history: int = 10,
    placed: Sequence[int] = (),
    list_length: int = 0,
) -> str:
    """The prompt of ``request``: the user message, then the candidates ``placed`` so far (indices) out of ``list_length``.

    With nothing placed it is the user message of the ``flexrec-llm`` agent for the same request.
    """
    history = recent_history(request.history_titles, max_history)
    message, _ = user_message(template, history, request.instruction, describe_candidates(request), labels)
    titles = [request.candidate_titles[i] for i in placed]
    return message + placed_section([labels[i] for i in placed], titles, list_length)
