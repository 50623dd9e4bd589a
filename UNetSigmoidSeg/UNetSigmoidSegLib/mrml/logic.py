"""``UNetSigmoidSegLogic``: everything the panel does, as a plain Python API for the Slicer console.

    logic = UNetSigmoidSegLogic()                       # in Slicer; pass scene=… elsewhere
    seg = logic.segment(volumeNode, "/path/model", activation="sigmoid", threshold=0.5, device="auto")
    logic.setThreshold(seg, 0.3)                        # live: no network run

The network runs through a runner: the background worker client in the panel, or the in-process
runner (default here, and for tests). The logic keeps the probabilities of each result (≤ 1 byte per
voxel and segment) and re-thresholds them into the segments in place.
"""

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import slicer

from ..engine.pipeline import SegmentOptions, SegmentResult
from ..engine.postprocess import Cleanup, clean_mask
from ..engine.probabilities import ProbabilityMap, check_activation, check_thresholds, threshold_map
from ..errors import CancelledError, InputError, OptionError, UserError
from . import parameters as params_mod
from .review import histogram, update_histogram_plot, update_statistics_table
from .runner import InProcessRunner
from .scene import default_scene, subject_hierarchy
from .segments import SegmentWriter
from .volumes import add_probability_volume, volume_to_engine


@dataclass
class LiveResult:
    """What a segmentation node needs for live re-thresholding (probabilities cached in K, J, I order)."""

    writer: SegmentWriter
    cache: ProbabilityMap  # values (S, K, J, I) uint8 [+ labels (K, J, I) for softmax]
    names: List[str]
    thresholds: List[float]
    cleanup: Cleanup
    spacing_ijk: np.ndarray
    voxel_ml: float
    histograms: List[np.ndarray]
    table: Any = None
    plot: List[Any] = field(default_factory=list)


class RunHandle:
    """A running segmentation: ``poll()`` from a timer, ``cancel()``, or ``wait()`` to block."""

    def __init__(self, logic: "UNetSigmoidSegLogic", job: Any, request: Dict[str, Any], on_progress, on_finished, on_error,
                 on_log=None) -> None:
        self.logic, self.job, self.request = logic, job, request
        self.on_progress, self.on_finished, self.on_error, self.on_log = on_progress, on_finished, on_error, on_log
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
        for msg in self.job.poll():
            kind = msg.get("type")
            if kind == "progress" and self.on_progress is not None:
                self.on_progress(msg.get("stage", ""), float(msg.get("fraction", 0.0)), msg.get("message", ""))
            elif kind in ("log", "warning") and self.on_log is not None:
                self.on_log(("warning: " if kind == "warning" else "") + str(msg.get("message", "")))
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


