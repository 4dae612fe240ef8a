"""Process plumbing shared by the launchers and the engine's snapshot child."""

from __future__ import annotations

import ctypes
import signal
import sys


def die_with_parent() -> None:  # pragma: no cover - runs in a forked child
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere a no-op).

    Meant for ``preexec_fn`` of a child process, or the first call of a forked child: a child
    must never outlive the process that started it.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
