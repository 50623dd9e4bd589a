"""Pass a runner's log and warning messages to the panel while the logic polls its jobs.

``UNetSigmoidSegLogic`` reads only progress from a job; ``TappedRunner`` wraps the worker client
(or the in-process runner) so each ``log`` / ``warning`` message also reaches ``on_message`` — the
panel's capped log — from the thread that polls (Qt's main thread). Everything else passes through.
"""

from typing import Any, Callable, Dict, List

Message = Dict[str, Any]
SHOWN = ("log", "warning", "error")


def log_line(message: Message) -> str:
    """One log line for a message: warnings and errors are marked."""
    kind, text = message.get("type", "log"), str(message.get("message", ""))
    return text if kind == "log" else f"{kind}: {text}"


class TappedJob:
    def __init__(self, job: Any, on_message: Callable[[Message], None]) -> None:
        self._job, self._on_message = job, on_message

    def __getattr__(self, name: str) -> Any:  # done, cancel, worker_info, … of the wrapped job
        return getattr(self._job, name)

    def poll(self) -> List[Message]:
        messages = self._job.poll()
        for message in messages:
            if message.get("type") in SHOWN:
                self._on_message(message)
        return messages

    def wait(self, *args: Any, **kwargs: Any) -> Any:
        if "log" not in kwargs:
            kwargs["log"] = lambda text: self._on_message({"type": "log", "message": text})
        return self._job.wait(*args, **kwargs)


class TappedRunner:
    """``submit`` returns a ``TappedJob``; any other attribute is the wrapped runner's."""

    def __init__(self, runner: Any, on_message: Callable[[Message], None]) -> None:
        self.runner, self.on_message = runner, on_message

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)

    def submit(self, *args: Any, **kwargs: Any) -> TappedJob:
        return TappedJob(self.runner.submit(*args, **kwargs), self.on_message)
