"""Slicer adapter: volume node ⇄ engine arrays, results → segmentation node, live threshold,
probability volume, review aids, parameter node and the logic facade.

Needs ``slicer`` (the application, or the ``slicer-core`` package); every function takes the scene
as an argument and falls back to ``slicer.mrmlScene`` only where the application provides one.
"""
