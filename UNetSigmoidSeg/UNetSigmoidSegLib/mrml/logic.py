"""``UNetSigmoidSegLogic``: everything the panel does, as a plain Python API for the Slicer console.

    logic = UNetSigmoidSegLogic()                       # in Slicer; pass scene=… elsewhere
    seg = logic.segment(volumeNode, "/path/model", activation="sigmoid", threshold=0.5, device="auto")
    seg = logic.segment(volumeNode, ModelSpec("/path/model"), SegmentOptions(threshold=0.5))   # the same
    logic.setThreshold(seg, 0.3)                        # live: no network run
    logic.setThreshold(seg, 0.3, update3D=False)        # a drag: 2-D follows, the 3-D surface waits …
    logic.updateSurface(seg)                            # … until the release rebuilds it

The network runs through a ``Runner`` (``contract.runner``): the panel gives the background worker or a
``RemoteRunner`` (a GPU server), the default here is the in-process runner. The logic keeps the probabilities
of each result (≤ 1 byte per voxel and segment) and re-thresholds them into the segments in place.
It never imports torch itself.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import slicer
import vtk

from ..contract.model import ModelSpec
from ..contract.options import Cleanup, SegmentOptions, check_thresholds
from ..contract.request import run_request
from ..contract.result import Probabilities, SegmentResult, threshold_map
from ..contract.runner import Runner
from ..errors import CancelledError, InputError, OptionError, OutputError, UserError
from . import parameters as params_mod
from .review import histogram, update_histogram_plot, update_statistics_table
from .runhandle import RunHandle
from .scene import default_scene, subject_hierarchy
from .segments import BINARY, SegmentWriter
from .volumes import add_probability_volume, volume_to_engine


@dataclass
class LiveResult:
    """What a segmentation node needs for live re-thresholding (probabilities cached in K, J, I order)."""

    writer: SegmentWriter
    probabilities: Probabilities  # quantized (S, K, J, I) uint8 [+ argmax (K, J, I) for softmax]
    labels: List[str]
    thresholds: List[float]
    cleanup: Cleanup
    spacing_ijk: np.ndarray
    voxel_ml: float
    histograms: List[np.ndarray]
    table: Any = None
    plot: List[Any] = field(default_factory=list)
    window: str = ""  # the sliding window MONAI's inferer got (``Window.describe()``), "" if not known


class UNetSigmoidSegLogic:
    """Slicer logic of the module; takes the scene (default: ``slicer.mrmlScene``) and a ``Runner``
    (default: the in-process runner)."""

    def __init__(self, scene: Optional[Any] = None, runner: Optional[Runner] = None) -> None:
        self.scene = default_scene(scene)
        if runner is None:
            from ..runners.inprocess import InProcessRunner

            runner = InProcessRunner()
        self.runner: Runner = runner
        self._live: Dict[str, LiveResult] = {}
        self._active: Optional[RunHandle] = None
        self._observers = [
            self.scene.AddObserver(slicer.vtkMRMLScene.StartCloseEvent, self._on_scene_close),
            self.scene.AddObserver(slicer.vtkMRMLScene.NodeAboutToBeRemovedEvent, self._on_node_removed),
        ]

    def setRunner(self, runner: Runner) -> None:
        """Run the next segmentations with ``runner`` (e.g. a ``RemoteRunner``); the previous one is closed. Live
        results stay: their probabilities are cached here."""
        if self.isRunning:
            raise UserError("A segmentation is running", "Wait for it to finish or cancel it first.")
        old, self.runner = self.runner, runner
        if old is not None and old is not runner:
            old.close()

    # ---------------------------------------------------------------- parameter node
    def getParameterNode(self) -> Any:
        return params_mod.get_parameter_node(self.scene)

    def getParameters(self) -> params_mod.Parameters:
        return params_mod.read_parameters(self.getParameterNode())

    def setParameters(self, values: params_mod.Parameters) -> None:
        params_mod.write_parameters(self.getParameterNode(), values)

    # ---------------------------------------------------------------- running
    @property
    def isRunning(self) -> bool:
        return self._active is not None and not self._active.done

    def segment(
        self,
        volumeNode: Any,
        model: Union[str, ModelSpec],
        options: Optional[SegmentOptions] = None,
        outputSegmentation: Optional[Any] = None,
        probabilityVolume: bool = False,
        progress: Optional[Callable] = None,
        **keywords: Any,
    ) -> Any:
        """Blocking: segment ``volumeNode`` with ``model``; returns the segmentation node (see ``segmentAsync``)."""
        return self.segmentAsync(
            volumeNode, model, options, outputSegmentation, probabilityVolume, onProgress=progress, **keywords
        ).wait()

    def segmentAsync(
        self,
        volumeNode: Any,
        model: Union[str, ModelSpec],
        options: Optional[SegmentOptions] = None,
        outputSegmentation: Optional[Any] = None,
        probabilityVolume: bool = False,
        onProgress: Optional[Callable] = None,
        onFinished: Optional[Callable] = None,
        onError: Optional[Callable] = None,
        onLog: Optional[Callable[[str], None]] = None,
        **keywords: Any,
    ) -> "RunHandle":
        """Non-blocking: start a run and return its handle (call ``handle.poll()`` from a timer).

        ``model``: a path, a ``ModelSpec``, or the name of a server model (with a ``RemoteRunner``); ``options``:
        a ``SegmentOptions``; console keywords (``activation=``, ``threshold=``, ``device=``, ``backend=``,
        ``roiSize=``, ``largestComponent=``, ``trustBundle=`` …) override both. ``outputSegmentation``: a
        segmentation node to update (only segments this module produced are replaced), else a new one.
        ``probabilityVolume``: also show the probabilities as a volume.
        """
        if self.isRunning:
            raise UserError("A segmentation is already running", "Wait for it to finish or press Cancel.")
        spec, seg_options = run_request(model, options, **keywords)
        if spec.name is None and not os.path.exists(spec.path):
            raise UserError(
                f"Model not found: {spec.path}",
                "Pick a checkpoint file (.pt/.pth/.ckpt), a TorchScript file or a MONAI bundle folder.",
            )
        volume = volume_to_engine(volumeNode)
        if outputSegmentation is not None and not outputSegmentation.IsA("vtkMRMLSegmentationNode"):
            raise OptionError(
                f"'{outputSegmentation.GetName()}' is not a segmentation node", "Pick a segmentation or 'Create new'."
            )
        request = {
            "volumeID": volumeNode.GetID(),
            "outputID": outputSegmentation.GetID() if outputSegmentation is not None else None,
            "model": spec.reference,
            "probabilityVolume": bool(probabilityVolume),
            "cleanup": seg_options.cleanup,
        }
        job = self.runner.submit(volume, spec, seg_options)
        self._active = RunHandle(self, job, request, onProgress, onFinished, onError, onLog)
        return self._active

    def poll(self) -> bool:
        return self._active.poll() if self._active is not None else True

    def cancel(self, reason: str = "cancelled by the user") -> None:
        if self._active is not None:
            self._active.cancel(reason)

    def _on_scene_close(self, caller: Any, event: Any) -> None:
        self.cancel("cancelled: the scene was closed")
        self._live.clear()

    @vtk.calldata_type(vtk.VTK_OBJECT)  # the node about to be removed arrives as ``calldata``
    def _on_node_removed(self, caller: Any, event: Any, calldata: Any = None) -> None:
        """Cancel the run at once when its input volume or output segmentation is about to be removed."""
        if self._active is None or self._active.done:
            return
        request = self._active.request
        for role, node_id in (("input volume", request["volumeID"]), ("output segmentation", request["outputID"])):
            node = self.scene.GetNodeByID(node_id) if node_id else None
            if node_id and (node is None or node is calldata):
                self.cancel(f"cancelled: the {role} was removed")

    # ---------------------------------------------------------------- results
    def _apply(self, result: SegmentResult, request: Dict[str, Any]) -> Any:
        volume_node = self.scene.GetNodeByID(request["volumeID"])
        if volume_node is None:
            raise CancelledError("cancelled: the input volume was removed")
        seg_node = self.scene.GetNodeByID(request["outputID"]) if request["outputID"] else None
        if request["outputID"] and seg_node is None:
            raise CancelledError("cancelled: the output segmentation was removed")
        return self.applyResult(
            volume_node, result, seg_node, request["model"], request["probabilityVolume"], request["cleanup"]
        )

    def applyResult(
        self,
        volumeNode: Any,
        result: SegmentResult,
        outputSegmentation: Optional[Any] = None,
        model: str = "model",
        probabilityVolume: bool = False,
        cleanup: Optional[Cleanup] = None,
    ) -> Any:
        """Show an engine ``SegmentResult`` computed on ``volumeNode``'s grid (e.g. by the CLI or the engine API)
        as live segments; returns the segmentation node. Only segments this module produced are replaced."""
        volume_node, seg_node = volumeNode, outputSegmentation
        shape_kji = tuple(reversed(result.masks.shape[1:]))
        image = volume_node.GetImageData()
        if image is None or tuple(reversed(image.GetDimensions())) != shape_kji:
            raise InputError("The result is not on this volume's grid", "Apply it to the volume it was computed from.")
        cleanup = cleanup if cleanup is not None else result.cleanup
        source = os.path.basename(str(model).rstrip("/"))
        if seg_node is None:
            name = f"{volume_node.GetName()} {os.path.splitext(source)[0]}"
            seg_node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", self.scene.GenerateUniqueName(name))
            seg_node.CreateDefaultDisplayNodes()
        seg_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        converted = labelmap_source(seg_node)
        if converted:
            result.warnings.append(converted)
            logging.getLogger(__name__).warning(converted)
        old = self._live.pop(seg_node.GetID(), None)
        if old is not None:
            old.writer.check_edits()  # tags segments the user edited since: a re-run keeps them
        writer = SegmentWriter(seg_node, result.affine, shape_kji, source)
        writer.create(result.labels, result.colors)
        writer.write(lambda ch, out: np.copyto(out, result.masks[ch].T))
        probabilities = result.probabilities.transposed()  # (K, J, I): the VTK buffers' order
        live = LiveResult(
            writer,
            probabilities,
            list(result.labels),
            list(result.thresholds),
            cleanup,
            result.spacing,
            result.voxel_volume_ml,
            [histogram(q) for q in probabilities.quantized],
            old.table if old else None,
            old.plot if old else [],
        )
        live.window = result.window.describe() if result.window is not None else ""
        self._live[seg_node.GetID()] = live
        self._place_beside(volume_node, seg_node)
        seg_node.SetAttribute("UNetSigmoidSeg.Model", str(model))
        seg_node.SetAttribute("UNetSigmoidSeg.Activation", result.activation)
        seg_node.SetAttribute("UNetSigmoidSeg.Device", f"{result.device.device}: {result.device.reason}")
        seg_node.SetAttribute("UNetSigmoidSeg.Window", live.window)
        seg_node.SetAttribute("UNetSigmoidSeg.Backend", result.backend.describe() if result.backend else "")
        if probabilityVolume:
            name = f"{seg_node.GetName()} probabilities"
            existing = seg_node.GetNodeReference("UNetSigmoidSeg.Probabilities")
            prob = add_probability_volume(self.scene, volume_node, probabilities.as_float(0), name, existing)
            seg_node.SetNodeReferenceID("UNetSigmoidSeg.Probabilities", prob.GetID())
            self._place_beside(volume_node, prob)
        self._update_review(seg_node, live)
        return seg_node

    def _place_beside(self, volume_node: Any, node: Any) -> None:
        """Put ``node`` under the input volume's parent (its study) in the subject hierarchy."""
        sh = subject_hierarchy(self.scene)
        volume_item = sh.GetItemByDataNode(volume_node) if sh is not None else 0
        if not volume_item:
            return
        parent = sh.GetItemParent(volume_item)
        item = sh.GetItemByDataNode(node)
        if not item:  # the application's subject-hierarchy plugins create items; a bare core scene does not
            item = sh.CreateItem(parent, node)
        elif parent:
            sh.SetItemParent(item, parent)

    def liveResult(self, segmentationNode: Any) -> LiveResult:
        live = self._live.get(segmentationNode.GetID()) if segmentationNode is not None else None
        if live is None:
            raise UserError(
                "No cached probabilities for this segmentation",
                "Run Segment first (the cache is not saved with the scene).",
            )
        return live

    def setThreshold(
        self,
        segmentationNode: Any,
        threshold: Union[float, Sequence[float]],
        cleanup: bool = True,
        update3D: bool = True,
    ) -> List[str]:
        """Re-threshold the cached probabilities into the segments in place (no network run).

        One value for all segments or one per segment (softmax: minimum confidence). User-edited segments
        are left alone; their IDs are in ``liveResult(node).writer.edited``. Returns the updated segment IDs.
        A closed surface shown in 3-D is rebuilt; ``update3D=False`` (while a slider is dragged) keeps the previous
        one until ``updateSurface``: the 2-D views follow at once, the costly conversion waits for the release.
        """
        live = self.liveResult(segmentationNode)
        live.thresholds = check_thresholds(threshold, len(live.labels))
        apply_cleanup = cleanup and live.cleanup.active
        if apply_cleanup:
            from ..engine.running.postprocess import (
                clean_mask,  # SimpleITK (ships with Slicer), only when clean-up is on
            )

        def fill(channel: int, out: np.ndarray) -> None:
            threshold_map(live.probabilities, live.thresholds, segment=channel, out=out)
            if apply_cleanup:
                out[:] = clean_mask(out.T, live.spacing_ijk, live.cleanup).T

        updated = live.writer.write(fill, update_3d=update3D)
        self._update_review(segmentationNode, live)
        return updated

    def updateSurface(self, segmentationNode: Any) -> bool:
        """Rebuild the 3-D closed surface that ``setThreshold(..., update3D=False)`` left as it was; True if rebuilt."""
        return self.liveResult(segmentationNode).writer.update_surface()

    def statistics(self, segmentationNode: Any) -> List[Dict[str, Any]]:
        """Per segment: name, threshold, voxel count and volume (mL) as currently in the segmentation, and the
        window the network ran with (roi size, overlap, batch, blend mode; 2-D: the slice axis)."""
        live = self.liveResult(segmentationNode)
        out = []
        for label, sid, t in zip(live.labels, live.writer.segment_ids, live.thresholds):
            n = self._count(segmentationNode, sid)
            out.append(
                {
                    "segment": label,
                    "segmentID": sid,
                    "threshold": t,
                    "voxels": n,
                    "volume_ml": round(n * live.voxel_ml, 4),
                    "note": live.writer.edited.get(sid, ""),
                    "window": live.window,
                }
            )
        return out

    def _count(self, seg_node: Any, sid: str) -> int:
        segment = seg_node.GetSegmentation().GetSegment(sid)
        if segment is None:
            return 0
        from vtk.util import numpy_support

        image = segment.GetRepresentation("Binary labelmap")
        if image is None or image.GetPointData().GetScalars() is None:
            return 0
        voxels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
        seg = seg_node.GetSegmentation()
        if segment.GetLabelValue() == 1 and len(seg.GetSegmentIDsForLayer(seg.GetLayerIndex(sid))) == 1:
            return int(np.count_nonzero(voxels))  # own layer holding 0/1: no temporary array
        return int(np.count_nonzero(voxels == segment.GetLabelValue()))

    def _update_review(self, seg_node: Any, live: LiveResult) -> None:
        stats = self.statistics(seg_node)
        live.table = update_statistics_table(
            self.scene,
            live.table,
            [s["segment"] for s in stats],
            [s["voxels"] for s in stats],
            live.voxel_ml,
            live.thresholds,
            [s["note"] for s in stats],
        )
        live.plot = update_histogram_plot(self.scene, live.plot, live.histograms[0], live.thresholds[0])

    def cleanup(self) -> None:
        """Stop background work and observers (called by the widget's cleanup and on module reload)."""
        self.cancel("cancelled: the module was closed")
        for tag in self._observers:
            self.scene.RemoveObserver(tag)
        self._observers = []
        self.runner.close()


def labelmap_source(segmentation_node: Any) -> str:
    """Make ``segmentation_node``'s source representation binary labelmap, converting its segments (a surface-sourced
    segmentation would keep the new labelmap segments empty in 3-D and on save); returns what was done, or ""."""
    previous = segmentation_node.GetSegmentation().GetSourceRepresentationName()
    if previous == BINARY:
        return ""
    if segmentation_node.GetSegmentation().GetNumberOfSegments() and not (
        segmentation_node.CreateBinaryLabelmapRepresentation()
    ):
        raise OutputError(
            f"{segmentation_node.GetName()} holds {previous} segments that cannot be converted to a labelmap",
            "Choose another output segmentation (or Create new).",
        )
    segmentation_node.SetSourceRepresentationToBinaryLabelmap()
    return (
        f"{segmentation_node.GetName()}: its source representation was {previous}; converted to binary labelmap so "
        "the new segments show and save (Segmentations module → Representations to change it)"
    )
