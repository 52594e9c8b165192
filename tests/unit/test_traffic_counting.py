"""The optimizers' payload counter forwards a compressed collective's per-call protocol to the codec
it wraps: a refused call restores error feedback's residuals, and bindings still refuse a change."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
from mpicoll.compression import ErrorFeedback, get
from mpicoll.errors import ArgumentError
from mpicoll.torch.optim.traffic import Counting


def test_snapshot_restores_the_wrapped_residuals_and_counts():
    counting = Counting(ErrorFeedback(get("sign")))
    x = np.linspace(-1, 1, 1000, dtype=np.float32)
    counting.compress(x, key="k")
    before = counting.inner.residual("k").copy()
    snapshot = counting.snapshot()
    counting.compress(x * 3, key="k")
    assert not np.array_equal(counting.inner.residual("k"), before)
    counting.restore(snapshot)
    assert np.array_equal(counting.inner.residual("k"), before)
    assert counting.take() == {"k": counting.payload_nbytes(x)}  # the refused call's payload is not counted


def test_bind_reaches_the_wrapped_error_feedback():
    counting = Counting(ErrorFeedback(get("sign")))
    counting.bind("k", (10,), 4)
    with pytest.raises(ArgumentError):
        counting.bind("k", (10,), 8)
