"""Review aids: per-segment volumes (table node) and a probability histogram with the threshold line (plot nodes)."""

from typing import Any, List, Sequence

import numpy as np
import vtk

BINS = 50  # 0.02 wide, matching the slider's resolution well enough for review


def histogram(values: np.ndarray) -> np.ndarray:
    """Counts of cached probabilities (uint8, 1/255 steps) in ``BINS`` equal bins over [0, 1]."""
    counts = np.bincount(values.ravel(), minlength=256)
    edges = np.linspace(0, 256, BINS + 1).astype(int)
    return np.add.reduceat(counts, edges[:-1])


def _column(table: Any, name: str, kind: str = "double") -> Any:
    arr = vtk.vtkDoubleArray() if kind == "double" else vtk.vtkStringArray()
    arr.SetName(name)
    table.AddColumn(arr)
    return arr


def update_statistics_table(
    scene: Any,
    node: Any,
    names: Sequence[str],
    voxels: Sequence[int],
    voxel_ml: float,
    thresholds: Sequence[float],
    notes: Sequence[str],
) -> Any:
    """Table: Segment | Threshold | Voxels | Volume [mL] | Note. Created if ``node`` is None or no longer in the scene
    (the user deleted it: a removed node is never written to again)."""
    if node is None or node.GetScene() is not scene:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", "UNetSigmoidSeg statistics")
    table = vtk.vtkTable()
    cols = [
        _column(table, "Segment", "str"),
        _column(table, "Threshold"),
        _column(table, "Voxels"),
        _column(table, "Volume [mL]"),
        _column(table, "Note", "str"),
    ]
    for name, t, n, note in zip(names, thresholds, voxels, notes):
        cols[0].InsertNextValue(name)
        cols[1].InsertNextValue(float(t))
        cols[2].InsertNextValue(float(n))
        cols[3].InsertNextValue(round(float(n) * voxel_ml, 3))
        cols[4].InsertNextValue(note)
    node.SetAndObserveTable(table)
    return node


def update_histogram_plot(scene: Any, nodes: List[Any], counts: np.ndarray, threshold: float) -> List[Any]:
    """Plot chart with the histogram (bars) and a vertical threshold line; returns [chart, table, bars, line]. Made
    anew when any of them was deleted from the scene (the survivors of the old set are removed with it)."""
    if nodes and any(n.GetScene() is not scene for n in nodes):
        for survivor in [n for n in nodes if n.GetScene() is scene]:
            scene.RemoveNode(survivor)
        nodes = []
    if not nodes:
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", "UNetSigmoidSeg histogram")
        bars = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", "probability histogram")
        line = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", "threshold")
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "UNetSigmoidSeg histogram")
        chart.AddAndObservePlotSeriesNodeID(bars.GetID())
        chart.AddAndObservePlotSeriesNodeID(line.GetID())
        chart.SetTitle("Probability histogram")
        chart.SetXAxisTitle("probability")
        chart.SetYAxisTitle("voxels (log)")
        chart.SetYAxisLogScale(True)
        nodes = [chart, table, bars, line]
    chart, table_node, bars, line = nodes
    table = vtk.vtkTable()
    x, y, tx, ty = (_column(table, n) for n in ("probability", "voxels", "threshold_x", "threshold_y"))
    centres = (np.arange(BINS) + 0.5) / BINS
    for c, n in zip(centres, counts):
        x.InsertNextValue(float(c))
        y.InsertNextValue(float(max(n, 1)))
    top = float(max(counts.max(), 1))
    for i in range(BINS):
        tx.InsertNextValue(float(threshold))
        ty.InsertNextValue(1.0 if i == 0 else top)
    table_node.SetAndObserveTable(table)
    for series, xc, yc, kind in ((bars, "probability", "voxels", "bar"), (line, "threshold_x", "threshold_y", "line")):
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName(xc)
        series.SetYColumnName(yc)
        series.SetPlotType(series.PlotTypeScatterBar if kind == "bar" else series.PlotTypeScatter)
    line.SetColor(0.9, 0.1, 0.1)
    return nodes
