"""The embedded stack's start-up chores, on a scratch directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from carebase.operations.devstack import HANDLE_PIDS, forget_dead_handles


def test_dead_processes_leave_the_handle_list(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(done.stdout)
    (tmp_path / HANDLE_PIDS).write_text(json.dumps([dead, os.getpid()]))
    assert forget_dead_handles(tmp_path) == [dead]
    assert json.loads((tmp_path / HANDLE_PIDS).read_text()) == [os.getpid()]
    assert forget_dead_handles(tmp_path) == []


def test_no_list_no_change(tmp_path: Path) -> None:
    assert forget_dead_handles(tmp_path) == []
    assert not (tmp_path / HANDLE_PIDS).exists()
