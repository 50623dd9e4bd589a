"""Cache key of a model on disk (no torch import: the Slicer panel uses it before torch is installed)."""

import json
import os
from typing import Any, Dict, Tuple


def model_cache_key(path: str, options: Dict[str, Any]) -> Tuple[str, int, str]:
    """Key for caching a loaded model: absolute path, newest modification time (the file and the JSON next
    to it, or any file in a bundle folder) and the load options. Editing any of them means a reload."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    candidates = [path, os.path.splitext(path)[0] + ".json", str(options.get("network_config") or "")]
    if os.path.isdir(path):
        candidates = [os.path.join(root, name) for root, _dirs, files in os.walk(path) for name in files]
    mtime = max([os.stat(c).st_mtime_ns for c in candidates if c and os.path.isfile(c)] or [0])
    return path, mtime, json.dumps(options, sort_keys=True, default=str)
