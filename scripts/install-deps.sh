#!/usr/bin/env bash
# Installs the Debian packages migrd needs to build, test and run its demo cluster.
# Idempotent: packages already present are left alone. Run as root.
set -euo pipefail

PKGS=(
  # build
  build-essential cmake pkg-config clang libclang-rt-14-dev clang-format git
  # libraries
  libsystemd-dev libjansson-dev libsqlite3-dev libzstd-dev libxxhash-dev libssl-dev
  libcpg-dev libvotequorum-dev libcmap-dev libquorum-dev libcorosync-common-dev
  libcmocka-dev librdmacm-dev libibverbs-dev rdma-core ibverbs-providers openssl
  # baselines for the benchmarks, and tools the tests use
  iperf3 socat strace iptables
  # VMs: QEMU, libvirt (daemon, client, C API)
  qemu-system-x86 libvirt-daemon-system libvirt-clients libvirt-dev libxml2-dev
  # cluster and test harness
  corosync iproute2 util-linux procps psmisc python3-pytest sqlite3 systemd
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages (${missing[*]}) and not root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
# The distribution's corosync unit may have been started by the package; the test
# cluster runs its own corosync per test host, so the system one stays out of the way.
if command -v systemctl >/dev/null && systemctl is-active -q corosync 2>/dev/null; then
  systemctl stop corosync || true
fi
