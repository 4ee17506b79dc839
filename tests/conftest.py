"""Shared fixtures. Tests never touch the network: models load offline."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# rich wraps console output at the terminal width; a wide fixed width keeps assertions on CLI
# output independent of the temporary paths' lengths.
os.environ.setdefault("COLUMNS", "200")
# pytest-xdist runs one worker per core: one BLAS/torch thread each avoids oversubscription,
# which slows small torch ops 5-30x on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
