"""One test host of a migrd_cluster.Cluster: running commands, migctl, daemons, kill/start.

Also the pieces both modules share: constants, exceptions, wait_for().
"""

import glob
import json as jsonlib
import os
import shutil
import socket
import pwd
import re
import subprocess
import sys
import time
import uuid

from nsutil import (CommandError, sh, die_with_parent, pid_alive, ns_inode, pids_in_netns,
                    with_descendants, kill_and_reap)

PREFIX = "migrdt"
TAG_RE = re.compile(r"^migrdt-(\d+)-(\d+)(?:-|$)")
MARKER = ".migrd-cluster"          # in every workdir: the tag, so stale ones can be recognized
CONTROL_SOCKET = "/run/migrd/control.sock"
MIGRD_CONF = "/etc/migrd/migrd.conf"
STALE_GLOB_DIR = os.environ.get("MIGRD_TEST_TMPDIR", "/tmp")   # default workdirs live here
REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (path seen inside a host, directory under the host's dir that is bound there)
HOST_BINDS = [("/run", "run"), ("/var/lib/corosync", "lib/corosync"),
              ("/var/lib/migrd", "lib/migrd"), ("/etc/corosync", "etc/corosync"),
              ("/etc/migrd", "etc/migrd")]
# With libvirt=True each host also has its own libvirt: state, cache, logs and configuration
# (a copy of the machine's /etc/libvirt with per-host settings, see Host._setup_libvirt).
LIBVIRT_BINDS = [("/var/lib/libvirt", "lib/libvirt"), ("/var/cache/libvirt", "cache/libvirt"),
                 ("/var/log/libvirt", "log/libvirt"), ("/etc/libvirt", "etc/libvirt")]
LIBVIRT_URI = "qemu:///system"

# Runs inside the new mount namespace, once, to set it up.
MNT_SETUP = r"""
set -e
W="$1"; H="$2"
# The copied mount table holds other namespace files (/run/netns/*, other hosts' ns/mnt); they
# would keep those namespaces alive as long as this one lives, so drop them first.
while read -r id parent dev root mp rest; do
  case "$rest" in *" - nsfs "*) echo "$mp"; continue;; esac
  case "$mp" in "$W"|"$W"/*) echo "$mp";; esac
done < /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
"""


class ClusterError(Exception):
    pass


def read_line(s):
    """Bytes from a stream socket up to and including a newline (or up to EOF)."""
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


class WaitTimeout(ClusterError, TimeoutError):
    pass


class ProcessDied(ClusterError):
    """A daemon we wait for has exited; waiting longer is pointless."""


class MigctlError(ClusterError):
    """migctl failed. .reply is the parsed JSON error reply when migctl printed one."""

    def __init__(self, host, argv, cp):
        self.host, self.argv, self.returncode = host, argv, cp.returncode
        self.stdout, self.stderr = cp.stdout, cp.stderr
        try:
            # The last line: long operations print progress events before it.
            last = cp.stdout.strip().splitlines()[-1] if cp.stdout.strip() else ""
            self.reply = jsonlib.loads(last) if last.startswith("{") else None
        except ValueError:
            self.reply = None
        detail = (cp.stderr.strip() or cp.stdout.strip() or "no output")[-2000:]
        super().__init__(f"{host}: {' '.join(argv)} exited with {cp.returncode}: {detail}")

    @property
    def code(self):
        """The error code of the reply ('not-found', ...), None if there is none."""
        if isinstance(self.reply, dict) and isinstance(self.reply.get("error"), dict):
            return self.reply["error"].get("code")
        if isinstance(self.reply, dict):  # migctl --json prints the error object itself
            return self.reply.get("code")
        return None


def default_build_dir():
    return os.environ.get("MIGRD_BUILD_DIR") or os.path.join(REPO_DIR, "build")


def nsenter_argv(mnt_ns, netns):
    return ["nsenter", f"--mount={mnt_ns}", f"--net=/run/netns/{netns}", "--"]


def wait_for(predicate, timeout, what, interval=0.1, details=None):
    """Calls predicate until it returns something truthy and returns that.

    Exceptions from predicate count as "not yet" (the last one is reported), except
    ProcessDied. On timeout raises WaitTimeout naming `what`, the last result and details().
    """
    start = time.monotonic()
    last, last_exc = None, None
    while True:
        try:
            last = predicate()
            last_exc = None
            if last:
                return last
        except ProcessDied:
            raise
        except Exception as e:       # noqa: BLE001 - reported below
            last_exc = e
        if time.monotonic() - start > timeout:
            msg = f"timed out after {timeout:g} s waiting for {what}; last result: {last!r}"
            if last_exc is not None:
                msg += f"; last error: {last_exc}"
            if details:
                msg += "\n" + details()
            raise WaitTimeout(msg)
        time.sleep(interval)


def tail_file(path, lines):
    """The last `lines` lines of a file, or why it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * lines))
            data = f.read().decode(errors="replace")
    except OSError as e:
        return f"({e.strerror})"
    return "\n".join(data.splitlines()[-lines:])


def _owner_alive(pid):
    return pid == os.getpid() or pid_alive(pid)


# --- hosts ---------------------------------------------------------------------------------------

class Quorum:
    """One host's view from `corosync-quorumtool -s -p`."""

    def __init__(self, text):
        self.text = text
        fields, self.members = {}, []
        in_members = False
        for line in text.splitlines():
            if line.startswith("Membership information"):
                in_members = True
                continue
            if in_members:
                parts = line.split()
                if parts and parts[0].isdigit():
                    self.members.append(int(parts[0]))
            elif ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip()] = v.strip()
        self.members.sort()
        self.fields = fields
        self.quorate = fields.get("Quorate") == "Yes"
        self.nodeid = int(fields["Node ID"]) if fields.get("Node ID", "").isdigit() else None

    def __repr__(self):
        return f"Quorum(quorate={self.quorate}, members={self.members})"


