#!/usr/bin/env bash
# Build the helm CLI from the Go module proxy, once per machine, keyed by version.
#
# Why: there is no helm package in the registries we can reach and no release download site, so,
# like hack/build-envtest.sh, we build the real binary from a throwaway module in a cache outside
# the repository. Nothing built here is committed. Re-running is cheap: an existing binary is reused.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE="${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}"
DIR="$CACHE/helm/$HELM_VERSION"
BIN="$DIR/bin"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0

if [ -x "$BIN/helm" ]; then echo "$BIN"; exit 0; fi

echo "building helm $HELM_VERSION (one time, a few minutes on 2 cores)" >&2
mod="$DIR/mod"
mkdir -p "$BIN"
rm -rf "$mod" && mkdir -p "$mod" && cd "$mod"
go mod init modelrollout.local/helm >/dev/null 2>&1
go mod edit -require="helm.sh/helm/v3@$HELM_VERSION"
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
go mod tidy >/dev/null 2>&1 || true
go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  -o "$BIN/helm.tmp" helm.sh/helm/v3/cmd/helm
mv "$BIN/helm.tmp" "$BIN/helm"
echo "$BIN"
