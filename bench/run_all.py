"""Run every benchmark, one after the other (``make bench``): redirect, postback, split,
reports. Each prints its figures and a ``RESULT`` line and writes bench/results/<name>.json;
this prints the RESULT lines again at the end. Figures are printed, never asserted.

Needs wrk (``apt-get install -y wrk``), PostgreSQL and Redis on 127.0.0.1 (``make services``)
and the bench extras (``pip install -e '.[bench]'``, for the profiles). Settings: see
bench/common.py (``PARTNERNET_BENCH_PG_URL``, ``PARTNERNET_BENCH_REDIS_URL``,
``PARTNERNET_BENCH_SECONDS``...). ``python bench/run_all.py redirect split`` runs some only;
``python bench/run_all.py issue14`` the click-path set (``one-core``: bench/redirect.py --one-core,
``two-core-matrix``, ``writer``: bench/writer.py, ``scale``: bench/scale.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# name -> the script and its arguments; ``issue14`` runs the click-path set in one go.
COMMANDS = {
    "redirect": ["redirect.py"],
    "postback": ["postback.py"],
    "split": ["split.py"],
    "reports": ["reports.py"],
    "one-core": ["redirect.py", "--one-core"],
    "two-core-matrix": ["redirect.py", "--two-core-matrix"],
    "writer": ["writer.py"],
    "scale": ["scale.py"],
}
ALL = ["redirect", "postback", "split", "reports", "one-core", "writer", "scale"]
GROUPS = {"issue14": ["one-core", "two-core-matrix", "writer", "scale"]}


def main(argv: list[str]) -> int:
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    names = [n for arg in (argv or ALL) for n in GROUPS.get(arg, [arg])]
    results, failed = [], []
    for name in names:
        if name not in COMMANDS:
            print(f"unknown benchmark {name}; choose from {', '.join([*COMMANDS, *GROUPS])}", file=sys.stderr)
            return 2
        print(f"==== {name} ({time.strftime('%H:%M:%S')}, load average {os.getloadavg()[0]:.2f})", flush=True)
        script, *args = COMMANDS[name]
        proc = subprocess.Popen([sys.executable, str(HERE / script), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=HERE)
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.startswith("RESULT "):
                results.append(line.strip())
        if proc.wait() != 0:
            failed.append(name)
    print("==== summary")
    for line in results:
        print(line)
    if failed:
        print(f"failed to run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
