#!/bin/sh
# Quick start: installs what is missing, builds edgecache and starts it on
# its built-in defaults (data plane :8080, control plane 127.0.0.1:8081,
# cache in ./edgecache-data). Arguments are passed to edgecache, e.g.
#   docker/start.sh --allow http://deb.debian.org --route /debian/=http://deb.debian.org/debian/
# Each step says what it does; edgecache's own log then names its listeners
# and the dashboard's address.
set -eu
root="$(cd "$(dirname "$0")/.." && pwd)"
say() { printf 'start.sh: %s\n' "$*" >&2; }

say "checking the build dependencies (docker/install-deps.sh build; installs what is missing)"
"$root/docker/install-deps.sh" build
if [ -x "$root/build/edgecache" ]; then
  say "building edgecache in build/ (only what changed)"
else
  say "building edgecache in build/ (the first build takes about half a minute)"
fi
log="$root/build/start-build.log"
mkdir -p "$root/build"
if ! { cmake -S "$root" -B "$root/build" -DEDGECACHE_TESTS=OFF &&
       cmake --build "$root/build" -j"$(nproc)"; } >"$log" 2>&1; then
  cat "$log" >&2
  say "the build failed (its output is above and in $log)"
  exit 1
fi
say "starting build/edgecache $*"
say "the dashboard is on the control plane: http://127.0.0.1:8081/ on the defaults (edgecache logs its address next)"
exec "$root/build/edgecache" "$@"
