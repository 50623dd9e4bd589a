"""Segments this module owns inside a segmentation node, updated in place for live thresholds.

Each produced segment keeps its own binary-labelmap layer covering the input volume's grid, so a
threshold step is one numpy comparison written straight into the segment's VTK buffer (no labelmap
node, no import). Segments carry tags naming the module, the run and the output channel; segments
without them are never touched. A segment whose labelmap changed since our last write (Segment
Editor or any other edit) is treated as user-edited: later threshold moves leave it alone.

3-D: writing a labelmap makes Slicer drop every derived representation (``vtkSegmentation`` invalidates them when
its source changes), so a closed surface shown in 3-D would vanish. A write rebuilds it when the node had one; a
write with ``update_3d=False`` (a slider drag: the 2-D views follow at once) puts the previous surfaces back instead,
and ``update_surface`` rebuilds them later (on release).
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .. import NOT_CLINICAL_ASCII
from ..contract.terminology import terminology_string
from .volumes import _vtk_matrix

TAG_SOURCE = "UNetSigmoidSeg.Source"
TAG_CHANNEL = "UNetSigmoidSeg.Channel"
TAG_EDITED = "UNetSigmoidSeg.Edited"
TAG_NOTICE = "UNetSigmoidSeg.Notice"  # saved with the segment in .seg.nrrd (its Tags), as the CLI's header says
BINARY = "Binary labelmap"
CLOSED = "Closed surface"


class SegmentWriter:
    """Owns the produced segments of one run in one segmentation node.

    ``shape_kji`` is the input grid (K, J, I); ``ijk_to_ras`` its geometry.
    """

    def __init__(
        self, segmentation_node: Any, ijk_to_ras: np.ndarray, shape_kji: Tuple[int, int, int], source: str
    ) -> None:
        self.node = segmentation_node
        self.ijk_to_ras = np.asarray(ijk_to_ras, float)
        self.shape = tuple(int(s) for s in shape_kji)
        self.source = source
        self.segment_ids: List[str] = []
        self.edited: Dict[str, str] = {}  # segment id -> reason it is left alone
        self._written: Dict[str, Tuple[int, int]] = {}  # segment id -> (image data address, MTime) after our last write
        self.surface_stale = False  # the closed surfaces shown are from before a write with update_3d=False

    # ------------------------------------------------------------------ creation
    def produced_segments(self) -> List[str]:
        """IDs of segments in the node that this module produced (any run)."""
        seg = self.node.GetSegmentation()
        return [sid for sid in seg.GetSegmentIDs() if seg.GetSegment(sid).HasTag(TAG_SOURCE)]

    def create(
        self, names: Sequence[str], colors: Sequence[Sequence[float]], replace_produced: bool = True
    ) -> List[str]:
        """Create one segment per output (own layer, full grid). Previously produced segments are removed
        only when ``replace_produced`` and not edited by the user; segments the module did not produce are
        never touched."""
        seg = self.node.GetSegmentation()
        if replace_produced:
            for sid in self.produced_segments():
                if not seg.GetSegment(sid).HasTag(TAG_EDITED):  # the user's edits are never overwritten unasked
                    seg.RemoveSegment(sid)
        self.segment_ids = []
        for channel, (name, color) in enumerate(zip(names, colors)):
            segment = slicer.vtkSegment()
            segment.SetName(self._unique_name(name))
            segment.SetColor(*[float(c) for c in color[:3]])
            segment.SetTag(TAG_SOURCE, self.source)
            segment.SetTag(TAG_CHANNEL, str(channel))
            segment.SetTag(TAG_NOTICE, NOT_CLINICAL_ASCII)
            term = terminology_string(name)
            if term:  # what vtkSegment.SetTerminology (Slicer >= 5.10 only) does, on every release
                segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), term)
            segment.AddRepresentation(BINARY, self._new_layer())
            sid = seg.GenerateUniqueSegmentID(f"UNetSigmoidSeg_{name}")
            seg.AddSegment(segment, sid)
            self.segment_ids.append(sid)
        return self.segment_ids

    def _unique_name(self, name: str) -> str:
        seg = self.node.GetSegmentation()
        existing = {seg.GetSegment(s).GetName() for s in seg.GetSegmentIDs()}
        if name not in existing:
            return name
        i = 2
        while f"{name} ({i})" in existing:
            i += 1
        return f"{name} ({i})"

    def _new_layer(self) -> Any:
        image = slicer.vtkOrientedImageData()
        k, j, i = self.shape
        image.SetExtent(0, i - 1, 0, j - 1, 0, k - 1)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        image.SetImageToWorldMatrix(_vtk_matrix(self.ijk_to_ras))
        return image

    # ------------------------------------------------------------------ live updates
    def _buffer(self, sid: str) -> Optional[np.ndarray]:
        """The segment's own full-grid labelmap buffer as a writable ``(K, J, I)`` bool view, or None."""
        seg = self.node.GetSegmentation()
        segment = seg.GetSegment(sid)
        if segment is None:
            return None
        if len(seg.GetSegmentIDsForLayer(seg.GetLayerIndex(sid))) > 1:
            seg.SeparateSegmentLabelmap(sid)  # e.g. after a save/load collapsed layers
        image = segment.GetRepresentation(BINARY)
        k, j, i = self.shape
        full = (
            image is not None
            and image.GetExtent() == (0, i - 1, 0, j - 1, 0, k - 1)
            and image.GetScalarType() == vtk.VTK_UNSIGNED_CHAR
            and segment.GetLabelValue() == 1
        )
        if not full:
            image = self._new_layer()
            segment.SetLabelValue(1)
            segment.AddRepresentation(BINARY, image)
        return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i).view(np.bool_)

    def check_edits(self) -> Dict[str, str]:
        """Detect segments changed by someone else since our last write (edited or removed)."""
        seg = self.node.GetSegmentation()
        for sid in self.segment_ids:
            if sid in self.edited:
                continue
            segment = seg.GetSegment(sid)
            if segment is None:
                self.edited[sid] = "removed by the user"
                continue
            image = segment.GetRepresentation(BINARY)
            stamp = self._written.get(sid)
            if stamp is not None and (image is None or (image.GetAddressAsString(""), image.GetMTime()) != stamp):
                self.edited[sid] = "edited by the user"
                segment.SetTag(TAG_EDITED, "1")
        return self.edited

    def write(self, fill, update_3d: bool = True) -> List[str]:
        """Update every produced, unedited segment: ``fill(channel, out_bool_kji)`` writes the mask into
        the segment's buffer. Returns the IDs updated. A closed surface (3-D) is rebuilt, or with ``update_3d=False``
        kept as it was until ``update_surface``."""
        self.check_edits()
        seg = self.node.GetSegmentation()
        had_surface = bool(seg.GetNumberOfSegments()) and seg.ContainsRepresentation(CLOSED)
        kept = {} if update_3d or not had_surface else self._surfaces()
        updated = []
        for channel, sid in enumerate(self.segment_ids):
            if sid in self.edited:
                continue
            view = self._buffer(sid)
            if view is None:
                continue
            fill(channel, view)
            image = seg.GetSegment(sid).GetRepresentation(BINARY)
            image.GetPointData().GetScalars().Modified()
            image.Modified()  # Slicer drops the derived representations (closed surface) of every segment here
            updated.append(sid)
        for sid, surface in kept.items():  # a drag: the 3-D view keeps the last surfaces, no conversion
            segment = seg.GetSegment(sid)
            if segment is not None and segment.GetRepresentation(CLOSED) is None:
                segment.AddRepresentation(CLOSED, surface)
        self.surface_stale = self.surface_stale or bool(kept and updated)
        if had_surface and update_3d and updated:
            self._rebuild_surface(always=False)
        for sid in updated:
            seg.InvokeEvent(slicer.vtkSegmentation.RepresentationModified, sid)
        for sid in updated:  # stamp after all events: observers (displays) may touch MTime of other objects only
            image = seg.GetSegment(sid).GetRepresentation(BINARY)
            self._written[sid] = (image.GetAddressAsString(""), image.GetMTime())
        return updated

    def _surfaces(self) -> Dict[str, Any]:
        seg = self.node.GetSegmentation()
        surfaces = {sid: seg.GetSegment(sid).GetRepresentation(CLOSED) for sid in seg.GetSegmentIDs()}
        return {sid: surface for sid, surface in surfaces.items() if surface is not None}

    def update_surface(self) -> bool:
        """Rebuild the closed surfaces kept by writes with ``update_3d=False``; True when they were rebuilt."""
        if not self.surface_stale:
            return False
        return self._rebuild_surface(always=True)

    def _rebuild_surface(self, always: bool) -> bool:
        self.surface_stale = False
        seg = self.node.GetSegmentation()
        if always and not seg.ContainsRepresentation(CLOSED):
            return False  # the 3-D surface was switched off meanwhile: nothing to rebuild
        return bool(seg.CreateRepresentation(CLOSED, always))
