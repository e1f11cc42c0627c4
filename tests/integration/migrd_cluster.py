"""A cluster of N migrd hosts on one machine: network + mount namespaces, corosync and migrd.

Topology (docs: /work/shared/DESIGN.md "Test topology", CLUSTER-NOTES.md):
- a bridge network namespace `<tag>-br` holding `br0`;
- per host `hN` a network namespace `<tag>-hN` with `eth0` (10.77.<k>.N/24) whose veth peer
  `vhN` is enslaved to `br0`, and a persistent private mount namespace (bound at
  `<workdir>/hN/ns/mnt`) in which /run, /var/lib/corosync, /var/lib/migrd, /etc/corosync and
  /etc/migrd are bind mounts of `<workdir>/hN/...` and /dev/shm is a private tmpfs;
- `corosync -f` and `migrd --config /etc/migrd/migrd.conf` run inside both namespaces.
`<tag>` is `migrdt-<pid>-<seq>` so parallel runs and leftovers of crashed runs can be told apart.

Usage:
    with Cluster(3) as c:
        c["h1"].migctl("hosts")
        c["h3"].kill()
Needs root. Everything made is removed by stop(), on exceptions, SIGINT/SIGTERM/SIGHUP and at exit.
"""

import atexit
import glob
import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from nsutil import (CommandError, sh, become_subreaper, ns_inode, pids_in_netns,
                    with_descendants, kill_and_reap, mounts, mounts_under, umount_under,
                    netns_list, netns_delete, reap_zombie_children)
from migrd_host import (PREFIX, TAG_RE, MARKER, CONTROL_SOCKET, MIGRD_CONF, STALE_GLOB_DIR,
                        HOST_BINDS, LIBVIRT_BINDS, ClusterError, WaitTimeout, ProcessDied,
                        MigctlError, Quorum, Host, default_build_dir, nsenter_argv, wait_for, tail_file,
                        _owner_alive)

__all__ = ["Cluster", "Host", "Quorum", "ClusterError", "WaitTimeout", "ProcessDied",
           "MigctlError", "CommandError", "wait_for", "nsenter_argv", "default_build_dir",
           "prerequisite_problems", "tail_file", "CONTROL_SOCKET", "MIGRD_CONF"]


# --- process-wide cleanup on signals and exit ------------------------------------------------

_live = []                 # clusters started and not yet torn down
_seq = itertools.count(1)
_teardown_depth = 0
_pending_signals = []
_prev_handlers = {}
_hooks_installed = False


def _on_signal(signum, frame):
    if _teardown_depth:
        _pending_signals.append(signum)      # let teardown finish; re-raised afterwards
        return
    if not _live:
        prev = _prev_handlers.get(signum)
        if callable(prev):
            return prev(signum, frame)
        if prev == signal.SIG_IGN:
            return None
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return None
    # Unwind normally: context managers / pytest fixtures tear down, atexit is the backstop.
    raise KeyboardInterrupt(f"{signal.Signals(signum).name}: tearing down test clusters")


def _at_exit():
    for c in list(_live):
        try:
            c.stop()
        except Exception as e:        # noqa: BLE001 - nothing left to raise to
            print(f"migrd_cluster: teardown of {c.tag} at exit: {e}", flush=True)
    # As subreaper we may hold zombies of adopted orphans; after we exit they would go to
    # PID 1, which reaps late if at all on this machine. Nobody waits for anything any more.
    reap_zombie_children()


def _install_hooks():
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    become_subreaper()
    atexit.register(_at_exit)
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            prev = signal.getsignal(s)
            if prev != signal.SIG_IGN:         # e.g. SIGHUP under nohup stays ignored
                _prev_handlers[s] = prev
                signal.signal(s, _on_signal)


def prerequisite_problems(migrd=True, build_dir=None):
    """What keeps a cluster from being built here: a list of sentences, empty if none."""
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (it builds network and mount namespaces)")
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
    for tool in ("corosync", "corosync-quorumtool", "ip", "nsenter", "unshare", "setpriv",
                 "mount", "umount"):
        if shutil.which(tool, path=path) is None:
            problems.append(f"`{tool}` not found (scripts/install-deps.sh installs it)")
    if migrd:
        b = os.path.abspath(build_dir or default_build_dir())
        for exe in ("migrd/migrd", "migctl/migctl"):
            if not os.access(os.path.join(b, exe), os.X_OK):
                problems.append(f"{b}/{exe} is not built (cmake -S . -B build && "
                                "cmake --build build), or set MIGRD_BUILD_DIR")
    return problems


