"""The CPU backends: which one runs a run's windows (``choose``), how its answer is held to PyTorch's (``check``),
the private cache of exported networks (``cache``) and the oneDNN / OpenVINO forwards (``runtimes``)."""
