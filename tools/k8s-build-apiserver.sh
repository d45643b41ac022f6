#!/bin/bash
# Build kube-apiserver v1.20.2 + etcd exactly like ../shared/tools/k8s/build-apiserver.sh, but with the
# vendored github.com/modern-go/reflect2 replaced by reflect2 1.0.2 (from Debian bookworm's
# golang-github-modern-go-reflect2-dev), into a SEPARATE cache:
#
#   ./k8s-build-apiserver.sh            # result: /var/cache/hoop-k8s-fixed/bin/{kube-apiserver,etcd}
#   HOOP_K8S_CACHE=/var/cache/hoop-k8s-fixed ../shared/tools/k8s/start-apiserver.sh DIR   # to run it
#
# Why: Debian's kubernetes 1.20 source vendors reflect2 1.0.1, which relies on runtime internals that changed in
# Go 1.18; built with Debian's Go 1.19 every request that decodes a map via json-iterator panics with a nil
# dereference in reflect2.(*frozenConfig).Type2 <- (*UnsafeMapType).Key (HTTP/2 INTERNAL_ERROR to clients).
# reflect2 1.0.2 is the upstream fix and is API-compatible with the vendored json-iterator (1.1.10).
#
# How: the shared script is not modified. It is copied to a temp file, and one extra step is inserted right
# before its `make WHAT=cmd/kube-apiserver` line (the anchor must occur exactly once, else we stop). The step
# runs inside the shared script, so it reuses its private apt setup ($APT), $W, say/die and ERR trap.
# Idempotent (exits at once when both binaries are in the cache); the shared script's lock and cleanup apply.
set -euo pipefail

# ../shared sits beside the repository (as in CI).
SHARED=${HOOP_SHARED_BUILD:-$(cd "$(dirname "$0")/../.." && pwd)/shared/tools/k8s/build-apiserver.sh}
# Deliberately NOT taken from $HOOP_K8S_CACHE: an exported HOOP_K8S_CACHE=/var/cache/hoop-k8s in the caller's
# environment must never make this script write into the shared cache.
CACHE=${HOOP_K8S_FIXED_CACHE:-/var/cache/hoop-k8s-fixed}
[[ $CACHE == /var/cache/hoop-k8s || $CACHE == /var/cache/hoop-k8s/ ]] && { echo "refusing to build into the shared cache $CACHE" >&2; exit 1; }

if [[ -x $CACHE/bin/kube-apiserver && -x $CACHE/bin/etcd ]]; then
  echo "[k8s-build-apiserver] ready: $CACHE/bin/{kube-apiserver,etcd}"; exit 0
fi
[[ -r $SHARED ]] || { echo "missing $SHARED" >&2; exit 1; }

