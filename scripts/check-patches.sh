#!/usr/bin/env bash
# The vendored crates under patches/ are upstream releases plus our diffs, and nothing else:
# for each, unpack the pinned crates.io release (from cargo's cache, or downloaded), check its
# SHA-256, drop what is not carried (tests, benches, examples, cargo's metadata), apply
# patches/<crate>.patch and compare the result with patches/<crate>/. Any difference fails.
#
#   scripts/check-patches.sh           check (CI runs it through arf/tests/arf/deploy_artifacts.rs)
#   scripts/check-patches.sh --write   regenerate patches/<crate>.patch from the vendored tree
#
# An upgrade: pin the new version and checksum below, run --write against the old tree to keep
# the diff, put the new release in place, apply the diff, review the rejects.
set -euo pipefail
cd "$(dirname "$0")/.."

# crate version sha256 (the crates.io index's cksum)
CRATES=(
  "candle-core 0.10.2 6bd9895436c1ba5dc1037a19935d084b838db066ff4e15ef7dded020b7c12a4a"
  "mistralrs-core 0.8.1 a2b8b9e5c94491d9ceeded3a30291cb6af6ae74810a5776dd55e3bbb8b3429d4"
)
mode="${1:-check}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

release() { # crate version sha256 -> unpacked, trimmed release under $work/upstream/<crate>
  local crate=$1 version=$2 sha=$3 file
  file="$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$crate-$version.crate" 2>/dev/null | head -1 || true)"
  if [[ -z "$file" ]]; then
    file="$work/$crate-$version.crate"
    curl -sSfL -o "$file" "https://static.crates.io/crates/$crate/$crate-$version.crate"
  fi
  echo "$sha  $file" | sha256sum --check --quiet -
  mkdir -p "$work/upstream"
  tar -xzf "$file" -C "$work/upstream"
  mv "$work/upstream/$crate-$version" "$work/upstream/$crate"
  (cd "$work/upstream/$crate" && rm -rf .cargo_vcs_info.json Cargo.lock Cargo.toml.orig tests benches examples)
}

status=0
for entry in "${CRATES[@]}"; do
  read -r crate version sha <<<"$entry"
  release "$crate" "$version" "$sha"
  if [[ "$mode" == "--write" ]]; then
    # Paths a/<file> and b/<file>, as `patch -p1` reads them; timestamps left out.
    mkdir -p "$work/ours" && cp -r "patches/$crate" "$work/ours/$crate"
    (cd "$work" && LC_ALL=C diff -ruN "upstream/$crate" "ours/$crate" || true) |
      sed -E -e "s#^(---) upstream/$crate/([^\t]*).*#\1 a/\2#" -e "s#^(\+\+\+) ours/$crate/([^\t]*).*#\1 b/\2#" \
             -e "s#^diff -ruN upstream/$crate/(.*) ours/$crate/.*#diff -ruN a/\1 b/\1#" >"patches/$crate.patch"
    echo "wrote patches/$crate.patch ($(grep -c '^+++ ' "patches/$crate.patch") files)"
    continue
  fi
  (cd "$work/upstream/$crate" && patch -p1 --quiet --no-backup-if-mismatch <"$OLDPWD/patches/$crate.patch")
  if diff -r "$work/upstream/$crate" "patches/$crate" >"$work/$crate.diff"; then
    echo "patches/$crate: $crate $version + patches/$crate.patch ($(grep -c '^+++ ' "patches/$crate.patch") files)"
  else
    echo "patches/$crate differs from $crate $version + patches/$crate.patch:" >&2
    head -50 "$work/$crate.diff" >&2
    status=1
  fi
done
exit $status
