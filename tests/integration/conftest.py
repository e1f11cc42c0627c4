"""pytest fixtures for cluster tests: cluster2, cluster3, corosync3, make_cluster.

A machine that cannot build clusters (not root, corosync missing, migrd not built) makes the
tests FAIL with the reason, never skip. Options for the cluster fixtures of one test:
    @pytest.mark.cluster(token_ms=500, migrd_conf_extra="[failover]\\nself_fence_s = 2")
On failure the hosts' logs are attached to the report and copied to
$MIGRD_TEST_LOGDIR (default /tmp/migrd-integration-logs)/<test>/.
"""

import os
import re
import time

import pytest

from migrd_cluster import Cluster, prerequisite_problems

LOGDIR = os.environ.get("MIGRD_TEST_LOGDIR", "/tmp/migrd-integration-logs")
_stale_cleaned = False


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster(**kwargs): keyword arguments for Cluster() "
                            "in the cluster fixtures of this test")


def _require(migrd):
    global _stale_cleaned
    problems = prerequisite_problems(migrd)
    if problems:
        pytest.fail("cannot run cluster tests here: " + "; ".join(problems), pytrace=False)
    if not _stale_cleaned:
        _stale_cleaned = True
        for what in Cluster.cleanup_stale():
            print(f"removed leftover of a crashed run: {what}")


class _Clusters:
    """Clusters made for one fixture; stops them all, reporting anything left behind."""

    def __init__(self, request):
        self.request = request
        self.made = []
        self.opts = {}
        marker = request.node.get_closest_marker("cluster")
        if marker is not None and request.scope == "function":
            self.opts = dict(marker.kwargs)

    def make(self, n, **kw):
        opts = dict(self.opts, **kw)
        _require(opts.get("migrd", True))
        c = Cluster(n, **opts)
        self.made.append(c)
        return c.start()

    def finish(self):
        errors = []
        for c in self.made:
            try:
                c.stop()
            except Exception as e:        # noqa: BLE001 - report every cluster's problem
                errors.append(str(e))
        if errors:
            pytest.fail("cluster teardown incomplete: " + "; ".join(errors), pytrace=False)


@pytest.fixture
def make_cluster(request):
    """Factory: make_cluster(n, **Cluster kwargs) -> started Cluster, stopped after the test."""
    cs = _Clusters(request)
    request.node._migrd_clusters = cs.made
    yield cs.make
    cs.finish()


@pytest.fixture
def cluster3(request):
    """Three hosts with corosync and migrd, formed and answering; fresh for each test."""
    cs = _Clusters(request)
    request.node._migrd_clusters = cs.made
    yield cs.make(3)
    cs.finish()


@pytest.fixture
def cluster2(request):
    """Two hosts (votequorum two_node) with corosync and migrd; fresh for each test."""
    cs = _Clusters(request)
    request.node._migrd_clusters = cs.made
    yield cs.make(2)
    cs.finish()


@pytest.fixture(scope="module")
def corosync3(request):
    """Three corosync-only hosts shared by the tests of a module (which run in file order)."""
    cs = _Clusters(request)
    yield cs.make(3, migrd=False)
    cs.finish()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, copies the logs of the test's clusters (which are still up) to LOGDIR
    and attaches their tails to the report."""
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed or call.when == "teardown":
        return
    clusters = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Cluster)]
    clusters += getattr(item, "_migrd_clusters", [])
    for c in dict.fromkeys(clusters):
        if c.workdir and c.state != "stopped":
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)
            dest = os.path.join(LOGDIR, f"{name}-{time.strftime('%H%M%S')}", c.tag)
            try:
                c.save_logs(dest)
                where = f"all logs copied to {dest}"
            except OSError as e:
                where = f"logs not copied: {e}"
            rep.sections.append((f"logs of {c.tag} ({where})", c.log_tails()))
