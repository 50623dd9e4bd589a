"""UNetSigmoidSeg library: engine (torch/MONAI), worker, Slicer adapter, CLI."""

__version__ = "0.1.0"
NOT_CLINICAL = "Research use — not for clinical use."
NOT_CLINICAL_ASCII = "Research use - not for clinical use."  # for file headers that must stay ASCII