# --- the cluster ---------------------------------------------------------------------------------

class Cluster:
    def __init__(self, n, workdir=None, build_dir=None, token_ms=1000, migrd=True,
                 start_timeout=60, migrd_conf_extra="", settle=True, pki=False, libvirt=False):
        if not 1 <= n <= 32:
            raise ValueError("a cluster has 1 to 32 hosts")
        self.n = n
        self.seq = next(_seq)
        self.tag = f"{PREFIX}-{os.getpid()}-{self.seq}"
        # Each run has its own bridge, so addresses cannot collide; k still differs per run
        # so that logs and captures of parallel runs are easy to tell apart.
        self.subnet = f"10.77.{(os.getpid() * 7 + self.seq) % 250 + 1}"
        self.build_dir = os.path.abspath(build_dir or default_build_dir())
        self.migrd_bin = os.path.join(self.build_dir, "migrd", "migrd")
        self.migctl_bin = os.path.join(self.build_dir, "migctl", "migctl")
        self.token_ms = token_ms
        self.migrd = migrd
        self.start_timeout = start_timeout
        self.settle = settle
        self.migrd_conf_extra = migrd_conf_extra
        # pki=True: a cluster CA and a certificate per host (made with `migctl ca`), so the
        # hosts' transports are up; the files land in each host's /etc/migrd/pki.
        self.pki = pki
        # libvirt=True: each host runs its own virtlogd and libvirtd (TCP between the hosts).
        self.libvirt = libvirt
        self._workdir_arg = workdir
        self.workdir = None
        self.bridge_ns = f"{self.tag}-br"
        self.hosts = [Host(self, i) for i in range(1, n + 1)]
        self.timings = {}
        self.state = "new"

    def __repr__(self):
        return f"<Cluster {self.tag} n={self.n} {self.state} {self.workdir}>"

    def __getitem__(self, name):
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def __iter__(self):
        return iter(self.hosts)

    def __len__(self):
        return self.n

    def __enter__(self):
        return self.start() if self.state == "new" else self   # `with Cluster(3).start() as c`

    def __exit__(self, exc_type, exc, tb):
        try:
            self.stop()
        except ClusterError as e:
            if exc_type is None:
                raise
            print(f"migrd_cluster: {e}", flush=True)
        return False

    # -- configuration --

    def corosync_conf(self):
        nodes = "".join(f"    node {{\n        ring0_addr: {h.address}\n        name: {h.name}\n"
                        f"        nodeid: {h.nodeid}\n    }}\n" for h in self.hosts)
        two_node = "    two_node: 1\n" if self.n == 2 else ""
        return ("# written by tests/integration/migrd_cluster.py\n"
                "totem {\n    version: 2\n    cluster_name: migrdt\n    transport: knet\n"
                f"    token: {self.token_ms}\n    crypto_cipher: none\n    crypto_hash: none\n}}\n"
                f"nodelist {{\n{nodes}}}\n"
                f"quorum {{\n    provider: corosync_votequorum\n{two_node}}}\n"
                "logging {\n    to_stderr: yes\n    to_syslog: no\n    to_logfile: no\n"
                "    timestamp: hires\n    debug: off\n}\n")

    def migrd_conf(self, host):
        text = (f"[host]\nname = {host.name}\naddress = {host.address}\n\n"
                f"[paths]\nstate_dir = /var/lib/migrd\ncontrol_socket = {CONTROL_SOCKET}\n\n"
                "[log]\nlevel = debug\ntarget = console\n")
        if self.pki:
            text += ("\n[transport]\nca_file = /etc/migrd/pki/ca.crt\n"
                     f"cert_file = /etc/migrd/pki/{host.name}.crt\n"
                     f"key_file = /etc/migrd/pki/{host.name}.key\n")
        if self.migrd_conf_extra:
            text += "\n" + self.migrd_conf_extra.strip("\n") + "\n"
        return text

    def _make_pki(self):
        """The two commands an operator runs: a cluster CA, then one certificate per host."""
        ca = os.path.join(self.workdir, "pki")
        subprocess.run([self.migctl_bin, "ca", "init", "--dir", ca, "--cluster", self.tag],
                       check=True, capture_output=True, text=True)
        for h in self.hosts:
            subprocess.run([self.migctl_bin, "ca", "issue", h.name, "--dir", ca, "--out",
                            h.path("etc", "migrd", "pki")], check=True, capture_output=True,
                           text=True)

    # -- lifecycle --

    def check_prerequisites(self):
        """Raises ClusterError saying what is missing on this machine."""
        problems = prerequisite_problems(self.migrd, self.build_dir)
        if problems:
            raise ClusterError("cannot build a test cluster: " + "; ".join(problems))

    def start(self, wait=True):
        """Builds namespaces, starts corosync everywhere and waits until all N are members
        and quorate; then (migrd=True) starts migrd everywhere and waits until each answers
        `status` and (settle=True) until they agree (wait_settled). wait=False returns as
        soon as the daemons are started. On any failure (or interruption) everything made
        so far is removed."""
        if self.state != "new":
            raise ClusterError(f"{self.tag} was already started")
        self.check_prerequisites()
        _install_hooks()
        _live.append(self)
        self.state = "starting"
        try:
            t0 = time.monotonic()
            self._make_workdir()
            self._make_network()
            for h in self.hosts:
                h._setup()
            if self.pki:
                self._make_pki()
            t1 = time.monotonic()
            self.timings["namespaces_s"] = t1 - t0
            for h in self.hosts:
                h.start_corosync(wait=False)
                h.up = True
            if wait:
                self.wait_formed(timeout=self.start_timeout)
            t2 = time.monotonic()
            self.timings["corosync_formed_s"] = t2 - t1
            if self.libvirt:
                for h in self.hosts:
                    h.start_libvirt(wait=False)
                if wait:
                    for h in self.hosts:
                        h.wait_libvirt(max(self.start_timeout, 90))
                self.timings["libvirt_ready_s"] = time.monotonic() - t2
            if self.migrd:
                for h in self.hosts:
                    h.start_migrd(wait=False)
                if wait:
                    for h in self.hosts:
                        h.wait_migrd_ready(self.start_timeout)
                self.timings["migrd_ready_s"] = time.monotonic() - t2
                if wait and self.settle:
                    self.timings["migrd_settled_s"] = self.wait_settled(self.start_timeout)
            self.state = "running"
        except BaseException:
            try:
                self.stop()
            except Exception as e:     # noqa: BLE001 - the original error matters more
                print(f"migrd_cluster: teardown after failed start: {e}", flush=True)
            raise
        return self

    def _make_workdir(self):
        wd = self._workdir_arg
        if wd is None:
            wd = tempfile_dir(self.tag)
        else:
            wd = os.path.abspath(wd)
            if os.path.exists(wd) and os.listdir(wd):
                raise ClusterError(f"workdir {wd} exists and is not empty; the harness removes "
                                   "its workdir at the end, so it must be its own")
            os.makedirs(wd, exist_ok=True)
        self.workdir = wd
        with open(os.path.join(wd, MARKER), "w") as f:
            f.write(self.tag + "\n")
        # Mount points for the per-host binds (empty dirs; what migrd's package creates anyway).
        for inside, _ in HOST_BINDS + (LIBVIRT_BINDS if self.libvirt else []):
            os.makedirs(inside, exist_ok=True)

    def _make_network(self):
        br = self.bridge_ns
        # Our tag is unique in this process, so namespaces already carrying it belong to a
        # crashed run that had our pid: its owner is dead.
        for ns in netns_list():
            if ns.startswith(self.tag + "-"):
                kill_and_reap(with_descendants(pids_in_netns(ns_inode(f"/run/netns/{ns}"))), {})
                netns_delete(ns)
        for ns in [br] + [h.netns for h in self.hosts]:
            sh(["ip", "netns", "add", ns])
        sh(["ip", "-n", br, "-batch", "-"],
           input="link set lo up\nlink add br0 type bridge\nlink set br0 up\n")
        for h in self.hosts:
            sh(["ip", "-n", h.netns, "-batch", "-"], where=h.name, input=(
                "link set lo up\n"
                f"link add eth0 type veth peer name {h.veth} netns {br}\n"
                f"addr add {h.address}/24 dev eth0\n"
                "link set eth0 up\n"))
        sh(["ip", "-n", br, "-batch", "-"], input="".join(
            f"link set {h.veth} master br0\nlink set {h.veth} up\n" for h in self.hosts))

    def wait_formed(self, hosts=None, timeout=30):
        """Waits until every given host (default: those up) sees exactly those hosts as
        members and is quorate. Returns the seconds it took."""
        t0 = time.monotonic()
        hosts = hosts if hosts is not None else [h for h in self.hosts if h.up]
        ids = [h.nodeid for h in hosts]
        deadline = time.monotonic() + timeout
        for h in hosts:
            h.wait_quorum(members=ids, quorate=True, timeout=max(1, deadline - time.monotonic()))
        return time.monotonic() - t0

    def wait_settled(self, timeout=30):
        """Waits until the migrds of the hosts that are up agree (docs/control-api.md):
        each `status` lists exactly those hosts as members, is synced, quorate when they are
        a majority, with the same state_hash; each `hosts` shows them online and quorate with
        metrics, and every other host offline. Returns the seconds it took."""
        t0 = time.monotonic()
        up = [h for h in self.hosts if h.up]
        ids = sorted(h.nodeid for h in up)
        majority = len(up) * 2 > self.n or (self.n == 2 and len(up) >= 1)

        def settled():
            hashes = set()
            for h in up:
                h._check_alive("migrd")
                st = h.status()
                if sorted(st.get("members") or []) != ids or not st.get("synced") \
                        or bool(st.get("quorate")) != majority:
                    return None
                hashes.add(st.get("state_hash"))
                for x in h.hosts():
                    if x["nodeid"] in ids:
                        if not x["online"] or x["quorate"] != majority or x["metrics"] is None:
                            return None
                    elif x["online"]:
                        return None
            return len(hashes) == 1
        self.wait_for(settled, timeout, f"migrd on {[h.name for h in up]} to agree")
        return time.monotonic() - t0

    def wait_for(self, predicate, timeout=30, what="condition", interval=0.1):
        return wait_for(predicate, timeout, what, interval, details=self.log_tails)

    def log_tails(self, lines=25):
        return "\n".join(h.log_tail(lines) for h in self.hosts)

    def save_logs(self, dest):
        """Copies every host's logs to dest/hN/ (for failed tests; the workdir is removed)."""
        for h in self.hosts:
            if h.dir and os.path.isdir(h.dir):
                os.makedirs(os.path.join(dest, h.name), exist_ok=True)
                for log in glob.glob(h.path("*.log")):
                    shutil.copy(log, os.path.join(dest, h.name))
                for conf in ("etc/corosync/corosync.conf", "etc/migrd/migrd.conf"):
                    if os.path.exists(h.path(conf)):
                        shutil.copy(h.path(conf), os.path.join(dest, h.name))
        return dest

    def info(self):
        """What a separate process needs to reach the hosts (used by scripts/cluster)."""
        return {"tag": self.tag, "workdir": self.workdir, "build_dir": self.build_dir,
                "bridge_ns": self.bridge_ns, "owner_pid": os.getpid(),
                "hosts": [{"name": h.name, "nodeid": h.nodeid, "address": h.address,
                           "netns": h.netns, "mnt_ns": h.mnt_ns, "dir": h.dir,
                           "pids": {k: p.pid for k, p in h.procs.items() if p.poll() is None}}
                          for h in self.hosts]}

    def _remove_container_cgroups(self):
        """The cgroups of the hosts' containers (<host>.<name> under migrd/ in every hierarchy),
        empty once the hosts' processes are gone; best effort: a busy one is left."""
        roots = ["/sys/fs/cgroup/unified/migrd", "/sys/fs/cgroup/migrd"] + [
            f"/sys/fs/cgroup/{c}/migrd" for c in ("freezer", "memory", "cpu,cpuacct", "cpu")]
        prefixes = tuple(f"{h.name}." for h in self.hosts)
        for root in roots:
            try:
                names = [n for n in os.listdir(root) if n.startswith(prefixes)]
            except OSError:
                continue
            for n in names:
                for _ in range(20):
                    try:
                        os.rmdir(os.path.join(root, n))
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)   # just emptied: the kernel may still be busy

    def stop(self):
        """Removes everything the cluster made: processes, mounts, namespaces, workdir.

        Idempotent; signals arriving meanwhile are held until it is done. Raises ClusterError
        listing what could not be removed."""
        global _teardown_depth
        if self.state in ("new", "stopped"):
            return
        _teardown_depth += 1
        errors = []
        try:
            for h in self.hosts:
                try:
                    h._kill_processes()
                except Exception as e:     # noqa: BLE001 - collect, keep tearing down
                    errors.append(str(e))
                h.up = False
            self._remove_container_cgroups()
            br_pids = pids_in_netns(ns_inode(f"/run/netns/{self.bridge_ns}"))
            if br_pids:
                kill_and_reap(with_descendants(br_pids), {})
            if self.workdir:
                errors += umount_under(self.workdir)
            for ns in [h.netns for h in self.hosts] + [self.bridge_ns]:
                err = netns_delete(ns)
                if err:
                    errors.append(err)
            if self.workdir and os.path.isdir(self.workdir):
                if mounts_under(self.workdir):
                    errors.append(f"not removing {self.workdir}: mounts remain under it")
                else:
                    shutil.rmtree(self.workdir, ignore_errors=True)
                    if os.path.exists(self.workdir):
                        errors.append(f"could not remove {self.workdir}")
            self.state = "stopped"
            if self in _live:
                _live.remove(self)
        finally:
            _teardown_depth -= 1
        if errors:
            raise ClusterError(f"{self.tag}: teardown incomplete: " + "; ".join(errors))
        if _pending_signals and not _teardown_depth:
            sig = _pending_signals[0]
            _pending_signals.clear()
            raise KeyboardInterrupt(f"{signal.Signals(sig).name} received during teardown")

    # -- leftovers of crashed runs --

    @staticmethod
    def cleanup_stale(tmpdir=STALE_GLOB_DIR, workdirs=(), verbose=False):
        """Removes namespaces, processes, mounts and workdirs of earlier runs whose owning
        process (the pid in their tag) no longer exists. Workdirs are found through their
        mounts, in tmpdir, and in `workdirs`. Returns a list of what it removed."""
        def stale(tag):
            m = TAG_RE.match(tag)
            return bool(m) and not _owner_alive(int(m.group(1)))

        removed = []
        stale_ns = [ns for ns in netns_list() if stale(ns)]
        for ns in stale_ns:
            pids = with_descendants(pids_in_netns(ns_inode(f"/run/netns/{ns}")))
            if pids:
                kill_and_reap(pids, {})
                removed.append(f"processes {sorted(pids)} in {ns}")
        workdirs = set(os.path.abspath(w) for w in workdirs)
        for mp, _ in mounts():
            m = re.match(r"^(.*)/h\d+/ns(/mnt)?$", mp)
            if m:
                workdirs.add(m.group(1))
        workdirs.update(glob.glob(os.path.join(tmpdir, PREFIX + "-*")))
        for wd in sorted(workdirs):
            try:
                with open(os.path.join(wd, MARKER)) as f:
                    tag = f.read().strip()
            except OSError:
                continue
            if not stale(tag):
                continue
            errs = umount_under(wd)
            if not errs and not mounts_under(wd):
                shutil.rmtree(wd, ignore_errors=True)
                removed.append(f"workdir {wd}")
            elif verbose:
                print(f"cleanup_stale: {wd}: {errs}")
        for ns in stale_ns:
            if netns_delete(ns) is None:
                removed.append(f"netns {ns}")
        if verbose:
            for r in removed:
                print(f"cleanup_stale: removed {r}")
        return removed


def tempfile_dir(tag):
    return tempfile.mkdtemp(prefix=tag + "-", dir=STALE_GLOB_DIR)
