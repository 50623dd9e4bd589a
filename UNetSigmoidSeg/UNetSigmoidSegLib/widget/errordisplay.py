"""``showErrors``: Slicer's error display for the panel and its helpers (its own module: no helper imports
the panel); ``waitCursor``: the busy cursor around work that asks nothing (never around a question or pip's
progress dialog, which would then show a wait cursor over the buttons to press)."""

import contextlib

from ..errors import UserError


@contextlib.contextmanager
def showErrors(message, waitCursor=True):
    """``tryWithErrorDisplay``; a UserError (shown with what to do) then stops there instead of printing a traceback."""
    import slicer  # Slicer's own module: present wherever the panel runs

    with contextlib.suppress(UserError), slicer.util.tryWithErrorDisplay(message, waitCursor=waitCursor):
        yield


@contextlib.contextmanager
def waitCursor():
    """Slicer's wait cursor while the block runs (as ``tryWithErrorDisplay(waitCursor=True)`` sets it)."""
    import qt
    import slicer

    slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
    try:
        yield
    finally:
        slicer.app.restoreOverrideCursor()
