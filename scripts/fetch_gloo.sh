#!/usr/bin/env bash
# Puts the Gloo C++ headers under .deps/gloo/include, for ProcessGroupGloo.hpp.
#
# The torch wheel carries Gloo compiled into libtorch_cpu but not its headers, and
# c10d's ProcessGroupGloo.hpp includes <gloo/...>. Debian sid's libgloo-dev
# (2025-09 snapshot) declares the rendezvous Store interface that torch 2.11's
# GlooStore overrides (has_v2_support, multi_get, ...); bookworm's 2022 one does not.
# Only the headers are used: nothing links against Debian's libgloo.
# Idempotent; pinned by version and SHA-256, with a fallback to whatever sid has now.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.deps/gloo
VERSION=0.0~git20250912.d97133a-2
SHA256=2ee01a68afe26991fbb7c5ead2815f113d37da20e2587cd339408030df7d2e2a
[ -f "$DEST/include/gloo/rendezvous/store.h" ] && exit 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
deb="$tmp/libgloo-dev.deb"
url="http://deb.debian.org/debian/pool/main/g/gloo/libgloo-dev_${VERSION/\~/%7E}_amd64.deb"
fetch() {
  if command -v curl >/dev/null; then curl -fsSL -o "$2" "$1"
  else ${PYTHON:-python3} -c 'import sys,urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"; fi
}
if fetch "$url" "$deb" 2>/dev/null && echo "$SHA256  $deb" | sha256sum -c --quiet - >/dev/null 2>&1; then
  echo "fetch_gloo: libgloo-dev $VERSION (sha256 ok)"
else
  # The pinned file left the pool: take sid's current libgloo-dev through apt.
  echo "fetch_gloo: pinned libgloo-dev $VERSION unavailable, asking apt for Debian sid's" >&2
  mkdir -p "$tmp/lists/partial"
  echo "deb http://deb.debian.org/debian sid main" > "$tmp/sid.list"
  A=(-o Dir::Etc::sourcelist="$tmp/sid.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$tmp/lists"
     -o APT::Sandbox::User=root)
  apt-get "${A[@]}" update -qq
  (cd "$tmp" && apt-get "${A[@]}" download libgloo-dev >/dev/null)
  mv "$tmp"/libgloo-dev_*.deb "$deb"
fi
dpkg -x "$deb" "$tmp/x"
rm -rf "$DEST"
mkdir -p "$DEST"
cp -r "$tmp/x/usr/include" "$DEST/include"
echo "fetch_gloo: headers in $DEST/include"
