"""The checkpoint/restore fixtures on their own (no container, no migrd): each must report READY
with its real pids and tids, then OK lines every ~100 ms whose counters advance, ride out a
freeze longer than its stall limit, and print FAIL and exit 1 once SIGUSR2 makes it corrupt its
own state, leaving no process behind. Stopping one child of a two-process fixture is a FAIL.

Binaries: $MIGRD_BUILD_DIR (default /work/main/build)/tests/fixtures/ct/<name>, built by
`cmake --build $MIGRD_BUILD_DIR --target ct-fixtures`. A missing binary is a failure.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

BUILD_DIR = os.environ.get("MIGRD_BUILD_DIR", "/work/main/build")
FIXTURE_DIR = os.path.join(BUILD_DIR, "tests", "fixtures", "ct")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "fixtures", "ct"))
import echo_client  # noqa: E402

STALL_S = 2      # FIXTURE_STALL_S of every run, so a stall shows within seconds
FREEZE_S = 2.5   # longer than STALL_S: a frozen fixture must not count it as a stall
RUN_S = 1.5      # each phase of observed running
FAIL_WITHIN_S = 2.0
PROTOCOL = re.compile(r"^(READY pid=\d+ |OK \d+ |FAIL |SKIP )")


class Fixture:
    """One fixture process in its own process group, its output collected line by line."""

    def __init__(self, name, *args, stall_s=STALL_S):
        path = os.path.join(FIXTURE_DIR, name)
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is not built: cmake --build {BUILD_DIR} --target ct-fixtures",
                        pytrace=False)
        env = dict(os.environ, FIXTURE_STALL_S=str(stall_s))
        self.name = name
        self.lines = []
        self.eof = False
        self.cond = threading.Condition()
        self.proc = subprocess.Popen([path, *map(str, args)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                     text=True, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def output(self):
        with self.cond:
            return "\n".join(self.lines[-40:])

    def wait_line(self, pattern, timeout, start=0):
        """Index of the first line from start on matching pattern; fails the test otherwise."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        with self.cond:
            while True:
                for i in range(start, len(self.lines)):
                    if rx.search(self.lines[i]):
                        return i
                start = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    pytest.fail(f"{self.name}: no line matching {pattern!r} within {timeout} s"
                                f" (exit {self.proc.poll()}); output:\n{self.output()}",
                                pytrace=False)
                self.cond.wait(left)

    def ready(self):
        i = self.wait_line(r"^(READY|SKIP|FAIL) ", 20)
        line = self.lines[i]
        if line.startswith("SKIP"):
            self.stop()
            pytest.skip(f"{self.name}: {line}")
        if not line.startswith("READY"):
            pytest.fail(f"{self.name}: {line}", pytrace=False)
        fields = dict(re.findall(r"(\w+)=(\S+)", line))
        assert int(fields["pid"]) == self.proc.pid
        return fields

    def mark(self):
        with self.cond:
            return len(self.lines)

    def check_lines(self, start, detail, min_ok):
        """OK lines since start: enough of them, no FAIL, and every detail group advanced."""
        with self.cond:
            lines = self.lines[start:]
        bad = [line for line in lines if not PROTOCOL.match(line) or line.startswith("FAIL")]
        assert not bad, f"{self.name}: {bad[0]}\n{self.output()}"
        oks = [line for line in lines if line.startswith("OK ")]
        assert len(oks) >= min_ok, f"{self.name}: {len(oks)} OK lines\n{self.output()}"
        first, last = (re.search(detail, oks[i]) for i in (0, -1))
        assert first and last, f"{self.name}: OK lines do not match {detail!r}\n{oks[-1]}"
        for k, (a, b) in enumerate(zip(first.groups(), last.groups())):
            assert int(b) > int(a), f"{self.name}: value {k} of {detail!r} stuck: {oks[-1]}"

    def check_sequence(self):
        """OK numbers go 1, 2, 3... over the whole run."""
        with self.cond:
            ns = [int(line.split()[1]) for line in self.lines if line.startswith("OK ")]
        assert ns == list(range(1, len(ns) + 1)), f"{self.name}: OK numbers {ns}"

    def freeze(self, seconds):
        os.killpg(self.proc.pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.killpg(self.proc.pid, signal.SIGCONT)

    def expect_fail(self, start, timeout=FAIL_WITHIN_S):
        """A FAIL line within timeout, then exit status 1."""
        self.wait_line(r"^FAIL ", timeout, start)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name}: printed FAIL but did not exit\n{self.output()}",
                        pytrace=False)
        assert rc == 1, f"{self.name}: exit status {rc}\n{self.output()}"

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.reader.join(5)


@pytest.fixture
def run_fixture():
    started = []

    def start(name, *args, **kw):
        f = Fixture(name, *args, **kw)
        started.append(f)
        return f

    yield start
    for f in started:
        f.stop()


def descendants(pid):
    found = [pid]
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            for child in f.read().split():
                found += descendants(int(child))
    return found


