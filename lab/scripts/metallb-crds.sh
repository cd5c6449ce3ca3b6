#!/usr/bin/env bash
# MetalLB's CRDs, for the lab test of `kubectl ferrolb migrate-from-metallb --from-cluster`:
# taken from MetalLB's own Go module (go.universe.tf/metallb $METALLB_VERSION, whose zip holds
# config/crd/bases) through the Go module proxy, once per version. Prints the directory.
set -euo pipefail
METALLB_VERSION=${METALLB_VERSION:-v0.15.3}
CACHE=${FERROLB_CACHE:-$HOME/.cache/ferrolb}
out=$CACHE/metallb-crds-$METALLB_VERSION
if [ ! -f "$out/metallb.io_ipaddresspools.yaml" ]; then
  export GOTOOLCHAIN=local GOFLAGS=-mod=mod
  dir=$(go mod download -json "go.universe.tf/metallb@$METALLB_VERSION" |
        sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir/config/crd/bases" ] || { echo "no config/crd/bases in $dir" >&2; exit 1; }
  mkdir -p "$out.tmp"
  for kind in ipaddresspools l2advertisements bgppeers bgpadvertisements bfdprofiles communities; do
    cp "$dir/config/crd/bases/metallb.io_$kind.yaml" "$out.tmp/"
  done
  rm -rf "$out" && mv "$out.tmp" "$out"
fi
echo "$out"