class UNetSigmoidSegLogic:
    """Slicer logic of the module; takes the scene as an argument (default: ``slicer.mrmlScene``)."""

    def __init__(self, scene: Optional[Any] = None, runner: Optional[Any] = None) -> None:
        self.scene = default_scene(scene)
        self.runner = runner if runner is not None else InProcessRunner()
        self._live: Dict[str, LiveResult] = {}
        self._active: Optional[RunHandle] = None
        self._observers = [
            self.scene.AddObserver(slicer.vtkMRMLScene.StartCloseEvent, self._on_scene_close),
            self.scene.AddObserver(slicer.vtkMRMLScene.NodeAboutToBeRemovedEvent, self._on_node_removed),
        ]

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

    def segment(self, volumeNode: Any, model: str, activation: str = "auto", threshold: Union[None, float, Sequence[float]] = None,
                device: str = "auto", outputSegmentation: Optional[Any] = None, progress: Optional[Callable] = None, **options: Any) -> Any:
        """Blocking: segment ``volumeNode`` with ``model``; returns the segmentation node."""
        return self.segmentAsync(volumeNode, model, activation, threshold, device, outputSegmentation, onProgress=progress, **options).wait()

    def segmentAsync(self, volumeNode: Any, model: str, activation: str = "auto", threshold: Union[None, float, Sequence[float]] = None,
                     device: str = "auto", outputSegmentation: Optional[Any] = None, onProgress: Optional[Callable] = None,
                     onFinished: Optional[Callable] = None, onError: Optional[Callable] = None, probabilityVolume: bool = False,
                     largestComponent: bool = False, fillHoles: bool = False, minIslandMm3: float = 0.0, roiSize: Optional[List[int]] = None,
                     overlap: Optional[float] = None, swBatchSize: Optional[int] = None, blendMode: Optional[str] = None,
                     amp: bool = True, trustBundle: bool = False, fault: Optional[str] = None,
                     onLog: Optional[Callable[[str], None]] = None, normalization: Optional[str] = None,
                     ctWindow: Optional[List[float]] = None, orientation: Optional[str] = None,
                     spacing: Optional[List[float]] = None, labels: Optional[List[str]] = None,
                     networkConfig: Optional[str] = None, strides: Optional[List[int]] = None) -> RunHandle:
        """Non-blocking: start a run and return its handle (call ``handle.poll()`` from a timer)."""
        if self.isRunning:
            raise UserError("A segmentation is already running", "Wait for it to finish or press Cancel.")
        check_activation(activation)
        if threshold is not None:
            check_thresholds(threshold, 1 if isinstance(threshold, (int, float)) else len(threshold))
        if not model or not os.path.exists(str(model)):
            raise UserError(f"Model not found: {model}", "Pick a checkpoint file (.pt/.pth/.ckpt), a TorchScript file or a MONAI bundle folder.")
        volume = volume_to_engine(volumeNode)
        if outputSegmentation is not None and not outputSegmentation.IsA("vtkMRMLSegmentationNode"):
            raise OptionError(f"'{outputSegmentation.GetName()}' is not a segmentation node", "Pick a segmentation or 'Create new'.")
        cleanup = Cleanup(bool(largestComponent), bool(fillHoles), float(minIslandMm3 or 0.0))
        seg_options = SegmentOptions(activation=activation, threshold=threshold, device=device, amp=amp, roi_size=roiSize,
                                     sw_batch_size=swBatchSize, overlap=overlap, blend_mode=blendMode, cleanup=cleanup, fault=fault,
                                     normalization=normalization, ct_window=ctWindow, orientation=orientation, spacing=spacing,
                                     labels=labels)
        model_options: Dict[str, Any] = {"trust_bundle": bool(trustBundle)}
        if networkConfig:
            model_options["network_config"] = str(networkConfig)
        if strides:
            model_options["network_overrides"] = {"strides": [int(v) for v in strides]}
        request = {"volumeID": volumeNode.GetID(), "outputID": outputSegmentation.GetID() if outputSegmentation is not None else None,
                   "model": str(model), "probabilityVolume": probabilityVolume, "affine": volume.affine,
                   "shape_kji": tuple(reversed(volume.spatial_shape)), "cleanup": cleanup}
        job = self.runner.submit(volume.array, volume.affine, str(model), model_options, seg_options.to_dict())
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

    def _on_node_removed(self, caller: Any, event: Any, calldata: Any = None) -> None:
        # vtk passes the node only with the VTK_OBJECT calldata type; we check the run's nodes instead
        if self._active is None or self._active.done:
            return
        request = self._active.request
        for role, node_id in (("input volume", request["volumeID"]), ("output segmentation", request["outputID"])):
            node = self.scene.GetNodeByID(node_id) if node_id else None
            if node_id and (node is None or node is calldata):
                self.cancel(f"cancelled: the {role} was removed")

    _on_node_removed.CallDataType = 13  # vtk.VTK_OBJECT: receive the node about to be removed

    # ---------------------------------------------------------------- results
    def _apply(self, result: SegmentResult, request: Dict[str, Any]) -> Any:
        volume_node = self.scene.GetNodeByID(request["volumeID"])
        if volume_node is None:
            raise CancelledError("cancelled: the input volume was removed")
        seg_node = self.scene.GetNodeByID(request["outputID"]) if request["outputID"] else None
        if request["outputID"] and seg_node is None:
            raise CancelledError("cancelled: the output segmentation was removed")
        return self.applyResult(volume_node, result, seg_node, request["model"], request["probabilityVolume"], request["cleanup"])

    def applyResult(self, volumeNode: Any, result: SegmentResult, outputSegmentation: Optional[Any] = None, model: str = "model",
                    probabilityVolume: bool = False, cleanup: Optional[Cleanup] = None) -> Any:
        """Show an engine ``SegmentResult`` computed on ``volumeNode``'s grid (e.g. by the CLI or the engine API)
        as live segments; returns the segmentation node. Only segments this module produced are replaced."""
        volume_node, seg_node = volumeNode, outputSegmentation
        shape_kji = tuple(reversed(result.masks.shape[1:]))
        image = volume_node.GetImageData()
        if image is None or tuple(reversed(image.GetDimensions())) != shape_kji:
            raise InputError("The result is not on this volume's grid", "Apply it to the volume it was computed from.")
        request = {"model": model, "affine": result.affine, "shape_kji": shape_kji, "probabilityVolume": probabilityVolume,
                   "cleanup": cleanup if cleanup is not None else result.cleanup}
        if seg_node is None:
            name = f"{volume_node.GetName()} {os.path.splitext(os.path.basename(request['model'].rstrip('/')))[0]}"
            seg_node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", self.scene.GenerateUniqueName(name))
            seg_node.CreateDefaultDisplayNodes()
        seg_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        old = self._live.pop(seg_node.GetID(), None)
        if old is not None:
            old.writer.check_edits()  # tags segments the user edited since: a re-run keeps them
        writer = SegmentWriter(seg_node, request["affine"], request["shape_kji"], os.path.basename(request["model"].rstrip("/")))
        writer.create(result.names, result.colors)
        writer.write(lambda ch, out: np.copyto(out, result.masks[ch].T))
        pm = result.probabilities
        cache = ProbabilityMap(pm.mode, np.ascontiguousarray(pm.values.transpose(0, 3, 2, 1)),
                               None if pm.labels is None else np.ascontiguousarray(pm.labels.T), pm.n_classes)
        hists = [histogram(v) for v in cache.values]
        live = LiveResult(writer, cache, list(result.names), list(result.thresholds), request["cleanup"], result.spacing,
                          result.voxel_volume_ml, hists, old.table if old else None, old.plot if old else [])
        self._live[seg_node.GetID()] = live
        self._place_beside(volume_node, seg_node)
        seg_node.SetAttribute("UNetSigmoidSeg.Model", request["model"])
        seg_node.SetAttribute("UNetSigmoidSeg.Activation", result.activation)
        seg_node.SetAttribute("UNetSigmoidSeg.Device", f"{result.device.device}: {result.device.reason}")
        if request["probabilityVolume"]:
            name = f"{seg_node.GetName()} probabilities"
            existing = seg_node.GetNodeReference("UNetSigmoidSeg.Probabilities")
            prob = add_probability_volume(self.scene, volume_node, cache.values[0].astype(np.float32) / 255.0, name, existing)
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
            raise UserError("No cached probabilities for this segmentation", "Run Segment first (the cache is not saved with the scene).")
        return live

    def setThreshold(self, segmentationNode: Any, threshold: Union[float, Sequence[float]], cleanup: bool = True) -> List[str]:
        """Re-threshold the cached probabilities into the segments in place (no network run).

        One value for all segments or one per segment (softmax: minimum confidence). User-edited segments
        are left alone; their IDs are in ``liveResult(node).writer.edited``. Returns the updated segment IDs.
        """
        live = self.liveResult(segmentationNode)
        live.thresholds = check_thresholds(threshold, len(live.names))
        apply_cleanup = cleanup and live.cleanup.active

        def fill(channel: int, out: np.ndarray) -> None:
            threshold_map(live.cache, live.thresholds, segment=channel, out=out)
            if apply_cleanup:
                out[:] = clean_mask(out.T, live.spacing_ijk, live.cleanup).T

        updated = live.writer.write(fill)
        self._update_review(segmentationNode, live)
        return updated

    def statistics(self, segmentationNode: Any) -> List[Dict[str, Any]]:
        """Per segment: name, threshold, voxel count and volume (mL) as currently in the segmentation."""
        live = self.liveResult(segmentationNode)
        out = []
        for name, sid, t in zip(live.names, live.writer.segment_ids, live.thresholds):
            n = self._count(segmentationNode, sid)
            out.append({"segment": name, "segmentID": sid, "threshold": t, "voxels": n,
                        "volume_ml": round(n * live.voxel_ml, 4), "note": live.writer.edited.get(sid, "")})
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
        live.table = update_statistics_table(self.scene, live.table, [s["segment"] for s in stats], [s["voxels"] for s in stats],
                                             live.voxel_ml, live.thresholds, [s["note"] for s in stats])
        live.plot = update_histogram_plot(self.scene, live.plot, live.histograms[0], live.thresholds[0])

    def cleanup(self) -> None:
        """Stop background work and observers (called by the widget's cleanup and on module reload)."""
        self.cancel("cancelled: the module was closed")
        for tag in self._observers:
            self.scene.RemoveObserver(tag)
        self._observers = []
        for name in ("close", "shutdown"):  # WorkerClient.close / InProcessRunner.shutdown
            stop = getattr(self.runner, name, None)
            if stop is not None:
                stop()
                break
