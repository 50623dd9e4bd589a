"""Loading a model: ``model.load_model`` (bundle folder or ``.zip``, TorchScript, plain checkpoint), the checkpoint
reader and UNet hyper-parameter detection (``checkpoint``, ``unet``), bundles (``bundle``, ``bundlezip``) and the
settings beside a checkpoint (``sidecar``)."""
