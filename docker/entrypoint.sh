#!/bin/sh
# The edgecache image's entrypoint (docker/Dockerfile). Arguments are
# edgecache's: daemon options, or a command (health, import, verify,
# rewrite) and its options.
#
# Started as root (the image's default, and how IoT Edge starts a module):
# creates the cache directory if it is missing, gives it to the edgecache
# user (uid and gid 10001) when it belongs to someone else (a root-owned
# bind mount, or a cache written by another uid), then drops to that user
# with setpriv and execs edgecache. Nothing of edgecache runs as root.
# Started as another user (docker run --user UID): checks that the cache
# directory is writable by that user and says how to fix it when it is not.
#
# Before the daemon starts, the control plane is checked as the daemon
# would check it: listening beyond the container's loopback
# (EDGECACHE_ADMIN_LISTEN, the image's 0.0.0.0:8081) needs a token,
# EDGECACHE_ADMIN_TOKEN or EDGECACHE_ADMIN_TOKEN_FILE.
#
# health, rewrite and the --help/--version texts run as they are; import
# and verify (which write to the store) run as the edgecache user too.
#
# EDGECACHE_EXE (default /usr/local/bin/edgecache) and EDGECACHE_UID
# (default 10001; the gid is the same number) change the binary and the
# user; both are removed from the environment before edgecache starts.
set -eu

exe="${EDGECACHE_EXE:-/usr/local/bin/edgecache}"
run_uid="${EDGECACHE_UID:-10001}"
unset EDGECACHE_EXE EDGECACHE_UID

die() {
    printf 'edgecache entrypoint: %s\n' "$*" >&2
    exit 1
}

case "$run_uid" in
    ''|*[!0-9]*) die "EDGECACHE_UID must be a number, not '$run_uid'" ;;
esac

# What the daemon will use, from its environment and its flags (flags win,
# as they do in edgecache). A config file (EDGECACHE_CONFIG, -c, --config)
# may hold a token too: then the daemon alone checks it.
cache_dir="${EDGECACHE_CACHE_DIR:-./edgecache-data}"
admin_listen="${EDGECACHE_ADMIN_LISTEN:-127.0.0.1:8081}"
token_set=""
[ -n "${EDGECACHE_ADMIN_TOKEN:-}" ] && token_set=yes
[ -n "${EDGECACHE_ADMIN_TOKEN_FILE:-}" ] && token_set=yes
config_file="${EDGECACHE_CONFIG:-}"
token_file="${EDGECACHE_ADMIN_TOKEN_FILE:-}"

scan_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --cache-dir=*) cache_dir="${1#*=}" ;;
            --admin-listen=*) admin_listen="${1#*=}" ;;
            --admin-token=*) token_set=yes ;;
            --admin-token-file=*) token_set=yes; token_file="${1#*=}" ;;
            --config=*) config_file="${1#*=}" ;;
            --cache-dir|--admin-listen|--admin-token|--admin-token-file|--config|-c)
                [ $# -ge 2 ] || return 0
                case "$1" in
                    --cache-dir) cache_dir="$2" ;;
                    --admin-listen) admin_listen="$2" ;;
                    --admin-token) token_set=yes ;;
                    --admin-token-file) token_set=yes; token_file="$2" ;;
                    *) config_file="$2" ;;
                esac
                shift ;;
        esac
        shift
    done
}

# The host of HOST:PORT, [V6]:PORT or :PORT (empty: every address).
listen_host() {
    case "$1" in
        \[*\]*) h="${1#\[}"; printf '%s' "${h%%\]*}" ;;
        *:*) printf '%s' "${1%:*}" ;;
        *) printf '%s' "$1" ;;
    esac
}

is_loopback() {
    case "$1" in
        127.*|::1|0:0:0:0:0:0:0:1|::ffff:127.*|[Ll][Oo][Cc][Aa][Ll][Hh][Oo][Ss][Tt]) return 0 ;;
    esac
    return 1
}

