"""Slicer 5.8's segmentation API on a newer slicer-core: ``vtkSegment`` without the terminology methods that
Slicer 5.10 added (``SetTerminology`` / ``GetTerminology`` / ``HasTerminology``, Slicer commit 49a251067d,
2025-03-05, first in v5.10.0). No slicer-core wheel exists for Slicer 5.8 (Python 3.9), so this is how the
tests see 5.8's vtkSegment.

As a pytest plugin it replaces ``slicer.vtkSegment`` for a whole run (``make test`` runs Testing/mrml so)::

    PYTHONPATH=Testing/mrml python -m pytest -p slicer58 Testing/mrml

``Segment58`` is also used directly by ``test_logic.py``. Only segments created from Python get the class; the
module creates its segments so (``mrml/segments.py``).
"""

import slicer

REAL_SEGMENT = slicer.vtkSegment
ADDED_IN_5_10 = ("SetTerminology", "GetTerminology", "HasTerminology")


class Segment58(REAL_SEGMENT):
    """``vtkSegment`` as in Slicer 5.8.x: the 5.10 terminology methods raise AttributeError, as there."""

    def __getattribute__(self, name):
        if name in ADDED_IN_5_10:
            raise AttributeError(f"'vtkSegment' object has no attribute '{name}' (Slicer 5.8 emulation)")
        return super().__getattribute__(name)


def pytest_configure(config):
    slicer.vtkSegment = Segment58
    config.addinivalue_line("markers", "slicer58: run with Slicer 5.8's vtkSegment (Testing/mrml/slicer58.py)")


def pytest_report_header(config):
    return "Slicer 5.8 emulation: slicer.vtkSegment has no " + ", ".join(ADDED_IN_5_10)


def pytest_unconfigure(config):
    slicer.vtkSegment = REAL_SEGMENT
