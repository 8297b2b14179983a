#!/usr/bin/env bash
# Build the parts that make the test plane behave like a cluster, from the Go module proxy:
#   workload  kube-controller-manager + kube-scheduler, the same k8s.io/kubernetes release as the
#             kube-apiserver of hack/build-envtest.sh (Deployments roll out ReplicaSets and pods)
#   kwok      sigs.k8s.io/kwok, playing the kubelet (nodes and pods become Ready, no containers)
#   traefik   Traefik v3, a real Gateway API data plane (its kubernetesGateway provider)
#
# Usage: hack/build-cluster.sh [workload|kwok|traefik]...   (no argument: all three)
# Prints the bin directory of each part asked for, one a line, in the order asked.
#
# Why: as in hack/build-envtest.sh, there is no Docker engine and no release download site, so we
# build the real binaries once per machine, keyed by version, into a cache outside the
# repository. Nothing built here is committed. Re-running is cheap: an existing binary is reused.
# Each part has its own cache directory and its own lock (flock): a second caller waits for the
# first one's build of that part and reuses it. The parts build in parallel (they share few
# packages, and each has stretches with a core idle); CLUSTER_BUILD_SERIAL=1 builds them one after
# the other (on a machine where other work is being measured, with GOMAXPROCS=1 and
# GOFLAGS=-p=1, under taskset/nice).
set -euo pipefail

# K8S_VERSION (the kube-apiserver's), CACHE, BUILD, say, new_module, copy_directives, replace_staging
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
# v3.7.x does not build from the proxy here (a local-path replace; lego v5 modules refused):
# docs/development.md, "The cluster parts".
TRAEFIK_VERSION="${TRAEFIK_VERSION:-v3.6.12}"
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="-mod=mod${GOFLAGS:+ $GOFLAGS}"

bin_dir() {
  case "$1" in
    workload) echo "$CACHE/workload/$K8S_VERSION/bin" ;;
    kwok) echo "$CACHE/kwok/$KWOK_VERSION/bin" ;;
    traefik) echo "$CACHE/traefik/$TRAEFIK_VERSION/bin" ;;
    *) say "unknown part '$1' (workload, kwok, traefik)"; exit 2 ;;
  esac
}
binaries() {
  case "$1" in
    workload) echo kube-controller-manager kube-scheduler ;;
    kwok) echo kwok ;;
    traefik) echo traefik ;;
  esac
}
# Expected times on 2 cores with empty Go caches, the three in parallel after the control plane
# (measured in .ci/run, docs/development.md "The cluster parts").
expected() {
  case "$1" in
    workload) echo "about 2.5 min on 2 cores after kube-apiserver's build" ;;
    kwok) echo "about 3 min on 2 cores" ;;
    traefik) echo "about 7 min on 2 cores" ;;
  esac
}
what() {
  case "$1" in
    workload) echo "kube-controller-manager + kube-scheduler $K8S_VERSION" ;;
    kwok) echo "kwok $KWOK_VERSION" ;;
    traefik) echo "Traefik $TRAEFIK_VERSION" ;;
  esac
}
ready() {
  local dir b
  dir=$(bin_dir "$1")
  for b in $(binaries "$1"); do [ -x "$dir/$b" ] || return 1; done
}

build_workload() {
  local bin mod minor
  bin=$(bin_dir workload)
  mod="$CACHE/workload/$K8S_VERSION/mod"
  new_module "$mod" "k8s.io/kubernetes@$K8S_VERSION" \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler
  replace_staging
  go mod tidy >/dev/null 2>&1 || true
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  rm -rf "$bin/.out" && mkdir -p "$bin/.out"
  "${BUILD[@]}" -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
      -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor" \
    -o "$bin/.out/" k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler
  mv "$bin/.out/kube-scheduler" "$bin/kube-scheduler"
  mv "$bin/.out/kube-controller-manager" "$bin/kube-controller-manager"
  rmdir "$bin/.out"
}

build_kwok() {
  local bin
  bin=$(bin_dir kwok)
  new_module "$CACHE/kwok/$KWOK_VERSION/mod" "sigs.k8s.io/kwok@$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
  copy_directives sigs.k8s.io/kwok "$KWOK_VERSION"
  go mod tidy >/dev/null 2>&1 || true
  "${BUILD[@]}" -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
    -o "$bin/kwok.tmp" sigs.k8s.io/kwok/cmd/kwok
  mv "$bin/kwok.tmp" "$bin/kwok"
}

build_traefik() {
  local bin
  bin=$(bin_dir traefik)
  new_module "$CACHE/traefik/$TRAEFIK_VERSION/mod" "github.com/traefik/traefik/v3@$TRAEFIK_VERSION" \
    github.com/traefik/traefik/v3/cmd/traefik
  # Traefik's replace block (forks of go-http-auth, mux, minheap) and its exclude of a broken
  # tencentcloud version: without them the build fails.
  copy_directives github.com/traefik/traefik/v3 "$TRAEFIK_VERSION"
  go mod tidy >/dev/null 2>&1 || true
  "${BUILD[@]}" -ldflags "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
    -o "$bin/traefik.tmp" github.com/traefik/traefik/v3/cmd/traefik
  mv "$bin/traefik.tmp" "$bin/traefik"
}

# Build one part under its own lock, with one progress line before and one after.
build_part() {
  local part=$1 bin began
  bin=$(bin_dir "$part")
  ready "$part" && return 0
  mkdir -p "$bin"
  exec 9>"$bin/.lock"
  if ! flock -n 9; then
    say "waiting for another build of $(what "$part") (into $bin) to finish"
    flock 9
    ready "$part" && return 0
  fi
  say "building $(what "$part") from the Go module proxy (one time, $(expected "$part"))"
  began=$SECONDS
  "build_$part"
  say "built $(what "$part") in $(((SECONDS - began) / 60)) min $(((SECONDS - began) % 60)) s: $bin"
}

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(workload kwok traefik)
for part in "${parts[@]}"; do bin_dir "$part" >/dev/null; done

todo=()
for part in "${parts[@]}"; do ready "$part" || todo+=("$part"); done
began=$SECONDS
if [ "${CLUSTER_BUILD_SERIAL:-0}" = 1 ] || [ ${#todo[@]} -le 1 ]; then
  for part in "${todo[@]+"${todo[@]}"}"; do (build_part "$part"); done
else
  # In parallel, each in its own process group (job control on while they start), so that a
  # failed build or a Ctrl-C stops the others too instead of leaving them running.
  jobs_left=()
  stop_builds() { for pid in "${jobs_left[@]+"${jobs_left[@]}"}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done; }
  trap stop_builds EXIT
  trap 'exit 130' INT TERM
  set -m
  for part in "${todo[@]}"; do { build_part "$part"; } & jobs_left+=($!); done
  set +m
  while [ ${#jobs_left[@]} -gt 0 ]; do
    wait -n -p finished "${jobs_left[@]}"  # errexit: the first failure stops here (and the trap the rest)
    left=()
    for pid in "${jobs_left[@]}"; do [ "$pid" = "$finished" ] || left+=("$pid"); done
    jobs_left=("${left[@]+"${left[@]}"}")
  done
  trap - EXIT
fi
if [ ${#todo[@]} -gt 0 ]; then
  say "built ${todo[*]} in $(((SECONDS - began) / 60)) min $(((SECONDS - began) % 60)) s"
fi
for part in "${parts[@]}"; do bin_dir "$part"; done