class Host:
    def __init__(self, cluster, nodeid):
        self.cluster = cluster
        self.nodeid = nodeid
        self.name = f"h{nodeid}"
        self.address = f"{cluster.subnet}.{nodeid}"
        self.netns = f"{cluster.tag}-{self.name}"
        self.veth = f"v{self.name}"            # bridge side, inside the bridge namespace
        self.dir = None                        # <workdir>/hN once set up
        self.procs = {}                        # name -> Popen of what we started in the host
        self.up = False

    def __repr__(self):
        return f"<Host {self.name} {self.address} {'up' if self.up else 'down'}>"

    @property
    def mnt_ns(self):
        return os.path.join(self.dir, "ns", "mnt")

    def path(self, *parts):
        """Path, seen from outside, of the host's own files (e.g. path('run/migrd'))."""
        return os.path.join(self.dir, *parts)

    # -- running commands --

    def _env(self, extra=None):
        env = dict(os.environ)
        b = self.cluster.build_dir
        env["PATH"] = f"{b}/migctl:{b}/migrd:" + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        if extra:
            env.update(extra)
        return env

    def _argv(self, argv, user=None):
        if isinstance(argv, str):
            argv = ["sh", "-c", argv]
        prefix = nsenter_argv(self.mnt_ns, self.netns)
        if user is not None:
            if isinstance(user, int):
                prefix += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--"]
            else:
                pw = pwd.getpwnam(user)
                prefix += ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                           "--init-groups", "--"]
        return prefix + [str(a) for a in argv]

    def run(self, argv, check=True, timeout=60, user=None, input=None, env=None):
        """Runs argv (a list, or a string for sh -c) inside the host's namespaces.

        The build's migctl/ and migrd/ directories are first on PATH. user: a name or uid
        to run as. Returns CompletedProcess with text stdout/stderr; raises CommandError
        (a CalledProcessError whose str() includes stderr) if check and the exit code is not 0.
        """
        cp = subprocess.run(self._argv(argv, user), capture_output=True, text=True,
                            timeout=timeout, input=input, env=self._env(env),
                            stdin=None if input is not None else subprocess.DEVNULL)
        cp.args = argv
        if check and cp.returncode != 0:
            raise CommandError(self.name, cp)
        return cp

    def spawn(self, name, argv, env=None):
        """Starts a background process in the host (output to <name>.log); kill() ends it."""
        if name in self.procs and self.procs[name].poll() is None:
            raise ClusterError(f"{self.name}: {name} is already running")
        log = self.path(f"{name}.log")
        with open(log, "ab") as f:
            f.write(f"--- harness: starting {name} at {time.strftime('%H:%M:%S')}: "
                    f"{' '.join(map(str, argv))}\n".encode())
            f.flush()
            p = subprocess.Popen(self._argv(argv), stdout=f, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=self._env(env),
                                 start_new_session=True, preexec_fn=die_with_parent)
        self.procs[name] = p
        return p

    def migctl_raw(self, *args, json=True, timeout=30, user=None):
        """Runs `migctl --socket S [--json] args` in the host; returns the CompletedProcess."""
        argv = [self.cluster.migctl_bin, "--socket", CONTROL_SOCKET]
        argv += ["--json"] if json else []
        return self.run(argv + [str(a) for a in args], check=False, timeout=timeout, user=user)

    def migctl(self, *args, json=True, timeout=30, user=None):
        """Runs migctl; returns the parsed JSON reply (json=True) or the printed text.

        Raises MigctlError (with stderr and the parsed error reply) on a non-zero exit."""
        cp = self.migctl_raw(*args, json=json, timeout=timeout, user=user)
        shown = ["migctl"] + (["--json"] if json else []) + [str(a) for a in args]
        if cp.returncode != 0:
            raise MigctlError(self.name, shown, cp)
        if not json:
            return cp.stdout
        try:
            # Long operations (move) print progress events first, one per line: the
            # result is the last line.
            lines = cp.stdout.strip().splitlines()
            if len(lines) > 1 and all(ln.startswith("{") for ln in lines):
                return jsonlib.loads(lines[-1])
            return jsonlib.loads(cp.stdout)
        except ValueError as e:
            raise MigctlError(self.name, shown + [f"(output is not JSON: {e})"], cp) from None

    def control(self, method, params=None, timeout=10):
        """One request on the host's control socket, without migctl; returns the parsed reply
        ({"id": 1, "ok": ...} or {"id": 1, "error": ...})."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.path(CONTROL_SOCKET.lstrip("/")))
            req = {"id": 1, "method": method}
            if params is not None:
                req["params"] = params
            s.sendall(jsonlib.dumps(req).encode() + b"\n")
            return jsonlib.loads(read_line(s))

    # -- state --

    @property
    def netns_inode(self):
        return ns_inode(f"/run/netns/{self.netns}")

    def pids(self):
        """Pids of every live process in the host's network namespace."""
        return pids_in_netns(self.netns_inode)

    def quorum(self):
        """This host's corosync view (Quorum: .quorate, .members); raises if corosync is down."""
        cp = self.run(["corosync-quorumtool", "-s", "-p"], check=False, timeout=10)
        if "Quorum information" not in cp.stdout:
            raise ClusterError(f"{self.name}: corosync-quorumtool: "
                               f"{(cp.stderr or cp.stdout).strip()}")
        return Quorum(cp.stdout)

    def wait_quorum(self, members=None, quorate=True, timeout=30):
        """Waits until corosync here shows exactly `members` (node ids) and quorate state."""
        want = sorted(members) if members is not None else None

        def ok():
            self._check_alive("corosync")
            q = self.quorum()
            return q if ((want is None or q.members == want)
                         and (quorate is None or q.quorate == quorate)) else None
        return self.wait_for(ok, timeout, f"corosync members={want} quorate={quorate}")

    def status(self):
        return self.migctl("status")

    def hosts(self):
        return self.migctl("hosts")["hosts"]

    def wait_for(self, predicate, timeout=30, what="condition", interval=0.1):
        return wait_for(predicate, timeout, f"{self.name}: {what}", interval,
                        details=lambda: self.log_tail())

    def log_tail(self, lines=25):
        """The last lines of every log of this host, for failure messages."""
        if not self.dir:
            return f"== {self.name}: no logs"
        out = []
        for log in sorted(glob.glob(self.path("*.log"))):
            out.append(f"== {self.name} {os.path.basename(log)} (last {lines} lines)")
            out.append(tail_file(log, lines))
        return "\n".join(out) if out else f"== {self.name}: no logs yet"

    def _check_alive(self, name):
        p = self.procs.get(name)
        if p is None:
            raise ProcessDied(f"{self.name}: {name} is not running")
        if p.poll() is not None:
            raise ProcessDied(f"{self.name}: {name} exited with status {p.returncode}\n"
                              + self.log_tail())

    # -- lifecycle --

    @property
    def binds(self):
        return HOST_BINDS + (LIBVIRT_BINDS if self.cluster.libvirt else [])

    def _setup(self):
        c = self.cluster
        self.dir = os.path.join(c.workdir, self.name)
        for _, sub in self.binds:
            os.makedirs(self.path(sub), exist_ok=True)
        if c.libvirt:
            self._setup_libvirt()
        os.makedirs(self.path("run", "migrd"), exist_ok=True)
        with open(self.path("etc", "corosync", "corosync.conf"), "w") as f:
            f.write(c.corosync_conf())
        with open(self.path("etc", "migrd", "migrd.conf"), "w") as f:
            f.write(c.migrd_conf(self))
        nsdir = self.path("ns")
        os.makedirs(nsdir, exist_ok=True)
        # unshare --mount=FILE needs FILE on a mount with private propagation.
        sh(["mount", "--bind", nsdir, nsdir])
        sh(["mount", "--make-private", nsdir])
        open(self.mnt_ns, "w").close()
        # /run last: the workdir may be under /run (scripts/cluster) and must stay visible.
        binds = sorted(self.binds, key=lambda b: b[0] == "/run")
        script = MNT_SETUP + "".join(f'mount --bind "$H/{sub}" {inside}\n' for inside, sub in binds)
        script += "mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm\n"
        sh(["unshare", f"--mount={self.mnt_ns}", "--propagation", "private",
            "sh", "-c", script, "mnt-setup", c.workdir, self.dir], where=self.name)

    def _setup_libvirt(self):
        """This host's libvirt configuration: the machine's, plus what lets several daemons
        live on one machine (LIBVIRT-NOTES.md): own uuid, TCP without auth between the test
        hosts' private addresses, no security driver or cgroups, migration on our address."""
        etc = self.path("etc", "libvirt")
        shutil.rmtree(etc, ignore_errors=True)
        shutil.copytree("/etc/libvirt", etc, symlinks=True)
        os.makedirs(self.path("log", "libvirt", "qemu"), exist_ok=True)
        with open(os.path.join(etc, "libvirtd.conf"), "a") as f:
            f.write(f'\n# migrd test host {self.name}\n'
                    f'host_uuid = "{uuid.uuid5(uuid.NAMESPACE_DNS, self.netns)}"\n'
                    'listen_tcp = 1\nlisten_tls = 0\nauth_tcp = "none"\nauth_unix_rw = "none"\n'
                    f'listen_addr = "{self.address}"\n')
        with open(os.path.join(etc, "qemu.conf"), "a") as f:
            f.write(f'\n# migrd test host {self.name}\n'
                    'security_driver = "none"\nuser = "root"\ngroup = "root"\n'
                    'dynamic_ownership = 0\ncgroup_controllers = [ ]\nnamespaces = [ ]\n'
                    f'migration_host = "{self.address}"\nmigration_address = "{self.address}"\n')

    def start_libvirt(self, wait=True, timeout=60):
        """virtlogd and libvirtd of this host, in its namespaces (foreground: kill() ends them)."""
        reaper = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                               "subreaper.py")]
        if "virtlogd" not in self.procs or self.procs["virtlogd"].poll() is not None:
            self.spawn("virtlogd", reaper + ["virtlogd"])
        self.spawn("libvirtd", reaper + ["libvirtd", "--listen"])
        if wait:
            self.wait_libvirt(timeout)

    def wait_libvirt(self, timeout=60):
        # The first start probes QEMU's capabilities: ~15 s on these machines.
        return self.wait_for(lambda: self._check_alive("libvirtd") or
                             self.run(["virsh", "-c", LIBVIRT_URI, "version"],
                                      check=False, timeout=30).returncode == 0,
                             timeout, "libvirtd to answer `virsh version`", interval=0.5)

    def virsh(self, *args, check=True, timeout=60):
        """virsh against this host's libvirtd; returns its stdout."""
        cp = self.run(["virsh", "-c", LIBVIRT_URI] + [str(a) for a in args], check=check,
                      timeout=timeout)
        return cp.stdout if check else cp

    @property
    def libvirt_uri_outside(self):
        """The URI that reaches this host's libvirtd from outside its namespaces."""
        return f"qemu+unix:///system?socket={self.path('run', 'libvirt', 'libvirt-sock')}"

    def set_link(self, up):
        """Brings the bridge side of the host's veth up or down (down = cable pulled)."""
        sh(["ip", "-n", self.cluster.bridge_ns, "link", "set", self.veth,
            "up" if up else "down"], where=self.name)

    def start_corosync(self, wait=True, timeout=30):
        self.spawn("corosync", ["corosync", "-f"])
        if wait:
            self.wait_for(lambda: self._check_alive("corosync") or self.quorum(), timeout,
                          "corosync to answer corosync-quorumtool")

    def start_migrd(self, wait=True, timeout=30):
        c = self.cluster
        if not os.access(c.migrd_bin, os.X_OK):
            raise ClusterError(f"{c.migrd_bin} does not exist; build migrd first "
                               f"(cmake --build {c.build_dir})")
        self.spawn("migrd", [c.migrd_bin, "--config", MIGRD_CONF])
        if wait:
            self.wait_migrd_ready(timeout)

    def wait_migrd_ready(self, timeout=30):
        """Waits until migrd's control socket answers `status`; returns that status."""
        return self.wait_for(lambda: self._check_alive("migrd") or self.migctl("status"),
                             timeout, "migrd to answer `migctl status`", interval=0.1)

    def stop_migrd(self, timeout=10):
        """SIGTERM to migrd, SIGKILL after timeout; returns its exit status (None: not running)."""
        p = self.procs.pop("migrd", None)
        if p is None or p.poll() is not None:
            return None if p is None else p.returncode
        p.terminate()
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()

    def kill(self):
        """Crash the host: cut its link, SIGKILL every process in its namespace and reap them."""
        if self.dir is None:
            return
        self.set_link(False)
        self._kill_processes()
        self.up = False

    def _kill_processes(self):
        popens = {p.pid: p for p in self.procs.values()}
        pids = self.pids() | {pid for pid, p in popens.items() if p.poll() is None}
        left = kill_and_reap(with_descendants(pids), popens)
        self.procs = {}
        if left:
            raise ClusterError(f"{self.name}: processes {sorted(left)} did not die from SIGKILL")

    def start(self, wait=True, timeout=30):
        """Reconnect the link and start corosync (+ migrd) again; state directories are kept."""
        running = [n for n, p in self.procs.items() if p.poll() is None]
        if running:
            raise ClusterError(f"{self.name}: still running: {', '.join(running)}; kill() first")
        self.set_link(True)
        self.start_corosync(wait=True, timeout=timeout)
        if self.cluster.libvirt:
            self.start_libvirt(wait=wait, timeout=max(timeout, 60))
        if self.cluster.migrd:
            self.start_migrd(wait=wait, timeout=timeout)
        self.up = True
