"""Per-stage wall times of one request, for `recsys bench serve --profile` and
benchmarks/serve_profile.py.

The serving path marks its stages with `with stage("name"):`. Nothing is recorded unless a caller
wraps the work in `recording()`: a mark then costs one ContextVar read, so the marks stay in the
production path and the profile measures the code that serves, not a copy of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from time import perf_counter
from types import TracebackType

_times: ContextVar[dict[str, float] | None] = ContextVar("recsys_stage_times", default=None)


class stage:
    """`with stage("features/interest"):` adds the block's seconds to the recording, if any."""

    __slots__ = ("name", "times", "start")

    def __init__(self, name: str) -> None:
        self.name = name
        self.times: dict[str, float] | None = None
        self.start = 0.0

    def __enter__(self) -> stage:
        self.times = _times.get()
        if self.times is not None:
            self.start = perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if self.times is not None:
            self.times[self.name] = self.times.get(self.name, 0.0) + perf_counter() - self.start


@contextmanager
def recording() -> Iterator[dict[str, float]]:
    """Seconds per stage name of the work inside the block (stages that ran several times add up)."""
    times: dict[str, float] = {}
    token = _times.set(times)
    try:
        yield times
    finally:
        _times.reset(token)
