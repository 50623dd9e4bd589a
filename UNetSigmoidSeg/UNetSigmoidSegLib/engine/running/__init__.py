"""One run: ``pipeline.segment`` — preprocessing (``preprocess``), the memory guard (``memory``), sliding-window
inference on a device (``inference``), activation and thresholding (``probabilities``), clean-up (``postprocess``)
and the plausibility checks before and after (``plausibility``)."""
