#!/usr/bin/env bash
# The README's main command: installs what the lab needs, builds, recovers from any crashed lab, brings
# up a 3-node cluster (2 pods each, host-gw, embedded store) and verifies the Kubernetes network model
# on it. Needs root: the lab creates network namespaces (it changes nothing in the machine's own one).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "lab.sh: run as root (npm run lab in a root shell, or sudo npm run lab): the lab creates network namespaces" >&2
  exit 1
fi
bash scripts/setup.sh
echo "== removing any earlier lab" >&2
dist/bin/flatnet lab down >/dev/null 2>&1 || true
echo "== lab up (3 nodes, 2 pods each, host-gw, embedded store)" >&2
dist/bin/flatnet lab up --nodes 3 --pods 2 --backend host-gw --store embedded
echo "== lab verify" >&2
status=0
dist/bin/flatnet lab verify || status=$?
cat <<'MSG'

Explore the lab:
  dist/bin/flatnet lab status
  dist/bin/flatnet lab trace fnl-n1-p1 fnl-n2-p1
  ip netns exec fnl-n1-p1 ping -c1 10.244.1.2      (addresses: lab status)
  dist/bin/flatnet lab --help                      (add-node, remove-node, add-pod, remove-pod)
Remove it:
  dist/bin/flatnet lab down
Docs: docs/lab.md
MSG
exit "$status"
