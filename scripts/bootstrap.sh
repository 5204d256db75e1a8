#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine, as root: Debian packages for the real peers,
# a .venv with the project and its pinned dev dependencies. A second run does nothing slow.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(
  iproute2 procps iputils-ping
  # nftables: the L2 agent's underlay filter (VXLAN sources), in node namespaces
  nftables
  # DNS peers: authoritative servers, forwarders/caches, load generator
  nsd knot unbound dnsmasq dnsperf bind9-dnsutils
  # Prometheus (promtool, and a real scraper for the SLO tests)
  prometheus
  # BGP speakers
  bird2 frr gobgpd exabgp
  # the control plane's lab: etcd as the API server's storage, kubectl as the real client
  etcd-server kubectl
  # a full kernel for what this host lacks (802.1Q, dummy, netem)
  user-mode-linux kmod
  # a C compiler and Python's headers: the DNS cache's compiled hit path (dnscache/_fastpath.c,
  # built by pip install), and labs.uml's XSAVE shim (UML 6.1 on AVX-512/AMX hosts)
  gcc libc6-dev python3-dev
  # the image without a base image: a Debian root filesystem from the mirror, packed as OCI
  mmdebstrap umoci
  # CNI: the reference plugins (host-local and static IPAM for netkit-cni; bridge as its anchor)
  containernetworking-plugins
  # a real container runtime attaching a container through netkit-cni (no image pulled: --rootfs)
  podman runc busybox-static
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: missing Debian packages (${missing[*]}); run as root" >&2; exit 1
  fi
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # no package may leave its daemon running: tests start their own instances
  for svc in nsd knot unbound dnsmasq prometheus frr bird podman.socket; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
fi
# pip builds the compiled fast path too: a changed C source installs (compiles) again
hash=$(cat pyproject.toml setup.py dnscache/_fastpath.c dnscache/_upstream.c | sha256sum | cut -c1-16)
if [ "$(cat .venv/.deps 2>/dev/null)" != "$hash" ] || ! compgen -G 'dnscache/_fastpath*.so' >/dev/null; then
  echo "bootstrap: installing Python packages"
  .venv/bin/pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e '.[dev]'
  echo "$hash" > .venv/.deps
fi

# BIRD 1.6, the BIRD calico/node runs, for the agent's Calico observer tests: Debian's `bird`
# conflicts with bird2, so its package is unpacked into .venv/bird1 (not installed)
if [ ! -x .venv/bird1/usr/sbin/bird ]; then
  echo "bootstrap: unpacking BIRD 1.6 into .venv/bird1"
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq bird 2>/dev/null || { apt-get update -qq && apt-get download -qq bird; })
  mkdir -p .venv/bird1
  dpkg-deb -x "$tmp"/bird_*.deb .venv/bird1
  rm -rf "$tmp"
fi
