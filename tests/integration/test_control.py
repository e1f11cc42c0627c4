"""The control socket under bad input and unwelcome callers, with a real migrd.

Every case checks the clear error AND that migrd goes on serving afterwards."""

import grp
import json
import os
import signal
import socket
import time

import pytest

from migrd_host import read_line


@pytest.fixture
def host(make_cluster):
    try:
        grp.getgrnam("migrd")
    except KeyError:
        pytest.fail("group 'migrd' does not exist: run scripts/test.sh, or "
                    "`groupadd --system migrd`, before these tests", pytrace=False)
    return make_cluster(1)["h1"]


def sock_path(h):
    return h.path("run", "migrd", "control.sock")


def connect(h):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sock_path(h))
    return s


def call(s, line):
    s.sendall(line)
    return json.loads(read_line(s))


def still_serving(h):
    st = h.status()
    assert st["host"] == "h1" and st["quorate"]
    assert h.procs["migrd"].poll() is None


def test_malformed_and_unknown_requests(host):
    s = connect(host)
    r = call(s, b'{"id": 1, "method": "status"\n')
    assert r["error"]["code"] == "parse-error" and r["id"] is None
    assert "not valid JSON" in r["error"]["message"]
    r = call(s, b'"just a string"\n')
    assert r["error"]["code"] == "invalid-request"
    r = call(s, b'{"id": 5, "method": "hosts", "params": [1]}\n')
    assert r == {"id": 5, "error": {"code": "invalid-request",
                                     "message": "'params' must be an object."}}
    r = call(s, b'{"id": "x", "method": "reboot-the-world"}\n')
    assert r["id"] == "x" and r["error"]["code"] == "unknown-method"
    assert "reboot-the-world" in r["error"]["message"]
    r = call(s, b'\xff\xfe\x00garbage\n')
    assert r["error"]["code"] == "parse-error"
    # The same connection still works.
    r = call(s, b'{"id": 9, "method": "version"}\n')
    assert r["id"] == 9 and r["ok"]["protocol"] == 1
    s.close()
    still_serving(host)


def test_oversized_request(host):
    s = connect(host)
    big = b'{"id": 1, "method": "status", "params": {"pad": "' + b"x" * (2 << 20) + b'"}}\n'
    try:
        s.sendall(big)
    except (BrokenPipeError, ConnectionResetError):
        pass     # migrd may close before we finish writing; its reply was sent first
    reply = json.loads(read_line(s))
    assert reply["error"]["code"] == "request-too-large"
    assert "1048576" in reply["error"]["message"]
    s.close()
    still_serving(host)


def test_migctl_errors_and_exit_codes(host):
    cp = host.migctl_raw("no-such-verb")
    assert cp.returncode == 2 and "no-such-verb" in cp.stderr
    cp = host.migctl_raw("--socket", "/run/migrd/nothing-here.sock", "status", json=False)
    assert cp.returncode == 69 and "nothing-here.sock" in cp.stderr
    cp = host.migctl_raw("hosts", "--help", json=False)
    assert cp.returncode == 0 and "hosts" in cp.stdout


def test_callers_outside_the_group(host):
    # The socket itself keeps strangers out: 0660 root:migrd.
    st = os.stat(sock_path(host))
    assert st.st_mode & 0o777 == 0o660 and st.st_gid == grp.getgrnam("migrd").gr_gid
    cp = host.migctl_raw("status", user="nobody")
    assert cp.returncode == 69, cp
    assert "permission denied" in cp.stderr.lower() and "migrd" in cp.stderr

    # And so does migrd, even when the file mode would let them in (SO_PEERCRED).
    os.chmod(sock_path(host), 0o666)
    try:
        cp = host.migctl_raw("status", user="nobody")
        assert cp.returncode == 1, cp
        assert "permission-denied" in cp.stderr
        # A member of group migrd is served.
        gid = grp.getgrnam("migrd").gr_gid
        cp = host.run(["setpriv", "--reuid=65534", "--regid=65534", f"--groups={gid}", "--",
                       host.cluster.migctl_bin, "--socket", "/run/migrd/control.sock",
                       "--json", "status"], check=False)
        assert cp.returncode == 0, cp.stderr
        assert json.loads(cp.stdout)["host"] == "h1"
    finally:
        os.chmod(sock_path(host), 0o660)
    still_serving(host)


def test_client_cap(host):
    conns = [connect(host) for _ in range(64)]
    time.sleep(0.3)
    extra = connect(host)
    reply = json.loads(read_line(extra))
    assert reply["error"]["code"] == "busy"
    assert read_line(extra) == b""       # and closed
    extra.close()
    for c in conns:
        c.close()
    host.wait_for(lambda: host.migctl("version"), 5, "served again once clients left")
    still_serving(host)


