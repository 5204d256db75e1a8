#!/usr/bin/env bash
# Build the netkit image without pulling a base image: a Debian root filesystem from the package
# mirror (mmdebstrap), the project's wheel and its pinned dependencies installed in /opt/netkit,
# packed as an OCI image layout with umoci. Usage: scripts/build-image.sh [OUT]   (default
# build/image). Leaves OUT/oci (the image, tag netkit:<version>) and OUT/bundle/rootfs (what is
# in it). The base filesystem is cached in $NETKIT_IMAGE_CACHE (default
# /var/cache/netkit-image), keyed by the package list: a second build takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(realpath -m "${1:-build/image}")
cache=${NETKIT_IMAGE_CACHE:-/var/cache/netkit-image}
suite=${NETKIT_IMAGE_SUITE:-bookworm}
mirror=${NETKIT_IMAGE_MIRROR:-http://deb.debian.org/debian}
# what the agent and the DNS cache need on a node: python, iproute2 (the dnscache init
# container's `ip`), nftables (the L2 underlay filter), and the speakers' own tools the agent
# drives the node's speaker with (bird2: `bird -p`, `birdc`; frr: `vtysh`); the speakers run
# on the node, not from this image
packages=python3,python3-venv,iproute2,nftables,ca-certificates,bird2,frr
version=$(.venv/bin/python -c 'import netkit; print(netkit.__version__)')
tag=$version

for tool in mmdebstrap umoci cc; do
  command -v "$tool" >/dev/null || { echo "build-image: $tool is missing (make setup installs it)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "build-image: run as root (mmdebstrap --mode=root, chroot)" >&2; exit 1; }

mkdir -p "$cache"
trap 'rm -f "$base.$$.tmp"' EXIT
base="$cache/base-$(echo "$suite $mirror $packages" | sha256sum | cut -c1-16).tar"
if [ ! -s "$base" ]; then
  echo "build-image: [1/4] Debian $suite root filesystem from $mirror (cached in $base)"
  mmdebstrap --quiet --variant=minbase --mode=root --format=tar --include="$packages" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$suite" "$base.$$.tmp" "$mirror"
  mv "$base.$$.tmp" "$base"  # atomic: two builds at once each write their own
  find "$cache" -name "base-*.tar" ! -path "$base" -delete  # an earlier package list's
else
  echo "build-image: [1/4] Debian $suite root filesystem: cached ($base)"
fi

echo "build-image: [2/4] wheels: netkit $version and its pinned dependencies"
rm -rf "$out" && mkdir -p "$out/wheels"
# (pip names every configured index that lacks a project: noise, not an error)
.venv/bin/pip wheel -q --disable-pip-version-check --no-cache-dir -w "$out/wheels" . \
  2> >(grep -v "^WARNING: Location '.*' is ignored" >&2) >/dev/null

echo "build-image: [3/4] /opt/netkit in the root filesystem"
mkdir -p "$out/rootfs"
tar -C "$out/rootfs" -xf "$base"
mkdir -p "$out/rootfs/tmp/wheels"
cp "$out/wheels"/*.whl "$out/rootfs/tmp/wheels/"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$out/rootfs" python3 -m venv /opt/netkit
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot "$out/rootfs" /opt/netkit/bin/pip install -q --disable-pip-version-check --no-cache-dir \
  --no-index --find-links /tmp/wheels netkit
rm -rf "$out/rootfs/tmp/wheels"
ln -sf /opt/netkit/bin/netkit "$out/rootfs/usr/local/bin/netkit"
# the node-side netkit-cni (a static binary the agent's DaemonSet copies to /opt/cni/bin)
mkdir -p "$out/rootfs/opt/netkit/cni"
cc -O2 -static -Wall -Werror -o "$out/rootfs/opt/netkit/cni/netkit-cni" netkit/cni/shim.c
mkdir -p "$out/rootfs/var/lib/netkit"

echo "build-image: [4/4] OCI image $out/oci:$tag (umoci)"
umoci init --layout "$out/oci"
umoci new --image "$out/oci:$tag"
umoci unpack --image "$out/oci:$tag" "$out/bundle" >/dev/null
rm -rf "$out/bundle/rootfs"
mv "$out/rootfs" "$out/bundle/rootfs"
umoci repack --image "$out/oci:$tag" "$out/bundle"
umoci config --image "$out/oci:$tag" \
  --config.entrypoint netkit --config.cmd --help --config.workingdir / \
  --config.env PATH=/opt/netkit/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.label "org.opencontainers.image.title=netkit" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.source=https://github.com/netkit/netkit"
rm -rf "$out/wheels"
size=$(du -sh "$out/oci" | cut -f1)
echo "build-image: done: $out/oci:$tag ($size); push it with: skopeo copy oci:$out/oci:$tag docker://REGISTRY/netkit:$tag"
