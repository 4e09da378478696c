#!/bin/sh
# Quick start: installs what is missing, builds edgecache and starts it on
# its built-in defaults (data plane :8080, control plane 127.0.0.1:8081,
# cache in ./edgecache-data). Arguments are passed to edgecache, e.g.
#   docker/start.sh --allow http://deb.debian.org --route /debian/=http://deb.debian.org/debian/
set -eu
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/docker/install-deps.sh" build
cmake -S "$root" -B "$root/build" -DEDGECACHE_TESTS=OFF >/dev/null
cmake --build "$root/build" -j"$(nproc)" >/dev/null
exec "$root/build/edgecache" "$@"
