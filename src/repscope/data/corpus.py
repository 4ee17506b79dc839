"""Text corpora that need no download: the bundled default and local files.

``load_corpus("pydoc")`` (the default) is Python's own documentation: the 79 topics of
``pydoc_data.topics`` (the text ``help("topic")`` shows, about 465,000 characters), shipped with
every CPython. Each topic is split at blank lines into paragraphs; consecutive paragraphs of a
topic are joined until a document holds at least ``MIN_CHARS`` characters, so every document
is paragraph-sized real English and code. The split is deterministic; the corpus hash pins the
exact text (it changes with the Python version that ships the topics).

Local files: ``.txt`` (one document per non-empty line) and ``.jsonl`` (one JSON object per
line with a ``"text"`` field, or a bare JSON string).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from repscope._io import read_utf8

__all__ = ["Corpus", "MIN_CHARS", "load_corpus"]

#: a pydoc document is at least this many characters (paragraphs are joined until it is)
MIN_CHARS = 400


@dataclass(frozen=True)
class Corpus:
    """A list of documents with a stable identity."""

    id: str
    """``"pydoc"`` or ``"file:<name>"``."""
    documents: list[str]
    """The documents, in order; row metadata refers to them by index (``doc_id``)."""
    hash: str
    """sha256 of the documents (length-prefixed, so boundaries count)."""

    def __len__(self) -> int:
        return len(self.documents)


def _hash_documents(documents: list[str]) -> str:
    h = hashlib.sha256()
    for doc in documents:
        raw = doc.encode("utf-8")
        h.update(len(raw).to_bytes(8, "little"))
        h.update(raw)
    return h.hexdigest()


def _split_topic(text: str, min_chars: int) -> list[str]:
    paragraphs = [p.strip("\n") for p in re.split(r"\n\s*\n", text)]
    paragraphs = [p for p in paragraphs if p.strip()]
    docs: list[str] = []
    current: list[str] = []
    size = 0
    for p in paragraphs:
        current.append(p)
        size += len(p)
        if size >= min_chars:
            docs.append("\n\n".join(current))
            current, size = [], 0
    if current:  # a short tail joins the previous document of the same topic
        if docs:
            docs[-1] = docs[-1] + "\n\n" + "\n\n".join(current)
        else:
            docs.append("\n\n".join(current))
    return docs


def _pydoc_documents() -> list[str]:
    from pydoc_data.topics import topics

    docs: list[str] = []
    for name in sorted(topics):
        docs.extend(_split_topic(topics[name], MIN_CHARS))
    return docs


def _file_documents(path: Path) -> list[str]:
    if path.suffix == ".txt":
        return [line.strip() for line in read_utf8(path, what="Corpus file").splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        docs = []
        for i, line in enumerate(read_utf8(path, what="Corpus file").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"Corpus file {str(path)!r}, line {i}: invalid JSON ({exc}).") from None
            text = item.get("text") if isinstance(item, dict) else item
            if not isinstance(text, str):
                raise ValueError(
                    f"Corpus file {str(path)!r}, line {i}: expected a JSON string or an object "
                    f"with a 'text' string; got {line[:80]!r}."
                )
            if text.strip():
                docs.append(text)
        return docs
    raise ValueError(
        f"Corpus file {str(path)!r} must end in .txt (one document per line) or .jsonl "
        f"(objects with a 'text' field)."
    )


def load_corpus(name_or_path: str | Path = "pydoc") -> Corpus:
    """Load the bundled ``"pydoc"`` corpus or a local ``.txt`` / ``.jsonl`` file.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for an unsupported
    format or a corpus without any non-empty document.
    """
    if str(name_or_path) == "pydoc":
        corpus_id, documents = "pydoc", _pydoc_documents()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"Corpus {str(name_or_path)!r} is neither the bundled 'pydoc' corpus nor an "
                f"existing .txt/.jsonl file."
            )
        corpus_id, documents = f"file:{path.name}", _file_documents(path)
    if not documents:
        raise ValueError(f"Corpus {str(name_or_path)!r} is empty: it holds no non-empty document.")
    return Corpus(id=corpus_id, documents=documents, hash=_hash_documents(documents))