TMP=$(mktemp -d /tmp/k8s-build-apiserver.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# The step to insert. Runs in the shared script's context ($W, $CACHE, "${APT[@]}", say, die; set -e + ERR trap).
cat > "$TMP/step.sh" <<'STEP'
# --- inserted by /work/main/tools/k8s-build-apiserver.sh: vendored reflect2 1.0.1 -> Debian's 1.0.2 ---------
say "3a/4 replacing vendored github.com/modern-go/reflect2 with Debian's 1.0.2 (Go >= 1.18 fix)"
VEND=$W/src/vendor/github.com
# swap_vendored DEB IMPORTPATH: replace $VEND/IMPORTPATH by the sources shipped in Debian package DEB
# (top-level package files only: no *_test.go, no sub-directories such as reflect2's tests/).
swap_vendored() {
  local deb=$1 path=$2 f
  mkdir -p "$W/fix/debs" "$W/fix/root"
  (cd "$W/fix/debs" && "${APT[@]}" download "$deb") >/dev/null
  f=$(ls "$W/fix/debs/${deb}"_*.deb)
  dpkg -x "$f" "$W/fix/root"
  [[ -d $VEND/$path ]] || die "vendored $path not found in $VEND (source layout changed?)"
  [[ -d $W/fix/root/usr/share/gocode/src/github.com/$path ]] || die "$f has no usr/share/gocode/src/github.com/$path"
  rm -rf "$VEND/$path" && mkdir -p "$VEND/$path"
  find "$W/fix/root/usr/share/gocode/src/github.com/$path" -maxdepth 1 -type f ! -name '*_test.go' \
    -exec cp {} "$VEND/$path/" \;
  say "    vendor/github.com/$path <- $(basename "$f")"
  echo "vendor/github.com/$path replaced by $(basename "$f")" >> "$CACHE/PATCHES"
}
rm -f "$CACHE/PATCHES"
# (modules.txt lines look like "# github.com/x/y v1.2.3 => github.com/x/y v1.2.3": kubernetes uses replaces)
grep -qE '^# github.com/modern-go/reflect2 v1\.0\.1( |$)' "$W/src/vendor/modules.txt" \
  || say "    note: vendored reflect2 is not the expected v1.0.1: $(grep '^# github.com/modern-go/reflect2 ' "$W/src/vendor/modules.txt" || echo none)"
swap_vendored golang-github-modern-go-reflect2-dev modern-go/reflect2
dpkg --compare-versions "$(dpkg-deb -f "$W"/fix/debs/golang-github-modern-go-reflect2-dev_*.deb Version)" ge 1.0.2 \
  || die "Debian's reflect2 is older than 1.0.2"
[[ -f $VEND/modern-go/reflect2/go_above_118.go ]] || die "swapped reflect2 lacks go_above_118.go (not the Go 1.18 fix?)"
# reflect2 1.0.2 works with json-iterator >= 1.1.10 (kubernetes 1.20 vendors 1.1.10); swap it only if older.
JV=$(sed -n 's/^# github.com\/json-iterator\/go v\([^ ]*\).*/\1/p' "$W/src/vendor/modules.txt" | head -n1)
say "    vendored json-iterator: v${JV:-?}"
[[ $JV =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || die "cannot read the vendored json-iterator version from vendor/modules.txt"
if dpkg --compare-versions "$JV" lt 1.1.10; then
  swap_vendored golang-github-json-iterator-go-dev json-iterator/go
fi
# vendor/modules.txt is left as is on purpose: the build runs in GOPATH mode (it is ignored), and editing it
# without go.mod would make any module-mode `go` command reject the vendor tree as inconsistent.
# --- end of inserted step ----------------------------------------------------------------------------------
STEP

# Insert the step before the one line that runs make; fail loudly if that anchor is missing or ambiguous.
ANCHOR='(cd "$W/src" && make WHAT=cmd/kube-apiserver) || die "make failed (output above)"'
n=$(grep -cxF -- "$ANCHOR" "$SHARED" || true)
[[ $n == 1 ]] || { echo "anchor line found $n times (want 1) in $SHARED; the shared script changed: update this wrapper" >&2; exit 1; }
awk -v anchor="$ANCHOR" -v step="$TMP/step.sh" '
  $0 == anchor { while ((getline l < step) > 0) print l; close(step) }
  { print }' "$SHARED" > "$TMP/build-apiserver.sh"
[[ $(grep -c 'inserted by /work/main/tools/k8s-build-apiserver.sh' "$TMP/build-apiserver.sh") == 1 ]] \
  || { echo "failed to insert the reflect2 step" >&2; exit 1; }
bash -n "$TMP/build-apiserver.sh"

HOOP_K8S_CACHE=$CACHE bash "$TMP/build-apiserver.sh"

# Sanity check on the result: functions from reflect2 1.0.2's go_above_118.go must be linked in.
if grep -qa 'modern-go/reflect2/go_above_118.go' "$CACHE/bin/kube-apiserver"; then
  echo "[k8s-build-apiserver] ok: $CACHE/bin/kube-apiserver contains reflect2 1.0.2 (go_above_118.go)"
else
  echo "[k8s-build-apiserver] WARNING: no trace of reflect2 1.0.2 in $CACHE/bin/kube-apiserver" >&2
fi
