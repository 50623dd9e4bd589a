"""UNetSigmoidSeg library: engine (torch/MONAI), worker, Slicer adapter, CLI."""

__version__ = "0.1.0"
