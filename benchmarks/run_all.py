"""Run every benchmark script in sequence, each in its own interpreter.

Exit status is non-zero only when a script crashed; missed targets are printed by
the scripts, not enforced.

Run: ``python benchmarks/run_all.py [--small]``
"""

from __future__ import annotations

import subprocess
import sys
import time

from _common import HERE, parse_args

SCRIPTS = ("throughput.py", "cycle.py", "dask.py", "submit.py", "latency.py", "detached.py", "approval.py",
           "scale.py", "panel.py", "fanout.py", "crash_campaign.py", "write_amplification.py",
           "opening.py", "pauses.py", "gc.py", "map.py",
           "controls.py")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    crashed = []
    for script in SCRIPTS:
        command = [sys.executable, str(HERE / script)] + (["--small"] if args.small else [])
        print(f"$ {' '.join(command)}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.run(command).returncode
        print(f"({script}: exit {code}, {time.perf_counter() - t0:.1f} s)\n", flush=True)
        if code != 0:
            crashed.append(script)
    if crashed:
        print(f"crashed: {', '.join(crashed)}")
        return 1
    print(f"all {len(SCRIPTS)} benchmark scripts ran (targets are printed above, not enforced)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
