"""The Slicer panel's behaviour, without Qt: rules the module file wires to widgets.

``debounce`` (live threshold slider), ``rules`` (button states, labels, run options, errors),
``bindings`` (parameter ⇄ widget table), ``dependencies`` (torch / MONAI check, consent, install),
``summary`` (the model line, read by the worker), ``tap`` (worker log lines to the panel),
``resources`` (where the .ui, icon and demo files are), ``selftest`` (the in-Slicer self-test).
Importable without Qt, Slicer or torch, so the CI tests them directly.
"""
