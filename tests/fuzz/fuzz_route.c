/*
 * fuzz_route — the request-target -> origin URL -> cache key resolution
 * (cache/route.h).
 *
 * Feeds: the input (cut at its first NUL) as a raw request-target to
 * route_resolve(), against a fixed configuration built by cfg_load() from
 * an argv array (allow entries for the ADU CDN, Azure blob over https,
 * Debian, 127.0.0.1:9000 and [::1]:9000, and nested route prefixes), so
 * all three shapes (DO, PROXY, PREFIX) are reached; then the same input to
 * route_key_for_url(), route_do_url() and route_immutable().
 *
 * Checks, beyond "no crash, no leak, no UB":
 *   - an error leaves the target empty and gives a reason;
 *   - on success the shape agrees with the target's form and the allow
 *     entry (one of cfg's, NULL exactly for PREFIX); the key is an http(s)
 *     URL with a lower-case authority and no user info, fragment, empty
 *     query, authorising (SAS, X-Amz-*) or DO parameters, and the origin
 *     URL has no DO parameters;
 *   - the key is a fixed point: route_key_for_url(origin) == key and
 *     route_key_for_url(key) == key;
 *   - the key re-resolves to itself: for DO and PROXY results, the key as
 *     a PROXY target, and the origin's DO URL (route_do_url) as a DO
 *     target, resolve to the same key (and origin, for DO);
 *   - an absolute http(s) target whose route_key_for_url() exists either
 *     resolves to that key or is forbidden; route_key_for_url() is
 *     idempotent on any input; route_do_url() starts with the base.
 * No key's host holds a '%' (curl would decode it again: another host).
 *
 * run.sh: -max_len=4096
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache/route.h"
#include "config/cfg.h"
#include "fuzz_util.h"

#define BASE "http://gw:8080"

static struct cfg cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static char *args[] = {
        "edgecache",
        "--allow", "http://*.dl.adu.microsoft.com https://*.blob.core.windows.net",
        "--allow", "http://deb.debian.org, http://127.0.0.1:9000, http://[::1]:9000",
        "--allow", "https://secure.example.com",
        "--route", "/debian/=http://deb.debian.org/debian/",
        "--route", "/debian/security/=http://security.debian.org/debian-security/",
        "--route", "/fw/=https://acct.blob.core.windows.net/fw/",
        "--immutable", "http://*.dl.adu.microsoft.com",
        "--node-id", "fuzz",
        NULL,
    };
    char *envp[] = { NULL };
    char err[512];
    FILE *devnull = fopen("/dev/null", "w");
    (void)argc;
    (void)argv;
    if (!devnull ||
        cfg_load(&cfg, (int)(sizeof args / sizeof args[0]) - 1, args, envp, devnull, err,
                 sizeof err) != CFG_OK) {
        fprintf(stderr, "fuzz_route: cannot build the configuration: %s\n", err);
        abort();
    }
    fclose(devnull);
    return 0;
}

/* Query parameters a key must not hold (route.h). */
static int param_banned(const char *name, size_t len)
{
    static const char *const names[] = {
        "sv", "se", "sr", "sp", "sig", "st", "spr", "skoid", "sktid", "skt", "ske", "sks",
        "skv", "cacheHostOrigin", "cacheHostFallback",
    };
    if (len >= 6 && strncasecmp(name, "X-Amz-", 6) == 0)
        return 1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == len && strncasecmp(name, names[i], len) == 0)
            return 1;
    return 0;
}

static int param_is_do(const char *name, size_t len)
{
    return (len == 15 && strncasecmp(name, "cacheHostOrigin", len) == 0) ||
           (len == 17 && strncasecmp(name, "cacheHostFallback", len) == 0);
}

/* Calls bad(name, len) on every parameter of url's query; 1 when one is. */
static int query_has(const char *url, int (*bad)(const char *, size_t))
{
    const char *q = strchr(url, '?');
    if (!q)
        return 0;
    for (const char *p = q + 1;;) {
        size_t plen = strcspn(p, "&"), nlen = strcspn(p, "=&");
        if (bad(p, nlen))
            return 1;
        if (p[plen] == '\0')
            return 0;
        p += plen + 1;
    }
}

static void check_key(const char *key, const char *what)
{
    const char *rest = fuzz_starts_with(key, "http://")    ? key + 7
                       : fuzz_starts_with(key, "https://") ? key + 8
                                                           : NULL;
    FUZZ_CHECK(rest, "%s: key %s is not http(s)", what, key);
    size_t alen = strcspn(rest, "/");
    FUZZ_CHECK(rest[alen] == '/', "%s: key %s has no path", what, key);
    FUZZ_CHECK(alen > 0, "%s: key %s has no host", what, key);
    FUZZ_CHECK(!memchr(rest, '%', alen), "%s: key %s: a '%%' in the host", what, key);
    for (size_t i = 0; i < alen; i++) {
        FUZZ_CHECK(!(rest[i] >= 'A' && rest[i] <= 'Z'), "%s: key %s: upper-case host", what,
                   key);
        FUZZ_CHECK(rest[i] != '@', "%s: key %s has user info", what, key);
    }
    FUZZ_CHECK(!strchr(key, '#'), "%s: key %s has a fragment", what, key);
    const char *q = strchr(key, '?');
    FUZZ_CHECK(!q || q[1] != '\0', "%s: key %s has an empty query", what, key);
    FUZZ_CHECK(!query_has(key, param_banned), "%s: key %s keeps an auth or DO parameter",
               what, key);
}

