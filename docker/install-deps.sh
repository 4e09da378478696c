#!/bin/sh
# Installs every Debian 12 package that building, running and testing
# edgecache need. Used by the README's quick start, by tests/run.sh, by
# .ci/run and by docker/Dockerfile. Safe to run again: apt-get skips what
# is already there. Needs root (or sudo).
set -eu

BUILD="build-essential cmake pkg-config libuv1-dev libmicrohttpd-dev
       libcurl4-openssl-dev libsqlite3-dev libssl-dev libjansson-dev
       libinih-dev"
TEST="libcmocka-dev python3 python3-pytest nginx-light curl iproute2 apt-utils dpkg-dev
      prometheus chromium kubernetes-client python3-yaml"
BENCH="wrk varnish"
FUZZ="clang-14 libclang-rt-14-dev"

want="$BUILD"
case "${1:-all}" in
  build) ;;
  test|all) want="$BUILD $TEST $BENCH $FUZZ" ;;
  *) echo "usage: $0 [build|test|all]" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
  # A kubectl from elsewhere (Google's or the Kubernetes apt repository, a
  # binary download) does as well as Debian's, and would conflict with it.
  case "$p" in
    kubernetes-client) command -v kubectl >/dev/null 2>&1 && continue ;;
  esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
echo "installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
