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
mkdir -p "$BIN"
# One build at a time per machine: a second caller waits, then reuses the binary.
exec 9>"$BIN/.lock"
if ! flock -n 9; then
  echo "waiting for another build of helm (into $BIN) to finish" >&2
  flock 9
  if [ -x "$BIN/helm" ]; then echo "$BIN"; exit 0; fi
fi

echo "building helm $HELM_VERSION for the chart tests (one time, about 1 min on 2 cores)" >&2
began=$SECONDS
mod="$DIR/mod"
rm -rf "$mod" && mkdir -p "$mod" && cd "$mod"
go mod init modelrollout.local/helm >/dev/null 2>&1
go mod edit -require="helm.sh/helm/v3@$HELM_VERSION"
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "helm.sh/helm/v3/cmd/helm"
GO
go mod tidy >/dev/null 2>&1 || true
# -dwarf=false: no debug info that -ldflags=-w would drop anyway (as in hack/build-envtest.sh).
go build -trimpath -gcflags=all=-dwarf=false -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  -o "$BIN/helm.tmp" helm.sh/helm/v3/cmd/helm
mv "$BIN/helm.tmp" "$BIN/helm"
echo "built helm in $(((SECONDS - began) / 60)) min $(((SECONDS - began) % 60)) s: $BIN" >&2
echo "$BIN"
