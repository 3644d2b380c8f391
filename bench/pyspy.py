"""`make profile`: where a GET /v1/patients/{id} spends its server CPU, by py-spy.

Reuses bench/run.py's stack and seed (BENCH_PATIENTS), serves core with one worker, drives
GET /v1/patients/{id} with wrk for PROFILE_S seconds while py-spy samples the worker, and
prints the functions with the largest share of samples (inclusive and own), grouped by
library. The raw collapsed stacks stay in .data/bench/profile.txt for a flame graph.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import run

PROFILE_S = int(os.environ.get("PROFILE_S", "10"))
OUT = run.BENCH_DIR / "profile.txt"


def _group(frame: str) -> str:
    """The library a frame belongs to, from py-spy's short path (`psycopg/cursor.py:12`)."""
    path = frame.rsplit("(", 1)[-1]
    top = path.split("/", 1)[0] if "/" in path else path.split(".", 1)[0]
    if top in ("src", "carebase", "generated") or "/work/" in path:
        return "carebase"
    return top or "other"


def report(collapsed: Path) -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    groups: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
        groups[_group(frames[-1])] += count
    print(f"\n{total} samples\n\nown time by library:")
    for name, count in groups.most_common():
        print(f"  {count / total:6.1%}  {name}")
    print("\nown time, top functions:")
    for frame, count in own.most_common(25):
        print(f"  {count / total:6.1%}  {frame}")
    print("\ninclusive time, top carebase functions:")
    shown = 0
    for frame, count in inclusive.most_common():
        if _group(frame) == "carebase" and shown < 40:
            print(f"  {count / total:6.1%}  {frame}")
            shown += 1


def main() -> None:
    wrk = run.ensure_wrk()
    stack = run.prepared_stack()
    try:
        token = run.seeded_token(stack)
        server = run.start_server(stack, 1)
        try:
            workers = psutil.Process(server.pid).children(recursive=True) or [
                psutil.Process(server.pid)
            ]
            url = f"http://{run.HOST}:{run.PORT}/v1/patients"
            headers = [f"Authorization: Bearer {token}"]
            run.run_wrk(wrk, url, 3, headers, "random-patient.lua")
            load = threading.Thread(
                target=run.run_wrk,
                args=(wrk, url, PROFILE_S + 2, headers, "random-patient.lua"),
            )
            load.start()
            subprocess.run(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--format",
                    "raw",
                    "--duration",
                    str(PROFILE_S),
                    "--rate",
                    "250",
                    "--nonblocking",
                    "--output",
                    str(OUT),
                    "--pid",
                    str(workers[-1].pid),
                ],
                check=True,
                capture_output=True,
            )
            load.join()
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        stack.stop()
    report(OUT)


if __name__ == "__main__":
    main()
