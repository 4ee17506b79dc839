"""What the model sees and which rows are kept: documents -> token sequences -> selected rows.

Every document is tokenised once in full (its *tokenisation*: the tokenizer's special prefix,
e.g. ``[CLS]`` or ``<s>``, the content tokens, its special suffix, e.g. ``[SEP]``). Documents
longer than ``max_length`` tokens are handled as the user chooses:

- ``"truncate"``: one sequence, the prefix, the first ``max_length - prefix - suffix`` content
  tokens and the suffix, exactly what the tokenizer's own truncation produces. The cut is
  recorded per document (:class:`DocumentTokens`).
- ``"window"``: overlapping windows of at most ``max_length`` tokens, each with the prefix and
  suffix, consecutive windows sharing ``overlap`` content tokens. Every token of the
  tokenisation is stored exactly once: the prefix from the first window, the suffix from the
  last, and each shared content token from the window where it has the most context (the
  earlier window for causal models, whose tokens see only their left; for bidirectional models
  the first half of the overlap from the earlier window and the second half from the later).

Rows are then selected by :class:`TokenSelection` (positions, special tokens; padding never
enters). ``position`` is the token's index in the sequence the model saw (0 = first token,
whatever the padding side; with windows, within the window that gives the row); ``doc_position`` its index in the document's tokenisation; the
character span ``[char_start, char_end)`` locates it in the document text (-1 for special
tokens and for tokenizers without offsets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "LONG_DOCUMENTS",
    "DocumentTokens",
    "Segment",
    "TokenSelection",
    "Tokenization",
    "chunk_plan",
    "plan_documents",
    "segments",
    "template",
]

LongDocuments = Literal["truncate", "window"]
LONG_DOCUMENTS: tuple[str, ...] = ("truncate", "window")


@dataclass(frozen=True)
class TokenSelection:
    """Which real tokens give rows (and count in pooling). Padding never does."""

    exclude_positions: tuple[int, ...] = ()
    """Sequence positions to drop (0 = the first token the model saw, e.g. BOS/[CLS])."""
    exclude_special_tokens: bool = False
    """Drop the tokenizer's special tokens ([CLS], [SEP], <s>, ...; not [UNK])."""

    def keep(self, position: np.ndarray, special: np.ndarray) -> np.ndarray:
        """Boolean mask over tokens with the given sequence positions and special flags."""
        out = np.ones(position.shape, dtype=bool)
        if self.exclude_positions:
            out &= ~np.isin(position, np.asarray(self.exclude_positions))
        if self.exclude_special_tokens:
            out &= ~special
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"exclude_positions": list(self.exclude_positions),
                "exclude_special_tokens": self.exclude_special_tokens, "exclude_padding": True}


