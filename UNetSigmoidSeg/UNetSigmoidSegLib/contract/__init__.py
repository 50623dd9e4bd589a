"""The run contract: one options object, one result object, one runner protocol — torch-free.

``options``: ``SegmentOptions`` / ``Cleanup`` and the vocabulary, ranges and defaults. ``model``:
``ModelSpec`` (which network, how to load it) and ``ModelInfo`` (what was found in it). ``volume``:
``Volume`` (array + affine). ``result``: ``SegmentResult``, its ``Probabilities`` cache and ``Window``, with
the one serialisation ``to_wire`` / ``from_wire``. ``runner``: the ``Runner`` / ``Job`` protocols.
"""

from .model import ModelInfo, ModelSpec
from .options import Cleanup, SegmentOptions
from .result import DeviceChoice, Probabilities, SegmentResult, Window
from .runner import Job, Runner
from .volume import Volume

__all__ = [
    "Cleanup",
    "DeviceChoice",
    "Job",
    "ModelInfo",
    "ModelSpec",
    "Probabilities",
    "Runner",
    "SegmentOptions",
    "SegmentResult",
    "Volume",
    "Window",
]
