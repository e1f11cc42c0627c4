#!/usr/bin/env python3
"""subreaper.py CMD [ARG...]: runs CMD as a child of a process that adopts and reaps every
orphan below it (PR_SET_CHILD_SUBREAPER). libvirtd daemonizes QEMU probes and guests; on
machines whose PID 1 does not reap, their zombies would stay, and libvirtd waits ~10 s for
each to go. Exits with CMD's status once CMD and every adopted process are gone; SIGTERM and
SIGINT are passed on to CMD."""

import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("subreaper: prctl failed", file=sys.stderr)
        return 1
    child = os.fork()
    if child == 0:
        os.execvp(sys.argv[1], sys.argv[1:])
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: os.kill(child, s))
    status = 0
    while True:
        try:
            pid, st = os.wait()
        except ChildProcessError:
            return status
        except InterruptedError:
            continue
        if pid == child:
            status = os.waitstatus_to_exitcode(st)
            if status < 0:
                status = 128 - status


if __name__ == "__main__":
    sys.exit(main())
