#!/usr/bin/env bash
# Installs everything flatnet's lab, tests and benchmarks need on a fresh Debian 12 machine:
# Debian packages (only those missing) and the npm dependencies, then builds dist/.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$1"); }
# gcc and libc6-dev build the plugin's netlink addon (native/netlink.c; Node-API headers come from npm).
# openssl makes the certificates of the lab's etcd (TLS with client certificates, src/lab/pki.ts).
for p in iproute2 util-linux nftables iptables iputils-ping iperf3 tcpdump ethtool gcc libc6-dev openssl \
         containernetworking-plugins golang-go golang-github-appc-cni-dev etcd-server etcd-client; do
  want "$p"
done
if [ "${FLATNET_WITH_RUNTIMES:-1}" = 1 ]; then
  for p in podman containerd runc busybox-static; do want "$p"; done
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm dependencies" >&2
  npm ci --no-audit --no-fund >/dev/null
fi
echo "setup: building dist/" >&2
npm run -s build
