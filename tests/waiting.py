"""Every wait in a test has a deadline and says what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], seconds: float, what: str, poll: float = 0.05) -> None:
    """Poll `condition` until it is true; past `seconds`, fail naming what never happened."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds:g} s for {what}")
        time.sleep(poll)