@dataclass(frozen=True)
class Template:
    """How a tokenizer frames one sequence: special ids before and after the content."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...] = ()
    suffix_types: tuple[int, ...] = ()
    content_type: int = 0
    specials: frozenset[int] = field(default_factory=frozenset)
    """Special token ids (the unknown token excluded: it stands for real text)."""
    type_ids: bool = False
    """Whether the model takes ``token_type_ids``."""
    offsets: bool = False
    """Whether the tokenizer reports character offsets (fast tokenizers)."""

    @property
    def frame(self) -> int:
        return len(self.prefix) + len(self.suffix)


def _ids(enc: Any) -> list[int]:
    return [int(i) for i in enc["input_ids"]]


def template(tokenizer: Any) -> Template:
    """Find the tokenizer's special prefix and suffix by tokenising one word with and without
    special tokens."""
    probe = "a"
    framed = tokenizer(probe, add_special_tokens=True)
    bare = _ids(tokenizer(probe, add_special_tokens=False))
    ids = _ids(framed)
    at = next((i for i in range(len(ids) - len(bare) + 1) if ids[i:i + len(bare)] == bare), None)
    if not bare or at is None:
        raise ValueError(
            f"Cannot find how {type(tokenizer).__name__} frames a sequence (tokenising 'a' with "
            f"special tokens gave {ids}, without {bare}); repscope needs the content tokens to "
            f"appear unchanged between the special tokens."
        )
    types = [int(t) for t in framed.get("token_type_ids", [0] * len(ids))]
    unk = getattr(tokenizer, "unk_token_id", None)
    specials = frozenset(int(i) for i in getattr(tokenizer, "all_special_ids", []) if i != unk)
    names = getattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"])
    return Template(
        prefix=tuple(ids[:at]), suffix=tuple(ids[at + len(bare):]),
        prefix_types=tuple(types[:at]), suffix_types=tuple(types[at + len(bare):]),
        content_type=types[at], specials=specials, type_ids="token_type_ids" in names,
        offsets=bool(getattr(tokenizer, "is_fast", False)))


@dataclass(frozen=True)
class Tokenization:
    """The full tokenisation of one document (prefix + content + suffix)."""

    input_ids: np.ndarray
    """(n,) int64 token ids."""
    special: np.ndarray
    """(n,) bool: special token (the framing ones and any in the text)."""
    spans: np.ndarray
    """(n, 2) int32 character span in the document, -1 for special tokens / no offsets."""
    token_type_ids: np.ndarray
    """(n,) int64."""
    n_prefix: int
    n_suffix: int

    @property
    def n_content(self) -> int:
        return self.input_ids.shape[0] - self.n_prefix - self.n_suffix


def tokenize_documents(tokenizer: Any, tpl: Template, documents: Sequence[str]) -> list[Tokenization]:
    """Full tokenisations of ``documents`` (no truncation)."""
    kw: dict[str, Any] = {"add_special_tokens": False, "truncation": False, "verbose": False}
    if tpl.offsets:
        kw["return_offsets_mapping"] = True
    enc = tokenizer(list(documents), **kw)
    out = []
    p, s = len(tpl.prefix), len(tpl.suffix)
    for i in range(len(documents)):
        content = np.asarray(enc["input_ids"][i], dtype=np.int64)  # (c,)
        c = content.shape[0]
        ids = np.concatenate([np.asarray(tpl.prefix, np.int64), content,
                              np.asarray(tpl.suffix, np.int64)])  # (n,)
        special = np.isin(ids, np.fromiter(tpl.specials, np.int64, len(tpl.specials)))
        special[:p] = True
        special[p + c:] = True
        spans = np.full((ids.shape[0], 2), -1, dtype=np.int32)  # (n, 2)
        if tpl.offsets and c:
            spans[p:p + c] = np.asarray(enc["offset_mapping"][i], dtype=np.int32).reshape(c, 2)
            spans[special] = -1
        types = np.concatenate([np.asarray(tpl.prefix_types, np.int64),
                                np.full(c, tpl.content_type, np.int64),
                                np.asarray(tpl.suffix_types, np.int64)])
        out.append(Tokenization(ids, special, spans, types, p, s))
    return out


@dataclass(frozen=True)
class Segment:
    """One sequence the model runs: a window of one document."""

    doc_id: int
    window: int
    index: np.ndarray
    """(L,) index of each sequence token in the document's tokenisation."""
    keep: np.ndarray
    """(L,) bool: this window provides the token's row (each token of a document once)."""


def _windows(n_content: int, room: int, mode: str, overlap: int) -> list[tuple[int, int]]:
    """Content ranges ``[start, end)`` of the windows of one document."""
    if mode == "truncate" or n_content <= room:
        return [(0, min(n_content, room))]
    step = room - overlap
    out, start = [], 0
    while True:
        out.append((start, min(start + room, n_content)))
        if start + room >= n_content:
            return out
        start += step


