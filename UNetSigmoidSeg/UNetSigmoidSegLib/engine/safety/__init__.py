"""The trust boundary around untrusted model files: bounded JSON/YAML reading (``safeload``), our own config
interpreter (``configreader``) over an allow-list of MONAI classes and argument kinds (``allowlist``, ``targets``,
``kinds``), and the guard around an untrusted network's forward at run time (``netguard``)."""
