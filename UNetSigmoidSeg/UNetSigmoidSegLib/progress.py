"""Overall and per-stage progress of a batch on stderr, for the CLI and the demo."""

import sys


class Progress:
    """Overall and per-stage progress on stderr (one updating line on a terminal, stage lines otherwise)."""

    SPANS = {"preprocess": (0.0, 0.05), "inference": (0.05, 0.85), "postprocess": (0.85, 0.95), "write": (0.95, 1.0)}

    def __init__(self, total: int, quiet: bool = False) -> None:
        self.total = total
        self.case = 0
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.last = ""

    def start_case(self, index: int, name: str) -> None:
        self.case = index
        self.name = name

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        if self.quiet:
            return
        lo, hi = self.SPANS.get(stage, (0.0, 1.0))
        overall = (self.case + lo + (hi - lo) * min(1.0, fraction)) / max(1, self.total)
        bar = "#" * int(20 * fraction) + "-" * (20 - int(20 * fraction))
        line = (
            f"[{self.case + 1}/{self.total} {overall:4.0%}] {self.name}: {stage:<11} [{bar}] {fraction:4.0%} {message}"
        )
        if self.tty:
            sys.stderr.write("\r" + line[:150].ljust(150))
            sys.stderr.flush()
        elif stage != self.last or fraction >= 1.0:
            print(line, file=sys.stderr)
        self.last = stage

    def end_line(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\n")
