"""How a command-line run ends: exit codes, signals, and the log of an unexpected error.

Exit codes: 0 ok; 2 the user can fix it (one paragraph: ``error:`` what is wrong, ``fix:`` what to do);
1 an unexpected exception — a bug, whose traceback goes to a log file the message names; 128 + the signal
number when stopped by Ctrl-C (130), SIGTERM (143) or a closed terminal (SIGHUP, 129).

``signals_as_exceptions`` turns SIGINT, SIGTERM and SIGHUP into an ``Interrupted`` exception in the main
thread (a ``KeyboardInterrupt``, so every ``finally`` and every Ctrl-C handler runs): temporary folders are
removed, a worker job is cancelled and the worker stopped, and nothing partial is written. Later signals
during that clean-up are ignored.
"""

import contextlib
import datetime
import os
import signal
import sys
import threading
import traceback
from typing import Any, Dict, Iterator, Optional

EXIT_OK = 0
EXIT_BUG = 1
EXIT_USER = 2
SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
LOG_DIR_ENV = "UNETSEG_LOG_DIR"


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; ``exit_code`` is 128 + its number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """Within the block, the first SIGINT / SIGTERM / SIGHUP raises ``Interrupted`` in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = {"signum": None}

    def handler(signum: int, _frame: Any) -> None:
        if fired["signum"] is not None:
            return  # already stopping: let the clean-up finish
        fired["signum"] = signum
        raise Interrupted(signum)

    previous: Dict[int, Any] = {}
    for signum in SIGNALS:
        try:
            previous[signum] = signal.signal(signum, handler)
        except (OSError, ValueError):
            pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            with contextlib.suppress(OSError, ValueError):
                signal.signal(signum, old)


def log_dir() -> str:
    """Where bug logs go: ``$UNETSEG_LOG_DIR``, else the user's cache folder (``~/.cache/unetsigmoidseg``)."""
    if os.environ.get(LOG_DIR_ENV):
        return os.environ[LOG_DIR_ENV]
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "unetsigmoidseg")


def write_bug_log(exc: BaseException, argv: Optional[list] = None) -> Optional[str]:
    """Write the traceback of ``exc`` (and the command line) to a new log file; its path, or None if that failed."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        folder = log_dir()
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"error-{stamp}-{os.getpid()}.log")
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"unetsigmoidseg {' '.join(argv or sys.argv[1:])}\n\n")
            f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return path
    except OSError:
        return None


def say(text: str) -> None:
    """Print to stderr; a closed terminal (SIGHUP) must not turn the exit into a new error."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr)
        sys.stderr.flush()


def report_bug(exc: BaseException, argv: Optional[list] = None) -> int:
    """The exit-1 message for an unexpected exception: a bug, where its traceback is."""
    path = write_bug_log(exc, argv)
    where = f"The full traceback is in {path}" if path else "The traceback follows"
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    say(
        f"error: unexpected {type(exc).__name__}: {first}\n"
        f"This is a bug in UNetSigmoidSeg, not a problem with your files. {where}; please report it with that log."
    )
    if path is None:
        say("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return EXIT_BUG