def check_ids(fields, nprocs, nthreads):
    """READY lists exactly the processes and threads the fixture consists of."""
    pid = int(fields["pid"])
    pids = [int(x) for x in fields["pids"].split(",")]
    tids = [int(x) for x in fields["tids"].split(",")]
    assert sorted(pids) == sorted(descendants(pid)) and len(pids) == nprocs, fields
    real_tids = [int(t) for p in pids for t in os.listdir(f"/proc/{p}/task")]
    assert sorted(tids) == sorted(real_tids) and len(tids) == nthreads, fields
    return pids


def check_gone(pids):
    time.sleep(0.1)
    left = [p for p in pids if os.path.exists(f"/proc/{p}")]
    assert not left, f"processes left behind after FAIL: {left}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# name, arguments, processes, threads (all processes), OK detail whose groups must advance
CASES = [
    ("fixture-ct-counter", ["64"], 1, 1, r"counter=(\d+) sum=[0-9a-f]{16}$"),
    ("fixture-ct-avxloop", ["3"], 1, 4, r"iters=(\d+),(\d+),(\d+)$"),
    ("fixture-ct-pipes", [], 2, 2, r"pipe=(\d+) sock=(\d+) dgram=(\d+),(\d+)"),
    ("fixture-ct-signals", [], 1, 1,
     r"alrm=(\d+) ptimer=(\d+) batches=(\d+) rt=(\d+) usr1=(\d+)$"),
    ("fixture-ct-shm", [], 2, 2, r"parent=(\d+) child=(\d+) gens=(\d+),(\d+)$"),
    ("fixture-ct-fds", ["@tmp"], 1, 1, r"offset=\d+ size=(\d+) eventfd=(\d+) timerfd=(\d+)"),
    ("fixture-ct-vmflags", [], 1, 1, r"ticks=(\d+) checks=(\d+) forks=\d+$"),
    ("fixture-ct-seccomp", [], 1, 2, r"ticks=(\d+) checks=(\d+) tsync=\d+$"),
]


@pytest.mark.parametrize("name,args,nprocs,nthreads,detail", CASES, ids=[c[0] for c in CASES])
def test_fixture_runs_freezes_and_detects_corruption(run_fixture, tmp_path, name, args, nprocs,
                                                     nthreads, detail):
    args = [str(tmp_path / "fds.dat") if a == "@tmp" else a for a in args]
    f = run_fixture(name, *args)
    pids = check_ids(f.ready(), nprocs, nthreads)
    start = f.mark()
    time.sleep(RUN_S)
    f.check_lines(start, detail, min_ok=8)

    # A freeze advances CLOCK_MONOTONIC but not the program: no stall may be reported.
    f.freeze(FREEZE_S)
    start = f.mark()
    time.sleep(RUN_S)
    f.check_lines(start, detail, min_ok=8)
    f.check_sequence()

    start = f.mark()
    os.kill(f.proc.pid, signal.SIGUSR2)
    f.expect_fail(start)
    check_gone(pids)


@pytest.mark.parametrize("name", ["fixture-ct-pipes", "fixture-ct-shm"])
def test_stopped_child_is_a_stall(run_fixture, name):
    f = run_fixture(name)
    pids = check_ids(f.ready(), 2, 2)
    start = f.mark()
    os.kill(pids[1], signal.SIGSTOP)
    f.expect_fail(start, timeout=STALL_S + 3)
    assert "no progress" in f.output(), f.output()
    check_gone(pids)


def test_echo_server(run_fixture):
    port = free_port()
    f = run_fixture("fixture-ct-echo", port)
    fields = f.ready()
    assert fields["port"] == str(port)
    check_ids(fields, 1, 1)
    conns = echo_client.connect(4, port=port)
    try:
        start = f.mark()
        deadline = time.monotonic() + RUN_S
        while time.monotonic() < deadline:
            echo_client.round_trip(conns)
            time.sleep(0.02)
        f.check_lines(start, r"conns=4 lines=(\d+)$", min_ok=8)

        # Lines sent while the server is frozen are answered, in order, once it thaws.
        thaw = threading.Thread(target=f.freeze, args=(FREEZE_S,))
        thaw.start()
        time.sleep(0.2)
        echo_client.round_trip(conns, timeout=FREEZE_S + 5)
        thaw.join()
        start = f.mark()
        deadline = time.monotonic() + RUN_S
        while time.monotonic() < deadline:
            echo_client.round_trip(conns)
            time.sleep(0.02)
        f.check_lines(start, r"conns=4 lines=(\d+)$", min_ok=8)
        assert all(c.seq == conns[0].seq > 20 for c in conns)
    finally:
        echo_client.close(conns)
    f.wait_line(r"^OK \d+ conns=0 ", 2, f.mark())
    f.check_sequence()

    start = f.mark()
    os.kill(f.proc.pid, signal.SIGUSR2)
    f.expect_fail(start)
