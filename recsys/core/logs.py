"""What a person reads: one line per stage on the console, the libraries' chatter in a log file.

The CLI sets logging up once (`setup`). Inside `quiet(log_path, ...)` (`recsys train` writes
RUN_DIR/train.log) everything Ray, HuggingFace, MLflow, tqdm, Python warnings and C/C++ code
print goes to the log file: file descriptors 1 and 2 point there, so Ray's worker output (Ray
forwards it to the driver's stdout/stderr) and native libraries land there too. The console keeps
the stage lines (the `recsys.progress` logger), this project's warnings and every error, and the
command's own tables. With `-v` nothing is hidden: the libraries print to the console as they
always did, at DEBUG, and the log file still gets every log record.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from recsys.core.errors import RecsysInputError

PROGRESS = "recsys.progress"
progress = logging.getLogger(PROGRESS)
OWN_PACKAGES = ("recsys", "features", "models", "serving")
STAGE_START = "stage_start"  # `extra` key of a progress record that says a stage has begun
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def is_progress(record: logging.LogRecord) -> bool:
    return record.name == PROGRESS or record.name.startswith(PROGRESS + ".")


class ConsoleFilter(logging.Filter):
    """Quiet console: this project's warnings and errors, and errors from any library."""

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name.split(".")[0] in OWN_PACKAGES
        return record.levelno >= (logging.WARNING if own else logging.ERROR)


class NotProgress(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not is_progress(record)


class ProgressHandler(logging.Handler):
    """Stage lines as plain text (no time or level columns); while a stage runs, a one-line
    transient status on a terminal ("interest: running… 45 s"), erased when the stage's line comes."""

    def __init__(self, console: Any) -> None:
        super().__init__(logging.INFO)
        self.console = console
        self.status: Any = None
        self.started = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stage = getattr(record, STAGE_START, None)
            if stage is not None:
                self._running(str(stage))
                return
            self.stop()
            self.console.print(record.getMessage(), highlight=False, markup=False, soft_wrap=True)
        except Exception:  # a console that cannot print must not break the pipeline
            self.handleError(record)

    def _running(self, stage: str) -> None:
        if not self.console.is_terminal:
            return
        self.stop()
        self.status = self.console.status(f"{stage}: running…", spinner="dots")
        self.status.start()

    def stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


class _State:
    verbose = False
    console_handler: logging.Handler | None = None
    progress_handler: ProgressHandler | None = None


def setup(verbose: bool, console: Any) -> None:
    """Root logging for the CLI: log records on `console` (rich), stage lines plain."""
    from rich.logging import RichHandler

    root = logging.getLogger()
    for handler in (_State.console_handler, _State.progress_handler):
        if handler is not None:
            root.removeHandler(handler)
    rich_handler = RichHandler(console=console, show_path=False)
    rich_handler.addFilter(NotProgress())
    progress_handler = ProgressHandler(console)
    progress_handler.addFilter(lambda r: is_progress(r))
    root.addHandler(rich_handler)
    root.addHandler(progress_handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    _State.verbose, _State.console_handler, _State.progress_handler = verbose, rich_handler, progress_handler


def _terminal_copy(stream: Any) -> IO[str] | None:
    """A file on the terminal (or pipe) behind `stream`, still writing there once fds 1/2 move;
    None when `stream` is no real file (a test runner's buffer: keep writing to it)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return os.fdopen(os.dup(fd), "w", encoding=getattr(stream, "encoding", None) or "utf-8", errors="replace",
                     buffering=1)


@contextmanager
def quiet(log_path: Path | None, *consoles: Any, what: str = "details") -> Iterator[Path | None]:
    """Route the libraries' output to `log_path` (appended) while the block runs; `consoles` (rich
    Consoles of the CLI) keep printing to the terminal. `log_path` None: only the console filter."""
    handler = _State.console_handler
    filt = None if _State.verbose or handler is None else ConsoleFilter()
    if filt is not None:
        handler.addFilter(filt)  # type: ignore[union-attr]
    file_handler, saved, swapped = None, {}, []
    if log_path is not None:
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a", encoding="utf-8") as header:
            header.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} recsys {' '.join(sys.argv[1:])}\n")
        file_handler = logging.FileHandler(log_path, encoding="utf-8")
        file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        file_handler.setLevel(logging.DEBUG)
        logging.getLogger().addHandler(file_handler)
        if not _State.verbose:
            logging.captureWarnings(True)
            for console in consoles:
                copy = _terminal_copy(console.file)
                if copy is not None:
                    swapped.append((console, console._file, copy))
                    console.file = copy
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            target = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            for fd in (1, 2):
                saved[fd] = os.dup(fd)
                os.dup2(target, fd)
            os.close(target)
    failed = False
    try:
        yield log_path
    except RecsysInputError:  # one clear line follows; the log adds nothing
        raise
    except BaseException:
        failed = True
        raise
    finally:
        if _State.progress_handler is not None:
            _State.progress_handler.stop()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        for fd, saved_fd in saved.items():
            os.dup2(saved_fd, fd)
            os.close(saved_fd)
        for console, original, copy in swapped:
            console.file = original
            copy.close()
        if saved:
            logging.captureWarnings(False)
        if file_handler is not None:
            logging.getLogger().removeHandler(file_handler)
            file_handler.close()
        if filt is not None:
            handler.removeFilter(filt)  # type: ignore[union-attr]
        if failed and log_path is not None and consoles:
            consoles[0].print(f"{what}: {log_path}", highlight=False, markup=False, soft_wrap=True)


def seconds_text(seconds: float | None) -> str:
    """47 s, 2.3 s, 4 min 12 s, 1 h 3 min."""
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
