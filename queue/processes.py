"""Processes on this machine: a child's lifeline to its parent, and facts read from /proc.

A lifeline is Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``): the kernel sends
the child a signal when the thread that started it exits, however it exits (``kill -9``
included), so no child of ``taskrank serve`` outlives it.  Off Linux there is none, and the
facts read from /proc are unknown (None): callers then leave a process alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

_prctl: Callable[..., int] | None = None
_forker = 0  # the pid of the process about to fork (os.register_at_fork's ``before``)


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up once and before any fork (a forked child only calls it)."""
    global _prctl
    if _prctl is None and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl
            prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                              ctypes.c_ulong]
            prctl.restype = ctypes.c_int
            _prctl = prctl
    return _prctl


def die_with_parent(signum: int, parent: int) -> None:
    """Have the kernel send ``signum`` to this process when its parent exits; if ``parent``
    (the pid that started it) is already gone, take the signal now."""
    prctl = _load_prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    if os.getppid() != parent:  # it died before the prctl: the kernel will not tell us
        os.kill(os.getpid(), signum)


def lifeline(signum: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``signum`` when the calling
    thread exits (the kernel's rule: the *thread* that forked it); None off Linux."""
    if _load_prctl() is None:
        return None
    parent = os.getpid()
    return lambda: die_with_parent(signum, parent)


def forks_die_with_this_process(signum: int = signal.SIGKILL) -> None:
    """From now on every process forked here (RQ's work horse and scheduler) gets ``signum``
    when the process that forked it exits."""
    if _load_prctl() is None:
        return

    def note_forker() -> None:
        global _forker
        _forker = os.getpid()

    os.register_at_fork(before=note_forker, after_in_child=lambda: die_with_parent(
        signum, _forker))


def started_at(pid: int) -> int:
    """A process's start time in clock ticks after boot (field 22 of /proc/PID/stat); 0 when
    it is gone."""
    stat = _stat(pid)
    return int(stat[19]) if stat else 0


def parent_of(pid: int) -> int | None:
    """The parent pid of a live process, None when it is gone (or a zombie)."""
    stat = _stat(pid)
    return int(stat[1]) if stat and stat[0] != "Z" else None


def is_alive(pid: int, started: int | None = None) -> bool:
    """``pid`` runs (not a zombie) and, given ``started``, is the process that started then
    (not a later one that got the same pid)."""
    stat = _stat(pid)
    if not stat or stat[0] == "Z":
        return False
    return started is None or int(stat[19]) == started


def working_dir(pid: int) -> Path | None:
    """A process's current directory (redis-server's is its ``--dir``); None when unknown."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def program(pid: int) -> str | None:
    """The file name of the program a process runs (``redis-server``); None when unknown."""
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).name.removesuffix(" (deleted)")
    except OSError:
        return None


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state, ppid, ...); the name may hold spaces."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()
