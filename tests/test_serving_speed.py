"""The serving fast paths give the very values of what they replaced (bit for bit)."""

from __future__ import annotations

import numpy as np
import pytest

from features.collaborative import ItemItem, cf_scores, cf_scores_sparse


@pytest.mark.parametrize("seed", range(12))
def test_cf_scores_equal_the_sparse_product_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    weights = (rng.normal(size=(n, n)) * rng.choice([1e-3, 1.0, 1e3])).astype(np.float32)
    weights[rng.random((n, n)) < 0.1] = -0.0  # the sign of zero survives only in the same order
    np.fill_diagonal(weights, 0.0)
    ids = [f"i{k}" for k in range(n + 20)]  # 20 ids outside the fitted vocabulary
    model = ItemItem({f"i{k}": int(j) for k, j in enumerate(rng.permutation(n))}, weights)
    histories = [list(rng.choice(ids, size=int(rng.integers(0, 250)))) for _ in range(15)]
    rows = int(rng.integers(1, 400))
    hist = [histories[int(rng.integers(0, len(histories)))] for _ in range(rows)]
    items = list(rng.choice(ids, size=rows))
    fast, reference = cf_scores(model, hist, items), cf_scores_sparse(model, hist, items)
    assert fast.tobytes() == reference.tobytes()


class TowerStub:
    """An interest scorer's interface with made-up vectors: item vectors per id, a user vector
    from the history's items (order-weighted, so truncation and order matter)."""

    def __init__(self, ids: list[str], seed: int = 0) -> None:
        from types import SimpleNamespace

        rng = np.random.default_rng(seed)
        self.cfg = SimpleNamespace(history_len=4)
        self.vectors = {i: rng.normal(size=8).astype(np.float32) for i in ids}
        self.calls = 0

    @property
    def history_len(self) -> int:
        return self.cfg.history_len

    def item_vectors(self, item_ids: list[str]) -> np.ndarray:
        return np.stack([self.vectors.get(i, np.zeros(8, np.float32)) for i in item_ids]).reshape(len(item_ids), 8)

    def user_vectors(self, histories: list[list[str]]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(histories), 8), np.float32)
        for r, h in enumerate(histories):
            for w, item in enumerate(h[-self.cfg.history_len:], start=1):
                out[r] += w * self.vectors.get(item, np.zeros(8, np.float32))
        return out


def test_cached_user_vectors_score_as_the_interest_scorer_does() -> None:
    from models.interest.scorer import InterestScorer
    from serving.artefacts import UserVectorCache

    ids = [f"i{k}" for k in range(30)]
    stub = TowerStub(ids)
    cache = UserVectorCache(stub, size=5)
    rng = np.random.default_rng(3)
    for _ in range(5):
        histories = [list(rng.choice(ids, size=int(rng.integers(0, 8)))) for _ in range(40)]
        items = list(rng.choice([*ids, "unknown"], size=40))
        expected = InterestScorer.score(stub, histories, items)  # type: ignore[arg-type]  # the scorer's own arithmetic
        assert cache.score(histories, items).tobytes() == expected.tobytes()
        assert cache.user_vectors(histories).tobytes() == stub.user_vectors(histories).tobytes()
    cache.user_vectors([histories[0]])
    calls = stub.calls
    cache.user_vectors([histories[0]] * 3)
    assert stub.calls == calls  # a history asked for lately is cached (5 kept)
    cache.user_vectors([[*histories[0], "i1"]])  # a new click: a new key, computed
    assert stub.calls == calls + 1


def test_the_moment_matrix_is_the_frames_matrix() -> None:
    """What serving and batch scoring score (MomentFeatures.matrix) equals what `Ranker.matrix`
    reads from the frame of the same features, bit for bit (NaN where null)."""
    import polars as pl

    from features.groups import load_all
    from features.registry import MomentContext, moment_features
    from features.state import LogState, micros
    from tests.test_moment import ARTEFACTS, CATALOG, T0, events

    log = events([("u0", "i0", 1_000_000, 1), ("u0", "i2", 2_000_000, 0), ("u1", "i1", 3_000_000, 1),
                  ("u1", "i0", 86_400_000_000, 1), ("u2", "gone", 5_000_000, 1)])
    state = LogState.of(log, CATALOG)
    from datetime import timedelta

    from features.collaborative import fit_ease

    targets = pl.DataFrame({
        "request_id": ["a"] * 4 + ["b"] * 3, "user_id": ["u0"] * 4 + ["stranger"] * 3,
        "item_id": ["i0", "i1", "new", "unheard", "i0", "i2", "i4"],
        "ts": [T0 + timedelta(days=2)] * 7,
    }, schema={"request_id": pl.String, "user_id": pl.String, "item_id": pl.String, "ts": pl.Datetime("us", "UTC")})
    groups = list(load_all().values())
    moment = moment_features(groups, MomentContext(targets, micros(targets["ts"]), state, {**ARTEFACTS, "cf": fit_ease(log)}))
    names = list(moment.specs)
    frame = moment.frame()
    expected = frame.select(pl.col(f).cast(pl.Float64) for f in names).to_numpy()
    got = moment.matrix(names)
    assert got.shape == expected.shape and np.array_equal(got, expected, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(expected))


def test_served_log_writer_loses_no_record_on_close(tmp_path) -> None:
    from serving.eventlog import JsonlLog
    from serving.service import ServedWriter

    log = JsonlLog(tmp_path / "served.jsonl")
    writer = ServedWriter(log, max_pending=4)  # a small queue: requests wait for room, nothing is dropped
    for n in range(200):
        writer.put(lambda n=n: [{"request_id": f"r{n}"}, {"request_id": f"r{n}b"}])
    writer.flush()
    assert len(log.read_all()) == 400
    for n in range(50):
        writer.put(lambda n=n: [{"request_id": f"late{n}"}])
    writer.close()  # what RankingService.stop and interpreter exit do
    writer.put(lambda: [{"request_id": "after"}])  # after close: written in the caller
    ids = [r["request_id"] for r in log.read_all()]
    assert len(ids) == 451 and ids[-1] == "after" and ids[400:450] == [f"late{n}" for n in range(50)]
