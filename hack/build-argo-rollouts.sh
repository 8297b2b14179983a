#!/usr/bin/env bash
# Build the Argo Rollouts controller (rollouts-controller) from the Go module proxy, once per
# machine, keyed by version, for the side-by-side scale bench (issue 23).
#
# Why: as in hack/build-envtest.sh, there is no Docker engine and no release download site, so we
# build the real binary from a throwaway wrapper module in a cache outside the repository. Nothing
# built here is committed. Re-running is cheap: an existing binary is reused.
# - Go ignores a dependency's `replace` directives, and Argo Rollouts only builds with its own
#   (k8s.io/* pinned to one release, two forks), so they are copied into the wrapper module.
# - One build at a time per machine (flock): a second caller waits and reuses the binary.
# - It is built beside work being measured on the same machine, so it runs on one core at low
#   priority: GOMAXPROCS=1 and GOFLAGS=-p=1 (one compiler at a time), under
#   `taskset -c ${ARGO_BUILD_CPU:-1} nice -n 10`.
# - The toolchain: v1.10.2's go.mod says `go 1.26.10`, newer than the Go here (1.26.8). When
#   GOTOOLCHAIN is not set, the script asks the local Go for the module's go line (one `go mod
#   download -json` with GOTOOLCHAIN=local, which names the go.mod even when it refuses the module)
#   and, if that is newer than the local Go, uses the one approved newer toolchain,
#   ARGO_GOTOOLCHAIN (default go1.27.3), which the go command fetches from the Go module proxy like
#   a module; otherwise GOTOOLCHAIN=local. This script is bench-only: nothing in CI runs it.
#
# Prints the bin directory. The CRDs the controller needs are in the module:
#   $(go env GOMODCACHE)/github.com/argoproj/argo-rollouts@VERSION/manifests/crds/
set -euo pipefail

# CACHE, BUILD, say, new_module, copy_directives
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ARGO_ROLLOUTS_VERSION="${ARGO_ROLLOUTS_VERSION:-v1.10.2}"
DIR="$CACHE/argo-rollouts/$ARGO_ROLLOUTS_VERSION"
BIN="$DIR/bin"
MODULE=github.com/argoproj/argo-rollouts
export CGO_ENABLED=0 GOMAXPROCS=1
export GOFLAGS="-mod=mod -p=1${GOFLAGS:+ $GOFLAGS}"
LOW=(taskset -c "${ARGO_BUILD_CPU:-1}" nice -n 10)

if [ -x "$BIN/rollouts-controller" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$BIN"
exec 9>"$BIN/.lock"
if ! flock -n 9; then
  say "waiting for another build of Argo Rollouts (into $BIN) to finish"
  flock 9
  if [ -x "$BIN/rollouts-controller" ]; then echo "$BIN"; exit 0; fi
fi

# The module's go line against the local Go's version, to pick the toolchain (see the header).
if [ -z "${GOTOOLCHAIN:-}" ]; then
  gomod=$(GOTOOLCHAIN=local GOFLAGS= go mod download -json "$MODULE@$ARGO_ROLLOUTS_VERSION" 2>/dev/null \
    | python3 -c 'import json, sys; print(json.load(sys.stdin).get("GoMod", ""))' || true)
  need=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod" 2>/dev/null | head -1 || true)
  have=$(GOTOOLCHAIN=local go env GOVERSION); have=${have#go}
  if [ -n "$need" ] && [ "$(printf '%s\n%s\n' "$have" "$need" | sort -V | tail -1)" != "$have" ]; then
    export GOTOOLCHAIN="${ARGO_GOTOOLCHAIN:-go1.27.3}"
    say "Argo Rollouts $ARGO_ROLLOUTS_VERSION needs go >= $need (local: go$have): GOTOOLCHAIN=$GOTOOLCHAIN"
  else
    export GOTOOLCHAIN=local
  fi
fi

say "building Argo Rollouts $ARGO_ROLLOUTS_VERSION from the Go module proxy (one time; 5 min on 2 cores for v1.10.1, longer on one core at nice 10)"
began=$SECONDS
# A wrapper module with Argo's own non-local `replace` and `exclude` directives (lib.sh): what
# `go mod download` refuses (a go line newer than the toolchain) is printed and stops the build.
new_module "$DIR/argo-rollouts" "$MODULE@$ARGO_ROLLOUTS_VERSION" "$MODULE/cmd/rollouts-controller"
copy_directives "$MODULE" "$ARGO_ROLLOUTS_VERSION"

# tidy's own errors (a go line newer than the toolchain, a module the proxy refuses) are the ones
# worth reading: keep them in the log instead of hiding them.
"${LOW[@]}" go mod tidy 2>"$DIR/tidy.log" || { say "go mod tidy failed ($DIR/tidy.log):"; cat "$DIR/tidy.log" >&2; exit 1; }
"${LOW[@]}" "${BUILD[@]}" \
  -ldflags "-s -w -X $MODULE/utils/version.version=${ARGO_ROLLOUTS_VERSION#v}" \
  -o "$BIN/rollouts-controller.tmp" "$MODULE/cmd/rollouts-controller"
mv "$BIN/rollouts-controller.tmp" "$BIN/rollouts-controller"
say "built Argo Rollouts $ARGO_ROLLOUTS_VERSION in $(((SECONDS - began) / 60)) min $(((SECONDS - began) % 60)) s: $BIN"
echo "$BIN"
