# Shared by hack/build-*.sh (sourced, never run): the release they build against, the cache they
# build into, and the steps every build from the Go module proxy takes.

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
CACHE="${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}"
# -dwarf=false: the compiler skips the debug info that -ldflags=-w drops anyway (11% less CPU;
# the binaries keep their size and versions).
BUILD=(go build -trimpath -gcflags=all=-dwarf=false)

say() { echo "$*" >&2; }

# A throwaway module in $1 requiring $2 and importing the packages $3...; cd's into it.
new_module() {
  local dir=$1 require=$2
  shift 2
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
  go mod init "modelrollout.local/$(basename "$dir")" >/dev/null 2>&1
  go mod edit -require="$require"
  { printf '//go:build tools\n\npackage tools\n\nimport (\n'; printf '\t_ "%s"\n' "$@"; printf ')\n'; } > tools.go
}

# The path of module $1@$2's own go.mod, from the module proxy. What `go mod download` refuses (a
# go line newer than the toolchain, a module the proxy does not serve) stops the build with its
# own words.
module_gomod() {
  go mod download -json "$1@$2" | python3 -c '
import json, sys
d = json.load(sys.stdin)
if d.get("Error"):
    sys.exit("go mod download: " + d["Error"])
print(d["GoMod"])'
}

# Copy the `replace` (non-local ones) and `exclude` directives of module $1@$2's own go.mod into
# the current module: Go ignores a dependency's replace directives, and some projects (Traefik,
# kwok, Argo Rollouts) only build with theirs. A local-path replace cannot be copied: say so and fail.
copy_directives() {
  local gomod
  gomod=$(module_gomod "$1" "$2") || return 1
  go mod edit -json "$gomod" | python3 -c '
import json, sys
m = json.load(sys.stdin)
for r in m.get("Replace") or []:
    old, new = r["Old"], r["New"]
    if not new.get("Version"):
        sys.exit("cannot copy the local-path replace %s => %s" % (old["Path"], new["Path"]))
    print("-replace=%s%s=%s@%s" % (old["Path"], "@" + old["Version"] if old.get("Version") else "", new["Path"], new["Version"]))
for e in m.get("Exclude") or []:
    print("-exclude=%s@%s" % (e["Path"], e["Version"]))
' | while read -r directive; do go mod edit "$directive"; done
}

# k8s.io/kubernetes@$K8S_VERSION's go.mod replaces each staging module with ./staging/src/...;
# replace them in the current module with their published v0.Y.Z, derived from that go.mod rather
# than hard-coded.
replace_staging() {
  local gomod staging_version
  gomod=$(module_gomod k8s.io/kubernetes "$K8S_VERSION") || return 1
  staging_version="v0.${K8S_VERSION#v1.}"
  grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}' | while read -r m; do
    go mod edit -replace="$m=$m@$staging_version"
  done
}
