"""Token pieces back to readable text, the way their tokenizer decodes them, piece by piece.

Feature pages shade every token of a context by a latent's activation, so they need each piece
as its own span *and* the text a reader would see. :func:`detokenize` returns, for each piece,
the separator that goes before it and its display text:

* WordPiece (BERT, MiniLM): ``##`` continues the previous word (no space); other pieces are
  separated by a space, removed before ``. , ! ?`` as the Hugging Face WordPiece decoder does
  (checked against MiniLM's tokenizer in the tests);
* byte-level BPE (GPT-2, Llama 3, SmolLM): ``Ġ`` is a leading space, ``Ċ`` a newline, and every
  character stands for one byte (GPT-2's byte-to-unicode table), decoded as UTF-8;
* SentencePiece (Llama 2, T5): ``▁`` is a leading space, ``<0x0A>``-style pieces are bytes.

The scheme is recognised from the pieces themselves (a ``Ġ`` or ``▁`` anywhere), so no
tokenizer has to be loaded to render a page.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

__all__ = ["detokenize", "detokenized_text"]

_SPECIAL = re.compile(r"^(\[[A-Z]+\]|<\|?[a-z_]+\|?>|</?s>|<unk>|<pad>)$")
_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_NO_SPACE_BEFORE = (".", ",", "!", "?")  # what the WordPiece decoder's clean-up glues


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's unicode character -> byte table (printable bytes map to themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, n = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


def _split_space(text: str) -> tuple[str, str]:
    stripped = text.lstrip(" ")
    return text[: len(text) - len(stripped)], stripped


def detokenize(tokens: Sequence[str]) -> list[tuple[str, str]]:
    """``(separator, text)`` per piece; ``"".join(s + t for s, t in ...)`` is the decoded text.

    >>> detokenize(["syntax", "##er", "##ror", "here", "."])
    [('', 'syntax'), ('', 'er'), ('', 'ror'), (' ', 'here'), ('', '.')]
    >>> "".join(s + t for s, t in detokenize(["Hello", "Ġworld", "Ċ", "Ġcaf", "Ã©"]))
    'Hello world\\n café'
    >>> detokenize(["Ġæ", "Ĺ", "¥"])  # one character over three pieces: shown on the last
    [(' ', ''), ('', ''), ('', '日')]
    """
    toks = [str(t) for t in tokens]
    if any("Ġ" in t or "Ċ" in t for t in toks):
        return _utf8([_bpe(t) for t in toks])
    if any("▁" in t for t in toks):
        return _utf8([bytes([int(m.group(1), 16)]) if (m := _BYTE.match(t))
                      else t.replace("▁", " ") for t in toks])
    out = []
    for i, t in enumerate(toks):
        if t.startswith("##"):
            out.append(("", t[2:]))
        elif i == 0 or t in _NO_SPACE_BEFORE:
            out.append(("", t))
        else:
            out.append((" ", t))
    return out


def _bpe(token: str) -> bytes | str:
    """A byte-level BPE piece as its bytes (special tokens stay text)."""
    if _SPECIAL.match(token):
        return token
    table = _byte_decoder()
    if not all(c in table for c in token):
        return token
    return bytes(table[c] for c in token)


def _utf8(pieces: list[bytes | str]) -> list[tuple[str, str]]:
    """Decode byte pieces as one UTF-8 stream: a character split over pieces is shown on the
    piece that completes it (the earlier ones show nothing), as ``tokenizer.decode`` writes it."""
    import codecs

    dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = []
    for piece in pieces:
        text = dec.decode(piece) if isinstance(piece, bytes) else dec.decode(b"", final=True) + piece
        out.append(_split_space(text))
    tail = dec.decode(b"", final=True)
    if tail and out:
        out[-1] = (out[-1][0], out[-1][1] + tail)
    return out


def detokenized_text(tokens: Sequence[str]) -> str:
    """The decoded text of ``tokens`` (:func:`detokenize` joined)."""
    return "".join(s + t for s, t in detokenize(tokens))