static int allow_index(const struct cfg_allow *a)
{
    for (size_t i = 0; i < cfg.n_allow; i++)
        if (a == &cfg.allow[i])
            return (int)i;
    return -1;
}

static void check_resolved(const char *target, const struct route_target *t)
{
    FUZZ_CHECK(t->origin_url && t->key, "%s: OK without origin or key", target);
    check_key(t->key, target);
    FUZZ_CHECK(!query_has(t->origin_url, param_is_do), "%s: origin %s keeps a DO parameter",
               target, t->origin_url);
    FUZZ_CHECK(!strchr(t->origin_url, '#'), "%s: origin %s has a fragment", target,
               t->origin_url);
    if (target[0] != '/')
        FUZZ_CHECK(t->shape == ROUTE_SHAPE_PROXY, "%s: absolute target, shape %d", target,
                   t->shape);
    else
        FUZZ_CHECK(t->shape == ROUTE_SHAPE_DO || t->shape == ROUTE_SHAPE_PREFIX,
                   "%s: origin-form target, shape %d", target, t->shape);
    if (t->shape == ROUTE_SHAPE_PREFIX)
        FUZZ_CHECK(t->allow == NULL, "%s: PREFIX with an allow entry", target);
    else
        FUZZ_CHECK(t->allow && allow_index(t->allow) >= 0, "%s: allow entry not from cfg",
                   target);

    /* The key is a fixed point of the normalisation. */
    char *k1 = route_key_for_url(t->origin_url);
    FUZZ_CHECK(k1 && strcmp(k1, t->key) == 0, "%s: key of origin %s is %s, not %s", target,
               t->origin_url, k1 ? k1 : "(null)", t->key);
    char *k2 = route_key_for_url(t->key);
    FUZZ_CHECK(k2 && strcmp(k2, t->key) == 0, "%s: key of key %s is %s", target, t->key,
               k2 ? k2 : "(null)");
    free(k1);
    free(k2);
    if (t->shape == ROUTE_SHAPE_PREFIX)
        return;     /* a route's origin need not be on the allow-list */

    /* The key as a forward-proxy target names itself. */
    struct route_target again;
    char reason[512];
    enum route_status st = route_resolve(&cfg, t->key, &again, reason, sizeof reason);
    FUZZ_CHECK(st == ROUTE_OK, "%s: key %s as a target: status %d (%s)", target, t->key, st,
               reason);
    FUZZ_CHECK(strcmp(again.key, t->key) == 0, "%s: key %s re-resolves to %s", target,
               t->key, again.key);
    FUZZ_CHECK(again.allow == t->allow, "%s: key %s re-resolves under another allow entry",
               target, t->key);
    route_target_free(&again);

    /* So does the origin asked for in DO shape (how a child asks its parent). */
    char *do_url = route_do_url(BASE, t->origin_url);
    FUZZ_CHECK(do_url && fuzz_starts_with(do_url, BASE "/"), "%s: DO URL of %s: %s", target,
               t->origin_url, do_url ? do_url : "(null)");
    const char *do_target = do_url + strlen(BASE);
    st = route_resolve(&cfg, do_target, &again, reason, sizeof reason);
    FUZZ_CHECK(st == ROUTE_OK, "%s: DO target %s: status %d (%s)", target, do_target, st,
               reason);
    FUZZ_CHECK(again.shape == ROUTE_SHAPE_DO, "%s: DO target %s: shape %d", target, do_target,
               again.shape);
    FUZZ_CHECK(strcmp(again.key, t->key) == 0, "%s: DO target %s: key %s, not %s", target,
               do_target, again.key, t->key);
    FUZZ_CHECK(strcmp(again.origin_url, t->origin_url) == 0,
               "%s: DO target %s: origin %s, not %s", target, do_target, again.origin_url,
               t->origin_url);
    route_target_free(&again);
    free(do_url);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *target = fuzz_cstr(data, size);
    struct route_target t;
    char reason[512];

    enum route_status st = route_resolve(&cfg, target, &t, reason, sizeof reason);
    if (st == ROUTE_OK) {
        check_resolved(target, &t);
    } else {
        FUZZ_CHECK(st == ROUTE_BAD || st == ROUTE_FORBIDDEN || st == ROUTE_NOT_FOUND,
                   "%s: status %d", target, st);
        FUZZ_CHECK(!t.origin_url && !t.key, "%s: status %d but a target is set", target, st);
        FUZZ_CHECK(reason[0] != '\0', "%s: status %d without a reason", target, st);
    }

    char *key = route_key_for_url(target);
    if (key) {
        check_key(key, target);
        char *again = route_key_for_url(key);
        FUZZ_CHECK(again && strcmp(again, key) == 0, "%s: key %s, its key %s", target, key,
                   again ? again : "(null)");
        free(again);
        if (target[0] != '/' && strstr(target, "://"))
            FUZZ_CHECK((st == ROUTE_OK && strcmp(t.key, key) == 0) || st == ROUTE_FORBIDDEN,
                       "%s: route_key_for_url %s, route_resolve status %d key %s", target,
                       key, st, st == ROUTE_OK ? t.key : "-");
        free(key);
    }
    route_target_free(&t);

    char *do_url = route_do_url(BASE, target);
    if (do_url) {
        FUZZ_CHECK(fuzz_starts_with(do_url, BASE "/") && strstr(do_url, "cacheHostOrigin="),
                   "%s: DO URL %s", target, do_url);
        free(do_url);
    }
    (void)route_immutable(&cfg, target);
    free(target);
    return 0;
}
