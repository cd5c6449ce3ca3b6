#!/usr/bin/env bash
# Builds the lab's Kubernetes test binaries from the Go module proxy, once per version.
#
#   kube-apiserver, kube-proxy, kubectl  from k8s.io/kubernetes  $K8S_VERSION
#   kube-controller-manager              from k8s.io/kubernetes  $K8S_VERSION (its own directory,
#                                        so a cache from before it stays good)
#   kube-scheduler                       from k8s.io/kubernetes  $K8S_VERSION (its own directory)
#   kubelet                              from k8s.io/kubernetes  $K8S_VERSION (its own directory)
#   agnhost                              from k8s.io/kubernetes  $K8S_VERSION test/images/agnhost
#                                        (for the lab's agnhost image, lab/scripts/build-image.sh)
#   containerd, ctr, containerd-shim-runc-v2
#                                        from github.com/containerd/containerd/v2 $CONTAINERD_VERSION
#   bridge, host-local, loopback, portmap
#                                        from github.com/containernetworking/plugins $CNI_VERSION
#   etcd                                 from go.etcd.io/etcd    $ETCD_VERSION
#   helm                                 from helm.sh/helm/v3    $HELM_VERSION
#   prometheus, promtool                 from github.com/prometheus/prometheus $PROMETHEUS_VERSION
#                                        (the Go module's v0.3XX.Y is Prometheus 3.XX.Y; for the
#                                        alert rules' tests and a lab Prometheus)
#   dashboard-check                      from lab/tools/dashboard-check (Grafana's dashboard schema,
#                                        from github.com/grafana/grafana-foundation-sdk/go; cached
#                                        by a hash of its sources rather than a version)
#
# Binaries land in $FERROLB_CACHE/bin/<name>-<version>/ (default ~/.cache/ferrolb) and are
# rebuilt only when missing. Prints the directory of each binary on stdout, progress on stderr.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
CNI_VERSION=${CNI_VERSION:-v1.10.0}
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v0.316.0}
CACHE=${FERROLB_CACHE:-$HOME/.cache/ferrolb}

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
log() { printf '[build-k8s %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Runs "$@" with progress on stderr and, when GNU time is there, its peak memory.
timed() {
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f "[build-k8s] %e s wall, %M KiB peak RSS" "$@" >&2
  else
    "$@" >&2
  fi
}

# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces every staging module with a
# path inside its own tree. A wrapper module requires it and replaces each staging module
# with its published v0.Y.Z tag instead; the list comes from that version's own go.mod.
#
# build_k8s_packages NAME PKG...: builds the main packages k8s.io/kubernetes/PKG... (e.g.
# cmd/kubelet) into $CACHE/bin/NAME-$K8S_VERSION, each binary named after its last element.
build_k8s_packages() {
  local name=$1; shift
  local out=$CACHE/bin/$name-$K8S_VERSION
  local pkg missing=0
  for pkg in "$@"; do [ -x "$out/${pkg##*/}" ] || missing=1; done
  if [ $missing = 0 ]; then echo "$out"; return; fi
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local staging=v0.${K8S_VERSION#v1.}
  local work; work=$(mktemp -d "${TMPDIR:-/tmp}/ferrolb-k8s-build.XXXXXX")
  trap 'rm -rf "$work"; trap - RETURN' RETURN
  log "building ${*##*/} $K8S_VERSION (staging $staging); takes minutes cold"
  (
    cd "$work"
    go mod init ferrolb.local/k8s-build >/dev/null 2>&1
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
    go mod edit -json "$gomod" | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    if r["New"]["Path"].startswith("./staging/"):
        print(r["Old"]["Path"])' | while read -r m; do
      go mod edit -replace "$m=$m@$staging"
    done
    log "resolving modules"
    local packages=()
    for pkg in "$@"; do packages+=("k8s.io/kubernetes/$pkg@$K8S_VERSION"); done
    go get "${packages[@]}" 2>&1 | tail -n 3 >&2
    local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    local x=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      x="$x -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      x="$x -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
    done
    mkdir -p "$out.tmp"
    for pkg in "$@"; do
      log "go build $pkg"
      timed go build -trimpath -tags selinux,notest -ldflags "-s -w -buildid= $x" \
        -o "$out.tmp/${pkg##*/}" "k8s.io/kubernetes/$pkg"
    done
  )
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "$out"
}

# etcd's main package is the root of go.etcd.io/etcd/server/v3, whose go.mod also replaces
# its sibling modules with local paths: same wrapper trick.
build_etcd() {
  local out=$CACHE/bin/etcd-$ETCD_VERSION
  if [ -x "$out/etcd" ]; then echo "$out"; return; fi
  local work; work=$(mktemp -d "${TMPDIR:-/tmp}/ferrolb-etcd-build.XXXXXX")
  trap 'rm -rf "$work"; trap - RETURN' RETURN
  log "building etcd $ETCD_VERSION"
  (
    cd "$work"
    go mod init ferrolb.local/etcd-build >/dev/null 2>&1
    go mod edit -require "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    local gomod
    gomod=$(go mod download -json "go.etcd.io/etcd/server/v3@$ETCD_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    go mod edit -json "$gomod" | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    # Sibling modules only; the go.mod also "replaces" a few paths it forbids.
    if r["New"]["Path"].startswith("..") and r["Old"]["Path"].endswith("/v3"):
        print(r["Old"]["Path"])' | while read -r m; do
      go mod edit -replace "$m=$m@$ETCD_VERSION"
    done
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" 2>&1 | tail -n 3 >&2
    mkdir -p "$out.tmp"
    timed go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
  )
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "$out"
}

build_helm() {
  local out=$CACHE/bin/helm-$HELM_VERSION
  if [ -x "$out/helm" ]; then echo "$out"; return; fi
  log "building helm $HELM_VERSION"
  mkdir -p "$out.tmp"
  GOBIN="$out.tmp" timed go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "$out"
}

# containerd's own static build: no cgo, and without the btrfs and devmapper snapshotters
# (the lab uses overlayfs). Its go.mod has no replaces, so a plain `go install` works.
build_containerd() {
  local out=$CACHE/bin/containerd-$CONTAINERD_VERSION
  if [ -x "$out/containerd" ] && [ -x "$out/ctr" ] && [ -x "$out/containerd-shim-runc-v2" ]; then
    echo "$out"; return
  fi
  log "building containerd $CONTAINERD_VERSION"
  mkdir -p "$out.tmp"
  local m=github.com/containerd/containerd/v2
  GOBIN="$out.tmp" timed go install -trimpath -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags "-s -w -X $m/version.Version=$CONTAINERD_VERSION -X $m/version.Package=$m" \
    "$m/cmd/containerd@$CONTAINERD_VERSION" "$m/cmd/ctr@$CONTAINERD_VERSION" \
    "$m/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "$out"
}

build_cni_plugins() {
  local out=$CACHE/bin/cni-plugins-$CNI_VERSION
  if [ -x "$out/bridge" ] && [ -x "$out/host-local" ] && [ -x "$out/loopback" ] && [ -x "$out/portmap" ]; then
    echo "$out"; return
  fi
  log "building CNI plugins $CNI_VERSION"
  mkdir -p "$out.tmp"
  local m=github.com/containernetworking/plugins/plugins
  GOBIN="$out.tmp" timed go install -trimpath -ldflags "-s -w" \
    "$m/main/bridge@$CNI_VERSION" "$m/ipam/host-local@$CNI_VERSION" \
    "$m/main/loopback@$CNI_VERSION" "$m/meta/portmap@$CNI_VERSION"
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "$out"
}

# Prometheus's go.mod has no replaces: a plain `go install`. Without the `builtinassets` tag the
# web UI is left out (the server answers its API and scrapes; promtool needs no UI at all). The
# version stamp is what Prometheus's own release build (promu) sets.
build_prometheus() {
  local out=$CACHE/bin/prometheus-$PROMETHEUS_VERSION
  if [ -x "$out/prometheus" ] && [ -x "$out/promtool" ]; then echo "$out"; return; fi
  log "building prometheus and promtool $PROMETHEUS_VERSION"
  mkdir -p "$out.tmp"
  local m=github.com/prometheus/prometheus v=github.com/prometheus/common/version
  local release=${PROMETHEUS_VERSION#v0.}
  release=3.${release#3}
  GOBIN="$out.tmp" timed go install -trimpath \
    -ldflags "-s -w -X $v.Version=$release -X $v.Branch=HEAD -X $v.BuildUser=ferrolb" \
    "$m/cmd/prometheus@$PROMETHEUS_VERSION" "$m/cmd/promtool@$PROMETHEUS_VERSION"
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "$out"
}

# The lab's check of Grafana dashboards, a module of this repository: its go.sum pins the SDK, and
# -mod=readonly keeps the build from editing it.
build_dashboard_check() {
  local src; src=$(cd "$(dirname "$0")/../tools/dashboard-check" && pwd)
  local hash; hash=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
  local out=$CACHE/bin/dashboard-check-$hash
  if [ -x "$out/dashboard-check" ]; then echo "$out"; return; fi
  log "building dashboard-check ($hash)"
  mkdir -p "$out.tmp"
  (cd "$src" && GOFLAGS=-mod=readonly timed go build -trimpath -ldflags "-s -w" -o "$out.tmp/dashboard-check" .)
  rm -rf "$out"; mv "$out.tmp" "$out"
  echo "$out"
}

build_kubernetes() { build_k8s_packages kubernetes cmd/kube-apiserver cmd/kube-proxy cmd/kubectl; }
build_controller_manager() { build_k8s_packages kube-controller-manager cmd/kube-controller-manager; }
build_scheduler() { build_k8s_packages kube-scheduler cmd/kube-scheduler; }
build_kubelet() { build_k8s_packages kubelet cmd/kubelet; }
build_agnhost() { build_k8s_packages agnhost test/images/agnhost; }

what=${1:-all}
case $what in
  kubernetes) build_kubernetes ;;
  controller-manager) build_controller_manager ;;
  scheduler) build_scheduler ;;
  kubelet) build_kubelet ;;
  agnhost) build_agnhost ;;
  containerd) build_containerd ;;
  cni-plugins) build_cni_plugins ;;
  etcd) build_etcd ;;
  helm) build_helm ;;
  prometheus) build_prometheus ;;
  dashboard-check) build_dashboard_check ;;
  all) build_kubernetes; build_controller_manager; build_scheduler; build_kubelet; build_agnhost
       build_containerd; build_cni_plugins; build_etcd; build_helm; build_prometheus
       build_dashboard_check ;;
  *) echo "usage: $0 [all|kubernetes|controller-manager|scheduler|kubelet|agnhost|containerd|cni-plugins|etcd|helm|prometheus|dashboard-check]" >&2; exit 2 ;;
esac
