"""Offline data sets for the ready landscape tasks; nothing is downloaded.

- scikit-learn's ``digits`` (1,797 8x8 images of handwritten digits, bundled with scikit-learn);
- Fashion-MNIST (Xiao, Rasul, Vollgraf 2017; 70,000 28x28 images, 10 classes) from the Debian
  package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz``; another
  directory through ``root=`` or ``$REPSCOPE_FASHION_MNIST``);
- sentences labelled by topic from the ``chatterbot-corpus`` package (its
  ``chatterbot_corpus/data/english/*.yml`` files: every utterance of a topic's conversations);
- a linear least-squares problem whose design matrix has a chosen rank (the known answer).

Every split is fixed by its own ``seed`` (independent of the training seeds), so all runs of a
task see the same examples.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CHATTERBOT_CATEGORIES",
    "FASHION_MNIST_DIR",
    "ImageSplit",
    "Sentences",
    "chatterbot_sentences",
    "load_digits_split",
    "load_fashion_mnist",
    "low_rank_regression",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
                  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000)}
CHATTERBOT_CATEGORIES = ("ai", "coding", "emotion", "psychology", "trivia")
"Default topics: the chatterbot-corpus files with more than 100 distinct utterances each."


@dataclass(frozen=True)
class ImageSplit:
    """Images as ``(n, 1, side, side)`` float32 in [0, 1] and int64 labels, train and test."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def load_digits_split(*, test_fraction: float = 0.25, seed: int = 0) -> ImageSplit:
    """scikit-learn's digits as 8x8 images scaled to [0, 1], split at random (fixed ``seed``)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    y = digits.target.astype(np.int64)
    train, test = _split(len(y), test_fraction, seed)
    return ImageSplit(x[train], y[train], x[test], y[test], tuple(str(c) for c in range(10)))


def _read_idx(path: Path, magic: int, count: int) -> np.ndarray:
    """One IDX file (big-endian header: magic, sizes), checked against its expected shape."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    head = np.frombuffer(data[:4], dtype=">i4")[0]
    ndim = 3 if magic == 2051 else 1
    dims = np.frombuffer(data[4:4 + 4 * ndim], dtype=">i4")
    body = np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8)
    shape = tuple(int(v) for v in dims)
    if head != magic or shape[0] != count or body.size != int(np.prod(shape)):
        raise ValueError(f"Fashion-MNIST file {str(path)!r} is not a valid IDX file of {count} "
                         f"items (magic {head}, shape {shape}, {body.size} bytes of data); "
                         "reinstall the Debian package dataset-fashion-mnist.")
    return body.reshape(shape)


def load_fashion_mnist(root: str | Path | None = None, *, n_train: int | None = None,
                       n_test: int | None = None, seed: int = 0) -> ImageSplit:
    """Fashion-MNIST from its IDX files, optionally subsampled (``n_train`` / ``n_test`` examples
    drawn without replacement with ``seed``); images scaled to [0, 1].

    The files come from the Debian package ``dataset-fashion-mnist``; ``root`` (or
    ``$REPSCOPE_FASHION_MNIST``) points elsewhere. A missing file is a one-line error.
    """
    from repscope._validate import check_int

    root = Path(root or os.environ.get("REPSCOPE_FASHION_MNIST") or FASHION_MNIST_DIR)
    missing = [n for pair in _FASHION_FILES.values() for n in pair[:2] if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST is not installed: {missing[0]} is missing in {str(root)!r}. Install "
            "the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or "
            "set REPSCOPE_FASHION_MNIST to a directory holding the four *-idx?-ubyte.gz files.")
    rng = np.random.default_rng(seed)
    parts = []
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels, count = _FASHION_FILES[split]
        x = _read_idx(root / images, 2051, count)  # (count, 28, 28) uint8
        y = _read_idx(root / labels, 2049, count)  # (count,)
        if n is not None:
            n = check_int(n, f"n_{split}", "load_fashion_mnist", low=10, high=count,
                          high_inclusive=True)
            keep = np.sort(rng.choice(count, size=n, replace=False))
            x, y = x[keep], y[keep]
        parts.append(((x.astype(np.float32) / 255.0)[:, None], y.astype(np.int64)))
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
    return ImageSplit(parts[0][0], parts[0][1], parts[1][0], parts[1][1], classes)


