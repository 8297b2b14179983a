#!/usr/bin/env bash
# Build the test control plane (etcd, kube-apiserver) and kubectl from the Go module proxy.
#
# Why: there is no Docker engine and no release download site on our machines, so we build the
# real binaries once per machine, keyed by version, into a cache outside the repository. Nothing
# built here is committed. Re-running is cheap: an existing binary is reused.
#
# The first run is CPU-bound (the ~200 modules download in ~15 s; compiling ~2,800 packages takes
# the rest), so (measured on 2 cores, docs/development.md):
# - etcd builds beside kube-apiserver: they share few package versions (etcd's grpc, otel and
#   protobuf are newer), and each build has stretches (module resolution, links) with a core idle;
# - kube-apiserver and kubectl are one `go build`: their ~2,000 common packages compile once and
#   kubectl's own ~200 compile while kube-apiserver links;
# - -gcflags=all=-dwarf=false: the compiler skips the debug info that -ldflags=-w drops anyway
#   (11% less CPU; the binaries keep their size and versions);
# - one build at a time per machine (flock): a second caller (another test session) waits and
#   reuses the binaries, instead of deleting the module directory under the first one's feet.
set -euo pipefail

# K8S_VERSION, CACHE, BUILD, say, new_module, replace_staging
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
BIN="$CACHE/envtest/$K8S_VERSION/bin"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

ready() { [ -x "$BIN/etcd" ] && [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kubectl" ]; }

if ready; then echo "$BIN"; exit 0; fi
mkdir -p "$BIN"
exec 9>"$BIN/.lock"
if ! flock -n 9; then
  say "waiting for another build of the control plane (into $BIN) to finish"
  flock 9
  if ready; then echo "$BIN"; exit 0; fi
fi

build_etcd() {
  new_module "$CACHE/envtest/etcd-$ETCD_VERSION" "go.etcd.io/etcd/server/v3@$ETCD_VERSION" go.etcd.io/etcd/server/v3
  go mod tidy >/dev/null 2>&1 || true
  "${BUILD[@]}" -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$BIN/etcd.tmp" "$BIN/etcd"
}

build_apiserver() {
  local mod="$CACHE/envtest/$K8S_VERSION/apiserver-mod"
  new_module "$mod" "k8s.io/kubernetes@$K8S_VERSION" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
  local minor
  replace_staging
  go mod tidy >/dev/null 2>&1 || true
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  # One build for both (kubectl of the same release: no version-skew warning). Each -X applies to
  # the binaries that have the variable: component-base's for both, client-go's for kubectl.
  rm -rf "$BIN/.out" && mkdir -p "$BIN/.out"
  "${BUILD[@]}" -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
      -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
      -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
    -o "$BIN/.out/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
  mv "$BIN/.out/kubectl" "$BIN/kubectl"
  mv "$BIN/.out/kube-apiserver" "$BIN/kube-apiserver"
  rmdir "$BIN/.out"
}

began=$SECONDS
# Both builds in the background, each in its own process group (job control on while they
# start), so that a failed build or a Ctrl-C stops the other too instead of leaving it running.
jobs_left=()
stop_builds() { for pid in "${jobs_left[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done; }
trap stop_builds EXIT
trap 'exit 130' INT TERM
need_etcd=1 need_apiserver=1
[ ! -x "$BIN/etcd" ] || need_etcd=0
{ [ ! -x "$BIN/kube-apiserver" ] || [ ! -x "$BIN/kubectl" ]; } || need_apiserver=0
# The expected times were measured on 2 cores with empty Go caches (docs/development.md).
case "$need_etcd$need_apiserver" in
  11) say "building etcd $ETCD_VERSION and kube-apiserver + kubectl $K8S_VERSION from the Go module proxy, in parallel (one time, about 5 min on 2 cores)" ;;
  10) say "building etcd $ETCD_VERSION from the Go module proxy (one time, about 1 min on 2 cores)" ;;
  01) say "building kube-apiserver + kubectl $K8S_VERSION from the Go module proxy (one time, about 4 min on 2 cores)" ;;
esac
set -m
[ "$need_etcd" = 0 ] || { build_etcd & jobs_left+=($!); }
[ "$need_apiserver" = 0 ] || { build_apiserver & jobs_left+=($!); }
set +m
while [ ${#jobs_left[@]} -gt 0 ]; do
  wait -n -p finished "${jobs_left[@]}"  # errexit: the first failure stops here (and the trap the rest)
  left=()
  for pid in "${jobs_left[@]}"; do [ "$pid" = "$finished" ] || left+=("$pid"); done
  jobs_left=("${left[@]+"${left[@]}"}")
done
elapsed=$((SECONDS - began))
say "built the control plane in $((elapsed / 60)) min $((elapsed % 60)) s: $BIN"
echo "$BIN"
