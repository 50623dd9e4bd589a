"""``showErrors``: Slicer's error display for the panel and its helpers (its own module: no helper imports
the panel)."""

import contextlib

from ..errors import UserError


@contextlib.contextmanager
def showErrors(message, waitCursor=True):
    """``tryWithErrorDisplay``; a UserError (shown with what to do) then stops there instead of printing a traceback."""
    import slicer  # Slicer's own module: present wherever the panel runs

    with contextlib.suppress(UserError), slicer.util.tryWithErrorDisplay(message, waitCursor=waitCursor):
        yield
