"""Slicer-free engine: torch, MONAI, numpy and SimpleITK only.

Knows nothing of Slicer, Qt or processes. Arrays follow MONAI's convention: channel first,
spatial axes in voxel index order (i, j, k), affine = voxel index -> RAS millimetres, as
``LoadImage`` + ``EnsureChannelFirst`` give them. Grouped by responsibility: ``loading`` (a model file → a
``LoadedModel``), ``safety`` (the untrusted-model guards), ``running`` (one segmentation), ``backends`` (the CPU
backends), ``files`` (volumes and outputs on disk).
"""
