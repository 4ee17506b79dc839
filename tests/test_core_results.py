from dataclasses import FrozenInstanceError, dataclass

import numpy as np
import pytest

from repscope import __version__
from repscope.results import Estimate, from_dict, from_json, result_type


@result_type
@dataclass(frozen=True)
class _Sub(Estimate):
    scale: float | None = None


def test_roundtrip_preserves_arrays_tuples_nan_and_subclass():
    e = _Sub("m", float("nan"), 10, stderr=0.1, ci=(0.0, 1.0),
             params={"k": 3, "shape": (1, 2)},
             diagnostics={"local": np.arange(4, dtype=np.float32)}, scale=2.5)
    back = from_json(e.to_json())
    assert type(back) is _Sub and back == e
    assert back.diagnostics["local"].dtype == np.float32
    assert back.params["shape"] == (1, 2)
    assert back.version == __version__
    assert float(Estimate("m", 2.0, 3)) == 2.0


def test_frozen_and_inequality():
    e = Estimate("m", 1.0, 5)
    with pytest.raises(FrozenInstanceError):
        e.value = 2.0  # type: ignore[misc]
    assert e != Estimate("m", 1.5, 5)
    assert e != Estimate("m", 1.0, 5, diagnostics={"x": np.ones(2)})


def test_unknown_type_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown result type 'Nope'"):
        from_dict({"type": "Nope", "measure": "m", "value": 1.0, "n_samples": 1})