check_token() {
    [ -n "$token_set" ] && return 0
    [ -n "$config_file" ] && return 0
    is_loopback "$(listen_host "$admin_listen")" && return 0
    die "the control plane listens on $admin_listen (EDGECACHE_ADMIN_LISTEN), beyond" \
        "the container's loopback, and no token is set. Set EDGECACHE_ADMIN_TOKEN to a" \
        "long random string (in an IoT Edge deployment: the module's env," \
        "\"EDGECACHE_ADMIN_TOKEN\": {\"value\": \"...\"}), or EDGECACHE_ADMIN_TOKEN_FILE" \
        "to the path of a mounted secret file holding it (docker run -v" \
        "/etc/edgecache/token:/run/secrets/edgecache-token:ro -e" \
        "EDGECACHE_ADMIN_TOKEN_FILE=/run/secrets/edgecache-token); or keep the control" \
        "plane inside the container with EDGECACHE_ADMIN_LISTEN=127.0.0.1:8081."
}

as_user() {
    setpriv --reuid="$run_uid" --regid="$run_uid" --clear-groups -- "$@"
}

# As root: the directory exists and belongs to the edgecache user.
prepare_dir_as_root() {
    if [ ! -d "$cache_dir" ]; then
        # verify checks an existing store; it says so itself when none is there
        [ "${1:-}" = verify ] && return 0
        mkdir -p -- "$cache_dir" || die "cannot create the cache directory $cache_dir"
    fi
    owner="$(stat -c %u -- "$cache_dir")"
    if [ "$owner" != "$run_uid" ]; then
        echo "edgecache entrypoint: $cache_dir belongs to uid $owner; giving it to" \
             "uid $run_uid (the edgecache user)" >&2
        chown -R -- "$run_uid:$run_uid" "$cache_dir" ||
            die "cannot give $cache_dir to uid $run_uid (a read-only or root-squashed" \
                "mount?); on the host run: chown -R $run_uid:$run_uid <the directory" \
                "mounted at $cache_dir>"
    fi
    as_user test -w "$cache_dir" -a -x "$cache_dir" ||
        die "the cache directory $cache_dir belongs to uid $run_uid but is not writable" \
            "by it (mode $(stat -c %A -- "$cache_dir")), or a directory above it cannot" \
            "be entered; on the host run: chmod u+rwx <the directory mounted at $cache_dir>"
    if [ -n "$token_file" ] && ! as_user test -r "$token_file"; then
        die "the token file $token_file (EDGECACHE_ADMIN_TOKEN_FILE) is not readable by" \
            "uid $run_uid, the user edgecache runs as; make it readable by uid $run_uid" \
            "(chown $run_uid or chmod 0444 on the host)"
    fi
}

# As another user: nothing can be fixed from here, only said.
check_dir_as_user() {
    uid="$(id -u)"
    if [ ! -d "$cache_dir" ]; then
        mkdir -p -- "$cache_dir" 2>/dev/null ||
            die "the cache directory $cache_dir does not exist and uid $uid (this" \
                "container's --user) cannot create it; mount a directory there owned by" \
                "uid $uid, or run the container without --user"
    fi
    if [ ! -w "$cache_dir" ] || [ ! -x "$cache_dir" ]; then
        die "the cache directory $cache_dir is not writable by uid $uid, the user this" \
            "container runs as (--user $uid); it belongs to uid" \
            "$(stat -c %u -- "$cache_dir"). Fix it on the host with chown -R $uid" \
            "<the directory mounted at $cache_dir> (or chown -R $run_uid and run with" \
            "--user $run_uid, the image's edgecache user), or run the container without" \
            "--user: started as root, the entrypoint gives the directory to uid $run_uid" \
            "itself"
    fi
}

case "${1:-}" in
    health|rewrite|--help|-h|--version|--help-config|--help-markdown)
        exec "$exe" "$@" ;;
esac

scan_args "$@"
case "${1:-}" in
    import|verify) ;;
    *) check_token ;;
esac

if [ "$(id -u)" = 0 ]; then
    prepare_dir_as_root "${1:-}"
    exec setpriv --reuid="$run_uid" --regid="$run_uid" --clear-groups -- "$exe" "$@"
fi
check_dir_as_user
exec "$exe" "$@"