def test_bad_config_is_refused_with_file_and_line(host):
    with open(host.path("etc", "migrd", "bad.conf"), "w") as f:
        f.write("[host]\nname = h9\ncolour = blue\n[cluster]\nmetrics_interval = soon\n"
                "[nowhere]\n")
    cp = host.run(["migrd", "--config", "/etc/migrd/bad.conf"], check=False, timeout=10)
    assert cp.returncode == 1
    assert "/etc/migrd/bad.conf:3: unknown key 'colour' in section [host]" in cp.stderr
    assert "/etc/migrd/bad.conf:5: 'metrics_interval' must be a positive duration" in cp.stderr
    assert "/etc/migrd/bad.conf:6: unknown section [nowhere]" in cp.stderr
    cp = host.run(["migrd", "--config", "/etc/migrd/missing.conf"], check=False, timeout=10)
    assert cp.returncode == 1 and "missing.conf" in cp.stderr
    cp = host.run(["migrd", "--config", "/etc/migrd/migrd.conf", "--check-config"], timeout=10)
    assert "name = h1" in cp.stdout
    still_serving(host)


def test_systemd_notify_and_watchdog(host):
    """Type=notify: READY=1 once serving, STATUS=, WATCHDOG=1 pings, STOPPING=1."""
    with open(host.path("etc", "migrd", "notify.conf"), "w") as f:
        f.write("[host]\nname = n1\n[paths]\nstate_dir = /var/lib/migrd/notify\n"
                "control_socket = /run/migrd/notify.sock\n[cluster]\ngroup = migrd-notify\n"
                "[log]\ntarget = console\n")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(host.path("run", "notify.sock"))
    ns.settimeout(10)
    p = host.spawn("migrd-notify", ["migrd", "--config", "/etc/migrd/notify.conf"],
                   env={"NOTIFY_SOCKET": "/run/notify.sock", "WATCHDOG_USEC": "400000"})
    got = []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
                any("READY=1" in m for m in got) and sum("WATCHDOG=1" in m for m in got) >= 2):
            got.append(ns.recv(4096).decode())
        assert any("READY=1" in m for m in got), got
        assert any("STATUS=" in m for m in got), got
        assert sum("WATCHDOG=1" in m for m in got) >= 2, got
        # It serves on its own socket, next to the main migrd.
        cp = host.migctl_raw("--socket", "/run/migrd/notify.sock", "status", json=False)
        assert cp.returncode == 0 and "n1" in cp.stdout
        # SIGHUP re-reads the log level; a broken file leaves the running config alone.
        with open(host.path("etc", "migrd", "notify.conf"), "a") as f:
            f.write("level = debug\n")
        os.kill(p.pid, signal.SIGHUP)
        host.wait_for(lambda: "Reloaded /etc/migrd/notify.conf (log level debug)"
                      in open(host.path("migrd-notify.log")).read(), 5, "reload logged")
        with open(host.path("etc", "migrd", "notify.conf"), "a") as f:
            f.write("level = loud\n")
        os.kill(p.pid, signal.SIGHUP)
        host.wait_for(lambda: "notify.conf:11: 'level' must be one of"
                      in open(host.path("migrd-notify.log")).read(), 5, "reload error logged")
        assert p.poll() is None
        os.kill(p.pid, signal.SIGTERM)
        while not any("STOPPING=1" in m for m in got):
            got.append(ns.recv(4096).decode())
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        ns.close()
    still_serving(host)


def test_socket_activation(host):
    """migrd.socket: the listening socket comes from systemd (LISTEN_FDS), not from bind()."""
    with open(host.path("etc", "migrd", "act.conf"), "w") as f:
        f.write("[host]\nname = a1\n[paths]\nstate_dir = /var/lib/migrd/act\n"
                "control_socket = /run/migrd/not-used.sock\n[cluster]\ngroup = migrd-act\n"
                "[log]\ntarget = console\n")
    p = host.spawn("migrd-act", ["systemd-socket-activate", "-l", "/run/migrd/act.sock",
                                 "migrd", "--config", "/etc/migrd/act.conf"])
    try:
        host.wait_for(lambda: os.path.exists(host.path("run", "migrd", "act.sock")), 5,
                      "the activation socket")
        cp = host.migctl_raw("--socket", "/run/migrd/act.sock", "--timeout", "10s", "status",
                             json=False)
        assert cp.returncode == 0, cp.stderr
        assert "a1" in cp.stdout
        assert "Using the control socket passed by systemd" in \
            open(host.path("migrd-act.log")).read()
        assert not os.path.exists(host.path("run", "migrd", "not-used.sock"))
    finally:
        p.terminate()
        p.wait(10)
    still_serving(host)