def segments(tok: Tokenization, doc_id: int, *, max_length: int, mode: str, overlap: int,
             causal: bool) -> list[Segment]:
    """The sequences (windows) of one document and which of their tokens give rows."""
    p, s, c = tok.n_prefix, tok.n_suffix, tok.n_content
    room = max_length - p - s
    wins = _windows(c, room, mode, overlap)
    out = []
    for w, (lo, hi) in enumerate(wins):
        index = np.concatenate([np.arange(p), p + np.arange(lo, hi),
                                p + c + np.arange(s)]).astype(np.int64)  # (L,)
        keep = np.ones(index.shape[0], dtype=bool)
        if w > 0:
            keep[:p] = False
            shared = wins[w - 1][1] - lo  # content tokens shared with the previous window
            own_from = shared if causal else (shared + 1) // 2
            keep[p:p + min(own_from, hi - lo)] = False
        if w < len(wins) - 1:
            keep[p + (hi - lo):] = False
            nxt = wins[w + 1][0]
            if not causal:  # the second half of the overlap goes to the next window
                keep[p + (nxt - lo) + (hi - nxt + 1) // 2:p + (hi - lo)] = False
        out.append(Segment(doc_id, w, index, keep))
    return out


@dataclass(frozen=True)
class DocumentTokens:
    """What happened to each document's tokens (one entry per document, in order)."""

    n_tokens: np.ndarray
    """(D,) tokens of the full tokenisation (special tokens included)."""
    n_kept: np.ndarray
    """(D,) tokens that ran through the model (all of them with windows)."""
    n_windows: np.ndarray
    """(D,) sequences run for the document."""
    n_selected: np.ndarray
    """(D,) rows the document gives after the token selection (= tokens pooled)."""

    @property
    def truncated(self) -> np.ndarray:
        """(D,) bool: the document was cut at ``max_length``."""
        return self.n_kept < self.n_tokens

    def summary(self) -> dict[str, Any]:
        """Counts for the manifest."""
        return {
            "n_documents": int(self.n_tokens.shape[0]),
            "n_truncated": int(self.truncated.sum()),
            "n_windowed": int((self.n_windows > 1).sum()),
            "n_windows": int(self.n_windows.sum()),
            "tokens_total": int(self.n_tokens.sum()),
            "tokens_kept": int(self.n_kept.sum()),
            "tokens_cut": int((self.n_tokens - self.n_kept).sum()),
            "rows_selected": int(self.n_selected.sum()),
        }

    def to_lists(self) -> dict[str, list[int]]:
        return {"n_tokens": self.n_tokens.tolist(), "n_kept": self.n_kept.tolist(),
                "n_windows": self.n_windows.tolist(), "n_selected": self.n_selected.tolist()}


def plan_documents(tokenizer: Any, tpl: Template, documents: Sequence[str], *, max_length: int,
                   mode: str, overlap: int, selection: TokenSelection, causal: bool = True,
                   batch: int = 1024) -> DocumentTokens:
    """Tokenise every document once and count its tokens, windows and selected rows
    (``causal``: the window rule, see :func:`segments`)."""
    n = len(documents)
    n_tokens, n_kept = np.zeros(n, np.int64), np.zeros(n, np.int64)
    n_windows, n_selected = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for lo in range(0, n, batch):
        for j, tok in enumerate(tokenize_documents(tokenizer, tpl, documents[lo:lo + batch])):
            d = lo + j
            segs = segments(tok, d, max_length=max_length, mode=mode, overlap=overlap,
                            causal=causal)
            n_tokens[d] = tok.input_ids.shape[0]
            n_windows[d] = len(segs)
            seen = np.unique(np.concatenate([sg.index for sg in segs]))
            n_kept[d] = seen.shape[0]
            for sg in segs:
                pos = np.arange(sg.index.shape[0])
                n_selected[d] += int((sg.keep & selection.keep(pos, tok.special[sg.index])).sum())
    return DocumentTokens(n_tokens, n_kept, n_windows, n_selected)


def chunk_plan(n_windows: np.ndarray, batch_size: int) -> list[tuple[int, int]]:
    """Document ranges ``[lo, hi)`` of the chunks: whole documents packed until their windows
    fill ``batch_size`` sequences (a document with more windows is a chunk of its own, run in
    several forward passes). One window per document gives chunks of ``batch_size`` documents."""
    out, lo, filled = [], 0, 0
    for d, w in enumerate(n_windows.tolist()):
        if filled and filled + w > batch_size:
            out.append((lo, d))
            lo, filled = d, 0
        filled += w
    if filled or lo < n_windows.shape[0]:
        out.append((lo, int(n_windows.shape[0])))
    return [c for c in out if c[1] > c[0]]
