"""C1: ``unetsigmoidseg inspect`` on the demo bundle vs ``python -c "import torch, monai"`` (goal ≤ 1.5×).

Both are fresh processes of this interpreter, interleaved, best of ``--repeats``; the ratio is printed side by side.

Usage: python Testing/benchmarks/bench_cli.py [--repeats 5] [--json out.json]
"""

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUNDLE = os.path.join(REPO, "Resources", "Models", "BrainT1UNet")
COMMANDS = {
    "import torch, monai": [sys.executable, "-c", "import torch, monai"],
    "inspect demo bundle": [sys.executable, "-m", "UNetSigmoidSegLib.cli", "inspect", BUNDLE],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([os.path.join(REPO, "UNetSigmoidSeg"), os.environ.get("PYTHONPATH", "")])
    )
    best = {name: float("inf") for name in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run(cmd, check=True, env=env, capture_output=True)
            best[name] = min(best[name], time.perf_counter() - started)
    ratio = best["inspect demo bundle"] / best["import torch, monai"]
    for name, seconds in best.items():
        print(f"C1 {name:<22} {seconds:6.2f} s (best of {args.repeats})")
    print(f"C1 inspect / import torch, monai = {ratio:.2f}x (goal <= 1.5x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"C1": {"seconds": best, "ratio": ratio, "goal": 1.5}}, f, indent=2)


if __name__ == "__main__":
    main()
