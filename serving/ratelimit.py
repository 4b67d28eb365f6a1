"""Per-key and per-user rate limits for /v1/rank and /v1/feedback (429 with Retry-After).

A token bucket per key in its GCRA form: one float per key (the moment its bucket would be full
again), so a check is O(1), the wait is exact and an idle key costs nothing. pyrate-limiter (in
the venv through schemathesis) keeps every admitted request per bucket and needs a factory per
key and a leak thread for that; this is the small piece we need of it.

Limits hold per replica: with N replicas a client gets at most N times the configured rate.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass


class RateLimited(Exception):
    """Over a limit: retry after `retry_after` seconds; `loc` names what was limited."""

    def __init__(self, loc: list[str | int], message: str, retry_after: float) -> None:
        super().__init__(message)
        self.loc, self.message, self.retry_after = loc, message, retry_after

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))  # whole seconds, never 0 (a client would spin)


class OverCapacity(Exception):
    """One call costs more than a bucket ever holds: waiting will not help, splitting will."""

    def __init__(self, loc: list[str | int], message: str) -> None:
        super().__init__(message)
        self.loc, self.message = loc, message


@dataclass(frozen=True)
class Rate:
    per_second: float  # 0 = no limit
    burst_seconds: float  # the bucket holds this many seconds of the rate

    @property
    def capacity(self) -> float:
        return self.per_second * self.burst_seconds


class Buckets:
    """Token buckets by key, all with one rate. Thread safe; forgets keys whose bucket is full."""

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self.rate, self.clock, self.max_keys = rate, clock, max_keys
        self._full_at: dict[str, float] = {}  # key -> when its bucket is full again (GCRA's TAT)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._full_at)

    def take(self, costs: dict[str, float]) -> float:
        """Take `costs[key]` tokens from each key's bucket, all or none. Returns 0.0 when taken,
        else the seconds until every bucket can pay (nothing is taken then)."""
        with self._lock:
            wait, planned = self.plan(costs)
            if wait <= 0:
                self.commit(planned)
            return wait

    def plan(self, costs: dict[str, float]) -> tuple[float, dict[str, float]]:
        """(seconds to wait, 0 if none; the buckets' states after paying): nothing taken yet."""
        if self.rate.per_second <= 0:
            return 0.0, {}
        now = self.clock()
        planned, wait = {}, 0.0
        for key, cost in costs.items():
            full_at = max(self._full_at.get(key, now), now) + cost / self.rate.per_second
            planned[key] = full_at
            wait = max(wait, full_at - now - self.rate.burst_seconds)
        return (wait if wait > 1e-9 else 0.0), planned  # 1e-9: sums of 1/rate are not exact

    def commit(self, planned: dict[str, float]) -> None:
        self._full_at.update(planned)
        if len(self._full_at) > self.max_keys:  # drop full buckets: the same as never seen
            now = self.clock()
            self._full_at = {k: t for k, t in self._full_at.items() if t > now}


@dataclass(frozen=True)
class Limits:
    """The configured rates (ServeSettings): requests/s for /v1/rank, events/s for /v1/feedback."""

    rank_per_key: float
    rank_per_user: float
    feedback_per_key: float
    feedback_per_user: float
    burst_seconds: float


class RateLimiter:
    """The four limits; a call pays its key's and its users' buckets together or not at all (a
    user over its limit does not use up its key's budget)."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        def buckets(per_second: float) -> Buckets:
            return Buckets(Rate(per_second, limits.burst_seconds), clock)

        self.limits = limits
        self.rank_keys, self.rank_users = buckets(limits.rank_per_key), buckets(limits.rank_per_user)
        self.feedback_keys, self.feedback_users = buckets(limits.feedback_per_key), buckets(limits.feedback_per_user)
        self._lock = threading.Lock()

    def rank(self, key: str, user_id: str) -> None:
        self._take("/v1/rank requests", [
            (self.rank_keys, {key: 1.0}, ["header", "x-api-key"], "this API key"),
            (self.rank_users, {user_id: 1.0}, ["body", "user_id"], f"user {user_id!r}"),
        ])

    def feedback(self, key: str, user_ids: Iterable[str]) -> None:
        """One token per event: the events are what moves the counters."""
        per_user: dict[str, float] = {}
        for user in user_ids:
            per_user[user] = per_user.get(user, 0.0) + 1.0
        users = ", ".join(repr(u) for u in sorted(per_user)[:3]) + (" ..." if len(per_user) > 3 else "")
        self._take("feedback events", [
            (self.feedback_keys, {key: sum(per_user.values())}, ["header", "x-api-key"], "this API key"),
            (self.feedback_users, per_user, ["body", "events"], f"user {users}"),
        ])

    def _take(self, unit: str, checks: list[tuple[Buckets, dict[str, float], list[str | int], str]]) -> None:
        for buckets, costs, loc, _ in checks:
            worst = max(costs, key=lambda k: costs[k])
            if buckets.rate.per_second > 0 and costs[worst] > buckets.rate.capacity:
                raise OverCapacity(loc, f"{costs[worst]:g} {unit} in one call for {worst!r}; at most "
                                        f"{buckets.rate.capacity:g} fit its rate limit: split the call")
        with self._lock:
            plans = [(buckets.plan(costs), buckets, loc, whom) for buckets, costs, loc, whom in checks]
            for (wait, _), buckets, loc, whom in plans:
                if wait > 0:
                    rate = buckets.rate
                    raise RateLimited(loc, f"rate limit: {unit} for {whom} over {rate.per_second:g}/s "
                                           f"(bursts of {rate.capacity:g}); retry after {wait:.1f} s", wait)
            for (_, planned), buckets, _, _ in plans:
                buckets.commit(planned)
