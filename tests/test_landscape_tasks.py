"""The ready tasks and their offline data: splits, Li et al.'s parameter counts, the
Fashion-MNIST files (and the errors when they are missing or broken), the chatterbot-corpus
sentences, and the MiniLM sentence task (pretrained and random)."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch

from repscope.landscape.data import (
    FASHION_MNIST_DIR,
    chatterbot_sentences,
    load_digits_split,
    load_fashion_mnist,
    low_rank_regression,
)
from repscope.landscape.tasks import TaskSpec, n_params, ready_task, task_fingerprint


def _need_fashion():
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        if os.environ.get("REPSCOPE_REQUIRE_DATASETS") == "1":
            pytest.fail("Fashion-MNIST is missing and REPSCOPE_REQUIRE_DATASETS=1 (install "
                        "dataset-fashion-mnist: scripts/ensure_datasets.sh)")
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")


def test_digits_split():
    a, b = load_digits_split(), load_digits_split()
    assert a.x_train.shape == (1348, 1, 8, 8) and a.x_test.shape == (449, 1, 8, 8)
    assert a.x_train.dtype == np.float32 and 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert sorted(np.unique(a.y_train)) == list(range(10))
    other = load_digits_split(seed=1)
    assert not np.array_equal(other.y_train, a.y_train)


def test_fashion_mnist_subsample():
    _need_fashion()
    data = load_fashion_mnist(n_train=300, n_test=100, seed=0)
    assert data.x_train.shape == (300, 1, 28, 28) and data.x_test.shape == (100, 1, 28, 28)
    assert data.y_train.min() >= 0 and data.y_train.max() <= 9
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    again = load_fashion_mnist(n_train=300, n_test=100, seed=0)
    assert np.array_equal(data.x_train, again.x_train)
    assert len(data.classes) == 10


def test_li_et_al_parameter_counts():
    _need_fashion()
    # Li et al. 2018: 784-200-200-10 FC has D = 199,210; LeNet on 28x28 has D = 44,426
    assert n_params(ready_task("fashion-mlp", n_train=100, n_test=20)) == (199210, 6)
    assert n_params(ready_task("fashion-cnn", n_train=100, n_test=20)) == (44426, 10)
    assert n_params(ready_task("digits-mlp"))[0] == 17610
    assert n_params(ready_task("digits-cnn"))[0] == 19754


def test_fashion_mnist_missing_or_broken(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^Fashion-MNIST is not installed: "
                                                r"train-images-idx3-ubyte.gz is missing in .* "
                                                r"Install the Debian package "
                                                r"dataset-fashion-mnist \(apt-get install"):
        load_fashion_mnist(tmp_path)
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    for name in names:
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(np.array([2051, 5, 28, 28], dtype=">i4").tobytes() + bytes(10))
    with pytest.raises(ValueError, match=r"is not a valid IDX file of 60000 items"):
        load_fashion_mnist(tmp_path)


def test_chatterbot_sentences():
    data = chatterbot_sentences(per_class=40)
    assert data.classes == ("ai", "coding", "emotion", "psychology", "trivia")
    assert len(data.train) == 5 * 24 and len(data.test) == 5 * 16
    assert np.bincount(data.y_train).tolist() == [24] * 5
    assert not set(data.train) & set(data.test)
    assert chatterbot_sentences(per_class=40).train == data.train
    with pytest.raises(ValueError, match=r"'categories' parameter of chatterbot_sentences must "
                                         r"be names among \[.*'trivia'\]\. Got 'cooking'"):
        chatterbot_sentences(("ai", "cooking"))
    with pytest.raises(ValueError, match=r"'per_class' parameter of chatterbot_sentences must "
                                         r"be at most \d+ \(the distinct sentences of topic"):
        chatterbot_sentences(per_class=10000)


def test_low_rank_regression_has_the_rank():
    X, y = low_rank_regression(50, 12, 4, seed=3)
    assert X.shape == (50, 12) and y.shape == (50,)
    assert np.linalg.matrix_rank(X) == 4
    s = np.linalg.svd(X, compute_uv=False)
    assert s[3] > 1.0 and s[4] < 1e-9 * s[0]


def test_task_specs_and_fingerprints():
    a = TaskSpec.of("lstsq", {"rank": 3})
    assert a == TaskSpec.of("lstsq", {"rank": 3}) and hash(a) == hash(TaskSpec.of("lstsq",
                                                                                 {"rank": 3}))
    assert task_fingerprint(a) != task_fingerprint(TaskSpec.of("lstsq", {"rank": 4}))
    spec = TaskSpec.of("lstsq", {"training": {"epochs": 2}})
    assert ready_task("lstsq", training={"epochs": 2}).training.epochs == 2
    assert hash(spec)  # nested mappings are frozen, so specs stay hashable


@pytest.mark.slow
def test_minilm_sentence_task_pretrained_and_random():
    from repscope.data.models import load_model
    from repscope.landscape.subspace import Subspace

    task = ready_task("chatterbot-minilm", per_class=8)
    rand = ready_task("chatterbot-minilm-random", per_class=8)
    assert task.said and task.exclude == ("encoder.pooler.*",)
    D, m = n_params(task)
    assert m == 103 and D == 22_565_376 + 384 * 5 + 5  # encoder without pooler, plus the head
    model, r = task.model(0), rand.model(0)
    encoder = load_model("minilm")[0]
    w = "embeddings.word_embeddings.weight"
    assert torch.equal(model.encoder.state_dict()[w], encoder.state_dict()[w])
    assert not torch.equal(r.encoder.state_dict()[w], encoder.state_dict()[w])
    assert torch.equal(task.model(0).head.weight, model.head.weight)  # seeded head
    assert not torch.equal(task.model(1).head.weight, model.head.weight)
    sub = Subspace(model, 300, said=True, exclude=task.exclude, seed=0)
    assert any(n.startswith("head.") for n in sub.names)  # the head is trained in the subspace
    ids, mask, y = (t[:6] for t in task.train)
    out = sub(ids, mask)
    assert out.shape == (6, 5)
    task.loss_fn(out, y).backward()
    assert sub.z.grad.abs().sum() > 0
