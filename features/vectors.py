"""Row-wise scores of user and item (or text) vectors: numpy only, shared by the interest model, its feature groups and serving."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

SCORE_BLOCK = 4096  # rows per block of `paired_scores`


def paired_scores(users: np.ndarray, which: np.ndarray, item_vectors: Callable[[Any], np.ndarray],
                  item_ids: Sequence[Any]) -> np.ndarray:
    """(n,) float64: the dot of user vector users[which[i]] and item_ids[i]'s vector (`item_vectors`
    of a slice of `item_ids`: ids, or rows of a matrix), a block of
    rows at a time: two (n, d) gathers of a 200k-row batch are ~600 MB of fresh pages whose first
    touch costs more than the products. A row's product is the same whatever block it is in, so
    online and batch scores agree bit for bit."""
    out = np.empty(len(item_ids), np.float64)
    for lo in range(0, len(item_ids), SCORE_BLOCK):
        hi = lo + SCORE_BLOCK
        out[lo:hi] = np.einsum("nd,nd->n", users[which[lo:hi]], item_vectors(item_ids[lo:hi]))
    return out
