"""Which panel widget holds which ``Parameters`` field, and how its value is read, shown and watched.

The module file loops over ``BINDINGS``: it connects ``SIGNALS[kind]`` to "save the panel in the
parameter node", reads ``getattr(widget, PROPERTY[kind])`` through ``from_widget`` and shows values
with ``setattr(widget, PROPERTY[kind], to_widget(...))``. Fields not listed here are handled
explicitly (``threshold`` / ``segmentThresholds``: debounced slider; ``recentModels``: on each run).
"""

from typing import Any, Tuple

from ..errors import UserError
from . import rules
from .rules import format_roi_size, parse_roi_size, parse_window

# (Parameters field, widget name in Resources/UI/UNetSigmoidSeg.ui, kind)
BINDINGS: Tuple[Tuple[str, str, str], ...] = (
    ("modelPath", "modelPathLineEdit", "path"),
    ("activation", "activationComboBox", "combo"),
    ("multiLabel", "multiLabelCheckBox", "check"),
    ("normalization", "normalizationComboBox", "combo"),
    ("ctWindow", "ctWindowLineEdit", "window"),
    ("device", "deviceComboBox", "combo"),
    ("createProbabilityVolume", "probabilityVolumeCheckBox", "check"),
    ("largestComponent", "largestComponentCheckBox", "check"),
    ("fillHoles", "fillHolesCheckBox", "check"),
    ("minIslandMm3", "minIslandSpinBox", "double"),
    ("roiSize", "roiSizeLineEdit", "roi"),
    ("overlap", "overlapSpinBox", "double"),
    ("swBatchSize", "swBatchSizeSpinBox", "int"),
    ("blendMode", "blendModeComboBox", "combo"),
    ("amp", "ampCheckBox", "check"),
    ("backend", "backendComboBox", "combo"),
    ("keepWorkerWarm", "keepWorkerWarmCheckBox", "check"),
    ("trustBundle", "trustBundleCheckBox", "check"),
)
EXPLICIT_FIELDS = ("threshold", "segmentThresholds", "recentModels")

# Qt property read and written for each kind (ctkPathLineEdit.currentPath, QComboBox.currentText, …)
PROPERTY = {
    "path": "currentPath",
    "combo": "currentText",
    "check": "checked",
    "double": "value",
    "int": "value",
    "roi": "text",
    "window": "text",
}
# Qt signal emitted when the user changes it
SIGNALS = {
    "path": "currentPathChanged(QString)",
    "combo": "currentIndexChanged(int)",
    "check": "toggled(bool)",
    "double": "valueChanged(double)",
    "int": "valueChanged(int)",
    "roi": "editingFinished()",
    "window": "editingFinished()",
}


def from_widget(kind: str, raw: Any) -> Any:
    """Widget value → parameter value (an unreadable ROI text is stored as "model default")."""
    if kind == "roi":
        try:
            return parse_roi_size(str(raw)) or []
        except UserError:
            return []
    if kind == "window":
        return parse_window(str(raw))
    if kind == "check":
        return bool(raw)
    if kind == "int":
        return int(raw)
    if kind == "double":
        return float(raw)
    return str(raw)


def to_widget(kind: str, value: Any) -> Any:
    """Parameter value → what the widget property takes."""
    if kind == "window":
        return " ".join(f"{v:g}" for v in value)
    return format_roi_size(value) if kind == "roi" else value


def fill_combos(ui: Any, tooltip_role: Any) -> None:
    """The choices of each combo box, each with its tooltip (``tooltip_role``: ``qt.Qt.ToolTipRole``)."""
    for combo, items in (
        (ui.activationComboBox, rules.ACTIVATIONS),
        (ui.normalizationComboBox, rules.NORMALIZATION_ITEMS),
        (ui.deviceComboBox, rules.DEVICES),
        (ui.blendModeComboBox, rules.BLEND_MODES),
        (ui.backendComboBox, rules.BACKENDS),
    ):
        for value, tip in items:
            combo.addItem(value)
            combo.setItemData(combo.count - 1, tip, tooltip_role)


def connect(ui: Any, slot: Any) -> None:
    """Call ``slot`` whenever the user changes any bound widget (``ui``: ``slicer.util.childWidgetVariables``)."""
    for _field, name, kind in BINDINGS:
        getattr(ui, name).connect(SIGNALS[kind], slot)


def show(ui: Any, params: Any) -> None:
    """Put the bound ``Parameters`` fields into the widgets."""
    for field, name, kind in BINDINGS:
        setattr(getattr(ui, name), PROPERTY[kind], to_widget(kind, getattr(params, field)))


def read(ui: Any, params: Any) -> Any:
    """The bound fields of ``params`` set from the widgets; returns ``params``."""
    for field, name, kind in BINDINGS:
        setattr(params, field, from_widget(kind, getattr(getattr(ui, name), PROPERTY[kind])))
    return params
