"""Processes that die with their parent (Linux's parent-death signal)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent(signum: int = signal.SIGTERM, *, parent: int | None = None) -> None:
    """Have the kernel send this process `signum` when its parent dies; if the parent
    (`parent`, when the caller knows it) is already gone, send it now. Elsewhere than
    Linux: nothing (a supervisor's children then outlive a kill -9 of it)."""
    if not sys.platform.startswith("linux"):
        return
    expected = os.getppid() if parent is None else parent
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        return
    if os.getppid() != expected:  # it died before the signal was asked for
        os.kill(os.getpid(), signum)


def child_dies_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A `preexec_fn` for subprocess.Popen: the child gets `signum` when we die."""
    parent = os.getpid()
    return lambda: die_with_parent(signum, parent=parent)
