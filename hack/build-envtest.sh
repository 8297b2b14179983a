#!/usr/bin/env bash
# Build the test control plane (kube-apiserver + etcd) from the Go module proxy.
#
# Why: there is no Docker engine and no release download site on our machines, so we build the
# real binaries once per machine, keyed by version, into a cache outside the repository. Nothing
# built here is committed. Re-running is cheap: an existing binary is reused.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
CACHE="${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}"
BIN="$CACHE/envtest/$K8S_VERSION/bin"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

mkdir -p "$BIN"

build_apiserver() {
  local mod="$CACHE/envtest/$K8S_VERSION/apiserver-mod"
  if [ -x "$BIN/kube-apiserver" ]; then return; fi
  echo "building kube-apiserver $K8S_VERSION (one time, a few minutes on 2 cores)" >&2
  rm -rf "$mod" && mkdir -p "$mod" && cd "$mod"
  go mod init modelrollout.local/envtest-apiserver >/dev/null 2>&1
  # The release's go.mod replaces each staging module with ./staging/src/...; we must replace
  # them with their published v0.Y.Z, derived from that go.mod rather than hard-coded.
  local gomod staging_version
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  staging_version="v0.${K8S_VERSION#v1.}"
  go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
  grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}' | while read -r m; do
    go mod edit -replace="$m=$m@$staging_version"
  done
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy >/dev/null 2>&1 || true
  go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)" \
    -o "$BIN/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  # kubectl of the same release, so tests and `make cluster` have no version-skew warning.
  go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
    -o "$BIN/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl
  mv "$BIN/kubectl.tmp" "$BIN/kubectl"
  mv "$BIN/kube-apiserver.tmp" "$BIN/kube-apiserver"
}

build_etcd() {
  local mod="$CACHE/envtest/etcd-$ETCD_VERSION"
  if [ -x "$BIN/etcd" ]; then return; fi
  echo "building etcd $ETCD_VERSION (one time)" >&2
  rm -rf "$mod" && mkdir -p "$mod" && cd "$mod"
  go mod init modelrollout.local/envtest-etcd >/dev/null 2>&1
  go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  cat > tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  go mod tidy >/dev/null 2>&1 || true
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$BIN/etcd.tmp" "$BIN/etcd"
}

build_etcd
build_apiserver
echo "$BIN"
