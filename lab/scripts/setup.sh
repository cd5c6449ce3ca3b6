#!/usr/bin/env bash
# Everything a fresh Debian machine needs before the demo or the tests: the kernel-side tools
# the lab drives (iproute2, iptables for kube-proxy, tcpdump for ARP captures, ping for the pod
# network, runc for the kubelets' containerd, buildah for the images the lab builds offline),
# FRR, BIRD 2 and GoBGP for BGP mode's tests, the Kubernetes binaries, built from the Go module
# proxy and cached (lab/scripts/build-k8s.sh), and the images that need no cargo build
# (lab/scripts/build-image.sh; ferrolb's is built by the lab).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

need=()
for tool in ip:iproute2 iptables:iptables ip6tables:iptables nft:nftables tcpdump:tcpdump \
            conntrack:conntrack ethtool:ethtool ping:iputils-ping runc:runc buildah:buildah; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "[setup] installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >&2
fi

# The routers BGP mode's tests peer with, each run in a namespace of its own: FRR (bgpd, bfdd,
# zebra, vtysh), BIRD 2 and GoBGP. Their packages would start the daemons on the host: a
# policy-rc.d keeps them stopped.
routers=()
[ -x /usr/lib/frr/bgpd ] && command -v vtysh >/dev/null 2>&1 || routers+=(frr)
command -v birdc >/dev/null 2>&1 || routers+=(bird2)
command -v gobgp >/dev/null 2>&1 || routers+=(gobgpd)
if [ ${#routers[@]} -gt 0 ]; then
  echo "[setup] installing ${routers[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  guard=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    guard=1
  fi
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${routers[@]}" >&2
  [ -z "$guard" ] || rm -f /usr/sbin/policy-rc.d
fi

if ! command -v go >/dev/null 2>&1; then
  echo "[setup] Go is needed to build the Kubernetes test binaries" >&2
  exit 1
fi
"$here/build-k8s.sh" all >/dev/null
"$here/build-image.sh" pause >/dev/null
"$here/build-image.sh" agnhost >/dev/null
# MetalLB's CRDs, for the migration tool's test against a cluster holding MetalLB objects.
"$here/metallb-crds.sh" >/dev/null
