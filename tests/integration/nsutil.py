"""Process, mount and network-namespace helpers for the test-cluster harness (root only)."""

import ctypes
import os
import signal
import subprocess
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)


class CommandError(subprocess.CalledProcessError):
    """A command failed; str() carries argv, exit status and stderr so test output says why."""

    def __init__(self, where, cp):
        super().__init__(cp.returncode, cp.args, cp.stdout, cp.stderr)
        self.where = where

    def __str__(self):
        err = (self.stderr or "").strip() or (self.stdout or "").strip()
        return (f"{self.where}: {' '.join(map(str, self.cmd))} exited with {self.returncode}"
                + (f": {err[-2000:]}" if err else ""))


def sh(argv, check=True, timeout=30, where="host machine", **kw):
    """Runs argv in the harness's own namespaces, capturing text output."""
    if "input" not in kw:
        kw["stdin"] = subprocess.DEVNULL
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and cp.returncode != 0:
        raise CommandError(where, cp)
    return cp


def become_subreaper():
    """Orphans of our daemons get reparented to us instead of PID 1, which does not reap here."""
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(e)}")


def die_with_parent():
    """preexec_fn for daemons: they are killed if the harness process dies without cleanup."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def pid_alive(pid):
    """True if pid is a running process; a zombie (dead, not yet reaped) is not."""
    st = _proc_stat(pid)
    return st is not None and st[0] != "Z"


def ns_inode(path):
    """Inode of a namespace file (/run/netns/X or /proc/PID/ns/net), None if it is gone."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _proc_stat(pid):
    """(state, ppid) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def pids_in_netns(inode):
    """Every live process whose network namespace is `inode` (zombies have none)."""
    if inode is None:
        return set()
    me = os.getpid()
    found = set()
    for pid in all_pids():
        if pid != me and ns_inode(f"/proc/{pid}/ns/net") == inode:
            found.add(pid)
    return found


def with_descendants(pids):
    """pids plus all their descendants (e.g. a workload in its own netns started by migrd)."""
    children = {}
    for pid in all_pids():
        st = _proc_stat(pid)
        if st:
            children.setdefault(st[1], []).append(pid)
    result, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid in result:
            continue
        result.add(pid)
        todo.extend(children.get(pid, []))
    result.discard(os.getpid())
    return result


def _thaw_freezers(pid):
    """A task in a frozen cgroup-v1 freezer does not die from SIGKILL until thawed."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        targets = []
        if "freezer" in ctrls.split(","):
            targets.append((f"/sys/fs/cgroup/freezer{path}/freezer.state", "THAWED"))
        if ctrls == "":
            for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
                targets.append((f"{root}{path}/cgroup.freeze", "0"))
        for fn, value in targets:
            try:
                with open(fn, "w") as f:
                    f.write(value)
            except OSError:
                pass


def kill_and_reap(pids, popens, timeout=10.0):
    """SIGKILLs pids and waits until each is gone.

    popens maps pid -> subprocess.Popen for the processes we started (they are reaped through
    their Popen so it records the status); other children of ours (orphans we adopted as
    subreaper) are reaped with waitpid; anything else is only waited for.
    Returns the pids that would not die.
    """
    me = os.getpid()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    thawed = False
    pending = set(pids)
    while pending:
        for pid in list(pending):
            p = popens.get(pid)
            if p is not None:
                if p.poll() is not None:
                    pending.discard(pid)
                continue
            st = _proc_stat(pid)
            if st is None:
                pending.discard(pid)
            elif st[0] == "Z":
                if st[1] == me:
                    try:
                        os.waitpid(pid, 0)
                    except ChildProcessError:
                        pass
                pending.discard(pid)   # a zombie of someone else: dead, nothing more we can do
        if not pending:
            break
        if time.monotonic() > deadline:
            if thawed:
                break
            thawed = True
            for pid in pending:
                _thaw_freezers(pid)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
        time.sleep(0.02)
    return pending


def reap_zombie_children():
    """Reaps every child of ours that is already a zombie (only safe at exit: it would steal
    the exit status of a Popen that is still to be waited for)."""
    me = os.getpid()
    for pid in all_pids():
        st = _proc_stat(pid)
        if st and st[0] == "Z" and st[1] == me:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _unescape(field):
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1:i + 4]) == 3 and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounts():
    """[(mount point, fs type)] of the harness's mount namespace, in mount order."""
    result = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            result.append((_unescape(left.split()[4]), right.split()[0]))
    return result


def mounts_under(path):
    path = os.path.realpath(path)
    return [m for m, _ in mounts() if m == path or m.startswith(path + "/")]


def umount_under(path):
    """Unmounts everything at or below path, deepest first; lazily if a mount is busy."""
    errors = []
    for _ in range(5):
        found = mounts_under(path)
        if not found:
            return errors
        for m in sorted(found, key=len, reverse=True):
            cp = sh(["umount", m], check=False)
            if cp.returncode != 0:
                cp = sh(["umount", "-l", m], check=False)
                if cp.returncode != 0 and m in mounts_under(path):
                    errors.append(f"umount {m}: {cp.stderr.strip()}")
    left = mounts_under(path)
    if left:
        errors.append(f"still mounted under {path}: {left}")
    return errors


def netns_list():
    try:
        return sorted(os.listdir("/run/netns"))
    except FileNotFoundError:
        return []


def netns_delete(name):
    if not os.path.exists(f"/run/netns/{name}"):
        return None
    cp = sh(["ip", "netns", "delete", name], check=False)
    if cp.returncode != 0 and os.path.exists(f"/run/netns/{name}"):
        return f"ip netns delete {name}: {cp.stderr.strip()}"
    return None


__all__ = ["CommandError", "sh", "become_subreaper", "die_with_parent", "pid_alive", "ns_inode",
           "pids_in_netns", "with_descendants", "kill_and_reap", "reap_zombie_children",
           "mounts", "mounts_under", "umount_under", "netns_list", "netns_delete"]