@dataclass(frozen=True)
class Sentences:
    """Sentences labelled by topic, split into train and test."""

    train: tuple[str, ...]
    y_train: np.ndarray
    test: tuple[str, ...]
    y_test: np.ndarray
    classes: tuple[str, ...]


def _chatterbot_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("chatterbot_corpus")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("The sentence task needs the 'chatterbot-corpus' package "
                                "(pip install chatterbot-corpus).")
    return Path(spec.submodule_search_locations[0]) / "data" / "english"


def chatterbot_sentences(categories: tuple[str, ...] = CHATTERBOT_CATEGORIES, *,
                         per_class: int = 100, test_fraction: float = 0.4,
                         seed: int = 0) -> Sentences:
    """A topic-classification task from chatterbot-corpus: each distinct utterance of a topic's
    conversations is one sentence labelled with the topic (its file name); sentences found in
    two topics are dropped; ``per_class`` are drawn per topic (fixed ``seed``) and split
    per topic into train and test (``test_fraction``)."""
    import yaml

    from repscope._validate import check_int, param_error

    fn = "chatterbot_sentences"
    root = _chatterbot_dir()
    per_class = check_int(per_class, "per_class", fn, low=4)
    found: dict[str, set[str]] = {}
    for cat in categories:
        path = root / f"{cat}.yml"
        if not path.is_file():
            known = sorted(p.stem for p in root.glob("*.yml"))
            raise param_error(fn, "categories", f"names among {known}", cat)
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        found[cat] = {u.strip() for conv in doc.get("conversations", []) for u in conv
                      if isinstance(u, str) and u.strip()}
    seen: dict[str, int] = {}
    for texts in found.values():
        for t in texts:
            seen[t] = seen.get(t, 0) + 1
    rng = np.random.default_rng(seed)
    train, y_train, test, y_test = [], [], [], []
    for label, cat in enumerate(categories):
        texts = sorted(t for t in found[cat] if seen[t] == 1)
        if len(texts) < per_class:
            raise param_error(fn, "per_class", f"at most {len(texts)} (the distinct sentences "
                              f"of topic {cat!r})", per_class)
        pick = [texts[i] for i in rng.choice(len(texts), size=per_class, replace=False)]
        n_test = int(round(per_class * test_fraction))
        test += pick[:n_test]
        y_test += [label] * n_test
        train += pick[n_test:]
        y_train += [label] * (per_class - n_test)
    return Sentences(tuple(train), np.asarray(y_train, dtype=np.int64), tuple(test),
                     np.asarray(y_test, dtype=np.int64), tuple(categories))


def low_rank_regression(n: int = 120, p: int = 24, rank: int = 5, *, noise: float = 0.5,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` with ``X`` (``(n, p)``, float64) of rank exactly ``rank`` (its non-zero singular
    values spread over [1, 3]) and ``y = X w + noise``: least squares on it has a unique optimal
    loss, reached from any start by moving in a ``rank``-dimensional space of parameters."""
    from repscope._validate import check_int

    fn = "low_rank_regression"
    n = check_int(n, "n", fn, low=2)
    p = check_int(p, "p", fn, low=1)
    rank = check_int(rank, "rank", fn, low=1, high=min(n, p), high_inclusive=True)
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((n, rank)))  # (n, r) orthonormal
    V, _ = np.linalg.qr(rng.standard_normal((p, rank)))  # (p, r) orthonormal
    X = (U * np.linspace(3.0, 1.0, rank)) @ V.T * np.sqrt(n)  # (n, p), rank r
    y = X @ rng.standard_normal(p) / np.sqrt(p) + noise * rng.standard_normal(n)  # (n,)
    return X, y
