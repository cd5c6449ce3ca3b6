#!/usr/bin/env bash
# Builds the lab's container images offline (no registry is reachable): each from scratch by
# buildah, saved as an OCI archive in $FERROLB_CACHE/images/ (default ~/.cache/ferrolb) for
# `ctr images import`. Prints the archive's path on stdout, progress on stderr.
#
#   pause    registry.k8s.io/pause:3.10.1: a static Go program that blocks until SIGTERM or
#            SIGINT; containerd pins it as the sandbox image under the name the kubelet expects
#   agnhost  registry.k8s.io/e2e-test-images/agnhost:2.53, the name deploy/examples uses: the
#            real agnhost of the lab's Kubernetes version (build-k8s.sh agnhost)
#   ferrolb CONTROLLER SPEAKER
#            the image deploy/ names (repository from the chart's values, tag its appVersion):
#            the two binaries and the shared libraries they load, with the paths, user and
#            entrypoint of the Dockerfile's final stage (a lab test checks that they agree)
#
# pause and agnhost are built once; ferrolb once per pair of binaries (the key is their hash).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# Bump when an image's shape changes, so caches are rebuilt.
LAB_IMAGE_REVISION=1
CACHE=${FERROLB_CACHE:-$HOME/.cache/ferrolb}
log() { printf '[build-image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
usage() { echo "usage: $0 pause | agnhost | ferrolb CONTROLLER SPEAKER" >&2; exit 2; }

# Prints $1 and exits when it is already built.
cached() { if [ -f "$1" ]; then echo "$1"; exit 0; fi; }

work=$(mktemp -d "${TMPDIR:-/tmp}/ferrolb-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir "$rootfs"

# buildah keeps its storage in the work directory (vfs: no overlay mounts left behind) and its
# network configuration too (it creates /etc/cni/net.d otherwise, even for an image from
# scratch). It also writes a blob cache under /var/lib/containers whatever it is told: each
# call runs in a private mount namespace with a throwaway /var/lib.
printf '[network]\nnetwork_backend = "cni"\nnetwork_config_dir = "%s"\n' "$work/cni" > "$work/containers.conf"
export CONTAINERS_CONF=$work/containers.conf
b() {
  unshare --mount --propagation private sh -c 'mount -t tmpfs lab-buildah /var/lib && exec "$@"' sh \
    buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs "$@"
}

# image NAME OUT ENTRYPOINT [USER]: $rootfs as the one layer of image NAME, saved to OUT.
image() {
  local name=$1 out=$2 entrypoint=$3 user=${4:-}
  log "building $name"
  local ctr; ctr=$(b from scratch)
  b copy "$ctr" "$rootfs" / >/dev/null
  b config --entrypoint "$entrypoint" ${user:+--user "$user"} "$ctr"
  b commit -q "$ctr" "$name" >/dev/null
  mkdir -p "$(dirname "$out")"
  # A private temporary name: two labs may build the same image at once.
  b push -q "$name" "oci-archive:$out.$$.tmp:$name"
  mv "$out.$$.tmp" "$out"
  echo "$out"
}

build_pause() {
  local name=registry.k8s.io/pause:3.10.1
  local out=$CACHE/images/pause-${name##*:}-lab$LAB_IMAGE_REVISION.tar
  cached "$out"
  mkdir "$work/pause"
  cat > "$work/pause/main.go" <<'GO'
// The lab's pause: holds a pod's namespaces until told to stop.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
GO
  (cd "$work/pause" && go mod init ferrolb.local/pause >/dev/null 2>&1 &&
    GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$rootfs/pause" .)
  image "$name" "$out" '["/pause"]' 65535:65535
}

build_agnhost() {
  local name=registry.k8s.io/e2e-test-images/agnhost:2.53
  local out=$CACHE/images/agnhost-${name##*:}-lab$LAB_IMAGE_REVISION.tar
  cached "$out"
  local bin; bin=$("$here/build-k8s.sh" agnhost)
  cp "$bin/agnhost" "$rootfs/agnhost"
  # As upstream's image: root, agnhost's subcommand in the container's args.
  image "$name" "$out" '["/agnhost"]'
}

build_ferrolb() {
  local controller=$1 speaker=$2
  local chart=$here/../../deploy/helm/ferrolb
  local repository tag
  repository=$(sed -n 's/^  repository: *//p' "$chart/values.yaml" | head -n 1)
  tag=$(sed -n 's/^appVersion: *"\{0,1\}\([^" ]*\)"\{0,1\} *$/\1/p' "$chart/Chart.yaml")
  [ -n "$repository" ] && [ -n "$tag" ] || { log "no image repository or appVersion in $chart"; exit 1; }
  # The name containerd gives `ferrolb/ferrolb:TAG` in a Pod spec.
  local name=docker.io/$repository:$tag
  # This script is in the key too: the agreement test must see a change to it at once.
  local key; key=$(cat "$controller" "$speaker" "$0" | b2sum | cut -c 1-16)
  local out=$CACHE/images/ferrolb-$tag-$key-lab$LAB_IMAGE_REVISION.tar
  # One archive per build of the binaries: drop those no lab has used for a day.
  find "$CACHE/images" -name 'ferrolb-*.tar' -mmin +1440 -delete 2>/dev/null || true
  if [ -f "$out" ]; then touch "$out"; echo "$out"; exit 0; fi
  # Without debug info: a debug build's is most of its size, and each node imports the image.
  strip --strip-debug -o "$rootfs/ferrolb-controller" "$controller"
  strip --strip-debug -o "$rootfs/ferrolb-speaker" "$speaker"
  local bin lib
  for bin in "$controller" "$speaker"; do
    # What distroless/cc gives the Dockerfile's image: the libraries the binary loads (libc,
    # libgcc_s, ...) and the loader, at the paths the binary and the loader look for them.
    for lib in $({ ldd "$bin" || true; } | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
      mkdir -p "$rootfs$(dirname "$lib")"
      cp -L "$lib" "$rootfs$lib"
    done
  done
  image "$name" "$out" '["/ferrolb-controller"]' 65534:65534
}

case ${1:-} in
  pause) build_pause ;;
  agnhost) build_agnhost ;;
  ferrolb) [ $# = 3 ] || usage; build_ferrolb "$2" "$3" ;;
  *) usage ;;
esac
