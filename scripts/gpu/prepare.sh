#!/usr/bin/env bash
# Run on a machine with the Debian registry (bookworm, as the CI machine): downloads the
# Debian packages the CUDA machine needs to build retclip (it has Python + torch
# 2.11.0+cu130, CMake, ninja and nvcc, but no registry) into .deps/gpu/debs, and copies
# the Gloo headers (.deps/gloo, from scripts/fetch_gloo.sh) to .deps/gpu/gloo.
# scripts/gpu/check.sh unpacks them there. Prints the size of the tree + packages
# (limit: 64 MiB for what travels to the CUDA machine).
#   scripts/gpu/prepare.sh            # then carry .deps/gpu along with the tree
#
# OpenCV: core + imgproc only. imgcodecs pulls ~180 MB of codecs and GDAL; the CUDA build
# is configured with RETCLIP_WITH_IMGCODECS=OFF (train from shards or synthetic data).
# libopencv-dev (OpenCVConfig.cmake) is left out too, since its module list names
# every OpenCV library; check.sh uses scripts/gpu/cmake/OpenCVConfig.cmake instead.
# sentencepiece: bookworm's libsentencepiece0 carries protobuf-lite inside (no NEEDED
# libprotobuf-lite), so no protobuf package is needed.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=.deps/gpu
start=$(date +%s)

# Headers, CMake packages and link-time .so names.
dev=(libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev libgtest-dev
  libsentencepiece-dev libopencv-core-dev libopencv-imgproc-dev)
# Shared libraries the binaries load (NEEDED of the above, recursively, minus glibc,
# libstdc++/libgcc and zlib, which every machine with Python has). check.sh puts each on
# the library path only when the machine lacks it.
runtime=(libyaml-cpp0.7 libspdlog1.10 libfmt9 libsentencepiece0 libopencv-core406
  libopencv-imgproc406 libtbb12 liblapack3 libblas3 libgfortran5 libquadmath0 libglx0
  libglvnd0 libx11-6 libxcb1 libxau6 libxdmcp6 libbsd0 libmd0)

mkdir -p "$DEST/debs"
for p in "${dev[@]}" "${runtime[@]}"; do
  apt-cache show "$p" >/dev/null 2>&1 || { echo "prepare: no Debian package $p (apt-get update?)" >&2; exit 1; }
done
# apt-get download fetches exactly the named packages (no dependencies), as files.
rm -f "$DEST"/debs/*.deb
(cd "$DEST/debs" && apt-get download "${dev[@]}" "${runtime[@]}" 2>&1 | grep -v '^W: Download is performed unsandboxed' | grep -v '^Get:' || true)
n=$(ls "$DEST"/debs/*.deb | wc -l)
[ "$n" -eq $(( ${#dev[@]} + ${#runtime[@]} )) ] || { echo "prepare: expected $(( ${#dev[@]} + ${#runtime[@]} )) packages, got $n" >&2; exit 1; }
(cd "$DEST/debs" && sha256sum ./*.deb > SHA256SUMS)

# Gloo headers for c10d's ProcessGroupGloo.hpp (the distributed module).
if [ ! -d .deps/gloo/include ] && [ -x scripts/fetch_gloo.sh ]; then scripts/fetch_gloo.sh; fi
rm -rf "$DEST/gloo"
if [ -d .deps/gloo/include ]; then
  cp -r .deps/gloo "$DEST/gloo"
else
  echo "prepare: WARNING: no .deps/gloo (scripts/fetch_gloo.sh missing); builds that need Gloo headers will fail" >&2
fi

pk=$(du -sk "$DEST" | cut -f1)
tree=$(git ls-files -z | du -ck --files0-from=- 2>/dev/null | tail -1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | du -ck --files0-from=- 2>/dev/null | tail -1 | cut -f1)
total=$(( pk + tree + untracked ))
printf 'prepare: %d packages + gloo headers in %s: %.1f MiB; tree %.1f MiB (+ %.1f MiB untracked); total %.1f MiB of 64 MiB (%ds)\n' \
  "$n" "$DEST" "$(echo "$pk/1024" | bc -l)" "$(echo "$tree/1024" | bc -l)" "$(echo "$untracked/1024" | bc -l)" \
  "$(echo "$total/1024" | bc -l)" $(( $(date +%s) - start ))
[ "$total" -lt $(( 64 * 1024 )) ] || { echo "prepare: over the 64 MiB budget" >&2; exit 1; }
