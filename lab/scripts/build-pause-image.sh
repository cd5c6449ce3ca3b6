#!/usr/bin/env bash
# Builds the lab's pause image offline (no registry is reachable): a static Go program that
# blocks until SIGTERM/SIGINT, in an image from scratch made by buildah, saved as an OCI
# archive in $FERROLB_CACHE/images/ (default ~/.cache/ferrolb) and rebuilt only when missing.
# containerd pins it as its sandbox image under the name the kubelet expects; prints the
# archive's path on stdout, progress on stderr.
set -euo pipefail

PAUSE_IMAGE=${PAUSE_IMAGE:-registry.k8s.io/pause:3.10.1}
# Bump when the program or the image's shape changes, so caches are rebuilt.
LAB_PAUSE_REVISION=1
CACHE=${FERROLB_CACHE:-$HOME/.cache/ferrolb}
out=$CACHE/images/pause-${PAUSE_IMAGE##*:}-lab$LAB_PAUSE_REVISION.tar
if [ -f "$out" ]; then echo "$out"; exit 0; fi

log() { printf '[build-pause %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
work=$(mktemp -d "${TMPDIR:-/tmp}/ferrolb-pause.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "building $PAUSE_IMAGE"
cat > "$work/main.go" <<'GO'
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
(cd "$work" && go mod init ferrolb.local/pause >/dev/null 2>&1 &&
  GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o pause .)
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
ctr=$(b from scratch)
b copy "$ctr" "$work/pause" /pause >/dev/null
b config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
b commit -q "$ctr" "$PAUSE_IMAGE" >/dev/null
mkdir -p "$(dirname "$out")"
b push -q "$PAUSE_IMAGE" "oci-archive:$out.tmp:$PAUSE_IMAGE"
mv "$out.tmp" "$out"
echo "$out"
