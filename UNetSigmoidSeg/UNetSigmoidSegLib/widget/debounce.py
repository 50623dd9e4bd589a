"""Live threshold while the slider is dragged, at most one re-threshold per ``delay_ms``.

The module owns one single-shot ``QTimer`` of ``delay_ms`` and forwards the slider's signals:

* ``changing(value)`` (``valueIsChanging`` while dragging) → ``True``: start the timer (it is not running);
* ``fire()`` (timer timeout) → the latest value to apply live, without clean-up, or ``None``;
* ``release(value)`` (``valueChanged`` on release, typing, or keyboard) → the value to apply with
  clean-up (stop the timer first), or ``None`` when nothing changed since the last commit.

Throttling, not trailing debounce: while the user keeps dragging the segments follow every
``delay_ms``, and a burst of events costs one re-threshold, always of the newest value.
"""

from typing import Any, Optional


class Debouncer:
    """Qt-free state machine: idle → pending (timer running) → idle; values are any comparable
    objects (a float, or a tuple of per-segment thresholds)."""

    def __init__(self, delay_ms: int = 50) -> None:
        self.delay_ms = int(delay_ms)
        self.pending: Optional[Any] = None
        self.timer_running = False
        self.applied: Optional[Any] = None  # last value put into the segments (live or committed)
        self.committed: Optional[Any] = None  # last value applied with clean-up

    def changing(self, value: Any) -> bool:
        """A new value while dragging; returns True when the caller must start the timer."""
        self.pending = value
        if self.timer_running:
            return False
        self.timer_running = True
        return True

    def fire(self) -> Optional[Any]:
        """The timer ran out: the value to apply live (None if it is already shown)."""
        self.timer_running = False
        value, self.pending = self.pending, None
        if value is None or value == self.applied:
            return None
        self.applied = value
        return value

    def release(self, value: Any) -> Optional[Any]:
        """The final value (slider released or typed): the caller stops the timer and applies it with clean-up."""
        self.timer_running = False
        self.pending = None
        if value == self.committed and value == self.applied:
            return None
        self.applied = self.committed = value
        return value

    def reset(self, value: Optional[Any] = None) -> None:
        """Forget the history (new result shown, scene closed); ``value`` is what the segments show now."""
        self.pending, self.timer_running = None, False
        self.applied = self.committed = value
