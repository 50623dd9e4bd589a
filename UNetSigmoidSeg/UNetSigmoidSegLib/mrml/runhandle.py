"""``RunHandle``: a segmentation the logic started — ``poll()`` from the panel's timer, ``cancel()``, or ``wait()``.

It drains its job's typed messages into the caller's callbacks and hands the result to the logic (``_apply``), which
puts it into the scene; it never touches the scene itself.
"""

from typing import Any, Callable, Dict, Optional

from ..contract.result import SegmentResult
from ..contract.runner import deliver
from ..errors import CancelledError


class RunHandle:
    """A running segmentation: ``poll()`` from a timer, ``cancel()``, or ``wait()`` to block."""

    def __init__(
        self,
        logic: Any,  # the UNetSigmoidSegLogic that started it
        job: Any,
        request: Dict[str, Any],
        on_progress,
        on_finished,
        on_error,
        on_log=None,
    ) -> None:
        self.logic = logic
        self.job = job
        self.request = request
        self.on_progress = on_progress
        self.on_finished = on_finished
        self.on_error = on_error
        self.on_log = on_log
        self.cancel_reason: Optional[str] = None
        self.output: Optional[Any] = None
        self.error: Optional[BaseException] = None
        self.done = False

    def cancel(self, reason: str = "cancelled by the user") -> None:
        if not self.done and self.cancel_reason is None:
            self.cancel_reason = reason
            self.job.cancel()

    def poll(self) -> bool:
        """Handle new messages; returns True when finished (success, error or cancel)."""
        if self.done:
            return True
        for message in self.job.poll():
            deliver(message, self.on_progress, self.on_log)
        if self.job.done:
            self._finish(lambda: self.job.wait(timeout=0))
        return self.done

    def wait(self) -> Any:
        """Block until finished; returns the segmentation node or raises."""
        if not self.done:
            self._finish(lambda: self.job.wait(progress=self.on_progress, log=self.on_log))
        if self.error is not None:
            raise self.error
        return self.output

    def _finish(self, get_result: Callable[[], SegmentResult]) -> None:
        try:
            result = get_result()
            if self.cancel_reason is not None:
                raise CancelledError(self.cancel_reason)
            self.output = self.logic._apply(result, self.request)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            if isinstance(exc, CancelledError) and self.cancel_reason:
                exc = CancelledError(self.cancel_reason)
            self.error = exc
        self.done = True
        self.logic._active = None
        if self.error is None and self.on_finished is not None:
            self.on_finished(self.output)
        elif self.error is not None and self.on_error is not None:
            self.on_error(self.error)
