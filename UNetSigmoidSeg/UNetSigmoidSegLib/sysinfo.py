"""Facts about this process and machine, for logs and guards (standard library, psutil when present)."""

import sys
from typing import Any, Optional


def peak_rss_bytes() -> Optional[int]:
    """This process's peak resident set size so far."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except (ImportError, OSError):
        try:
            import psutil

            info = psutil.Process().memory_info()
            return int(getattr(info, "peak_wset", info.rss))
        except Exception:  # noqa: BLE001
            return None


def available_memory_bytes() -> Optional[int]:
    """Memory the system can still give this process (Linux MemAvailable, else psutil), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None


def package_version(dist: str) -> str:
    """The installed version of distribution ``dist``, or "unknown"."""
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001
        return "unknown"


def trim_heap() -> None:
    """Give the freed heap back to the system (glibc ``malloc_trim``): a long-running server's memory then falls back
    after each big job instead of staying at its peak. Elsewhere a no-op."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else False
        except OSError:
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC: Any = None


def rss_bytes() -> Optional[int]:
    """This process's resident memory now (psutil), or None."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - psutil is optional for the server
        return None
