/*
 * route — request shapes to origin URL and cache key (see cache/route.h).
 *
 * Every shape ends in the same place: an absolute origin URL string that
 * curl_url parses (resolve_url). The origin URL and the key are rebuilt from
 * the parts curl hands back, so two spellings curl treats alike (host case,
 * an explicit default port, dot segments, a missing path) give one key.
 * Percent-encoding is kept exactly as the client sent it: curl neither
 * decodes nor re-encodes path and query when given a whole URL, and the
 * query is filtered piece by piece, never decoded.
 *
 *   PROXY   target -> resolve_url
 *   DO      target -> request_parts (dot segments out) -> cacheHostOrigin
 *           -> allow-list picks the scheme -> resolve_url
 *   PREFIX  target -> request_parts -> longest route prefix -> resolve_url
 */
#include "cache/route.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The parts of a parsed http(s) URL that name a cached resource. */
struct url_parts {
    char *scheme;       /* "http" or "https" */
    char *host;         /* lower case; an IPv6 literal keeps its brackets */
    char *path;         /* starts with '/', dot segments removed */
    char *query;        /* without '?'; NULL when absent */
    unsigned port;      /* explicit, or the scheme's default */
};

enum parse_result {
    PARSE_OK,
    PARSE_BAD,          /* not a URL curl accepts, or not one we can key */
    PARSE_SCHEME,       /* a URL, but not http or https */
    PARSE_HOST,         /* a host that is not one name: see host_is_fixed */
};

/* Query parameters that only authorise a download: they vary per client
 * and per hour for the same bytes, so the key leaves them out. */
static const char *const auth_params[] = {
    "sv", "se", "sr", "sp", "sig", "st", "spr", "skoid", "sktid", "skt",
    "ske", "sks", "skv",
};
static const char *const do_params[] = { "cacheHostOrigin", "cacheHostFallback" };
static const char amz_prefix[] = "X-Amz-";
/* Host used to let curl normalise an origin-form request-target. */
static const char placeholder_base[] = "http://edgecache.invalid";

/* table of contents */
static void say(char *reason, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static unsigned default_port(const char *scheme);
static bool is_web_scheme(const char *scheme);
static bool name_in(const char *name, size_t len, const char *const *set, size_t n);
static bool param_is_do(const char *name, size_t len);
static bool param_is_auth(const char *name, size_t len);
static size_t query_filter(const char *query, bool drop_auth, char *out);
static const char *query_find(const char *query, const char *name, size_t *vlen);
static void lower(char *s);
static void parts_free(struct url_parts *p);
static enum parse_result curl_part(CURLU *u, CURLUPart what, char **out);
static bool host_is_fixed(const char *host);
static enum parse_result parts_read(CURLU *u, struct url_parts *p);
static enum parse_result parts_parse(const char *url, struct url_parts *p);
static char *parts_url(const struct url_parts *p, bool drop_auth);
static enum route_status resolve_url(const struct cfg *cfg, const char *url,
                                     enum route_shape shape, struct route_target *out,
                                     char *reason, size_t reasonlen);
static enum route_status resolve_proxy(const struct cfg *cfg, const char *target,
                                       struct route_target *out,
                                       char *reason, size_t reasonlen);
static int request_parts(const char *target, char **path, char **query);
static int authority_parse(const char *authority, char **host, unsigned *port);
static enum route_status do_origin_host(const char *value, size_t vlen, char **host,
                                        unsigned *port, char *reason, size_t reasonlen);
static enum route_status resolve_do(const struct cfg *cfg, const char *path,
                                    const char *query, struct route_target *out,
                                    char *reason, size_t reasonlen);
static const struct cfg_route *route_longest(const struct cfg *cfg, const char *path);
static enum route_status resolve_prefix(const struct cfg *cfg, const char *path,
                                        const char *query, struct route_target *out,
                                        char *reason, size_t reasonlen);
static bool host_equal(const char *a, size_t alen, const char *b, size_t blen);
static bool host_matches(const char *pattern, const char *host);

static void say(char *reason, size_t len, const char *fmt, ...)
{
    if (!reason || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, len, fmt, ap);
    va_end(ap);
}

static unsigned default_port(const char *scheme)
{
    return strcasecmp(scheme, "https") == 0 ? 443 : 80;
}

static bool is_web_scheme(const char *scheme)
{
    return strcasecmp(scheme, "http") == 0 || strcasecmp(scheme, "https") == 0;
}

/* ---- query parameters ---------------------------------------------------- */

static bool name_in(const char *name, size_t len, const char *const *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(set[i]) == len && strncasecmp(name, set[i], len) == 0)
            return true;
    return false;
}

static bool param_is_do(const char *name, size_t len)
{
    return name_in(name, len, do_params, sizeof do_params / sizeof do_params[0]);
}

static bool param_is_auth(const char *name, size_t len)
{
    size_t plen = sizeof amz_prefix - 1;
    if (len >= plen && strncasecmp(name, amz_prefix, plen) == 0)
        return true;
    return name_in(name, len, auth_params, sizeof auth_params / sizeof auth_params[0]);
}

/* Copies query into out (at least strlen(query) + 1 bytes) without DO's
 * parameters, and without the authorising ones when drop_auth. The order of
 * what stays is kept. Returns the length written. */
static size_t query_filter(const char *query, bool drop_auth, char *out)
{
    size_t n = 0;
    const char *p = query;
    for (;;) {
        size_t plen = strcspn(p, "&");
        size_t nlen = strcspn(p, "=&");
        bool drop = param_is_do(p, nlen) || (drop_auth && param_is_auth(p, nlen));
        if (!drop) {
            if (n > 0)
                out[n++] = '&';
            memcpy(out + n, p, plen);
            n += plen;
        }
        if (p[plen] == '\0')
            break;
        p += plen + 1;
    }
    out[n] = '\0';
    return n;
}

/* The raw value of the first parameter called name (case-insensitive), or
 * NULL. A parameter without '=' has an empty value. */
static const char *query_find(const char *query, const char *name, size_t *vlen)
{
    size_t want = strlen(name);
    for (const char *p = query;;) {
        size_t plen = strcspn(p, "&");
        size_t nlen = strcspn(p, "=&");
        if (nlen == want && strncasecmp(p, name, want) == 0) {
            *vlen = nlen < plen ? plen - nlen - 1 : 0;
            return p + (nlen < plen ? nlen + 1 : nlen);
        }
        if (p[plen] == '\0')
            return NULL;
        p += plen + 1;
    }
}

/* ---- URL parts (curl_url) ------------------------------------------------ */

static void lower(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

static void parts_free(struct url_parts *p)
{
    curl_free(p->scheme);
    curl_free(p->host);
    curl_free(p->path);
    curl_free(p->query);
    memset(p, 0, sizeof *p);
}

static enum parse_result curl_part(CURLU *u, CURLUPart what, char **out)
{
    unsigned flags = what == CURLUPART_PORT ? CURLU_DEFAULT_PORT : 0;
    CURLUcode rc = curl_url_get(u, what, out, flags);
    if (rc == CURLUE_NO_QUERY && what == CURLUPART_QUERY)
        return PARSE_OK;
    return rc == CURLUE_OK ? PARSE_OK : PARSE_BAD;
}

/* curl_url percent-decodes the host each time it parses a URL, so a host
 * that holds a '%' once decoded ("a%2541" -> "a%41") would name another
 * host ("aA") when its URL is parsed again, by the next layer asking in DO
 * shape or by curl fetching it: no fixed point for the key. True when the
 * (lower-cased) host has no '%' and reads back as itself. */
static bool host_is_fixed(const char *host)
{
    char *url = NULL, *again = NULL;
    CURLU *u = NULL;
    bool same = false;
    if (strchr(host, '%'))
        return false;
    /* The common cases read back as themselves: a name with a label that
     * does not start with a digit (so curl does not read it as an IPv4
     * address, "1" -> "0.0.0.1"), or an IPv4 address spelt canonically. */
    if (host[strspn(host, "abcdefghijklmnopqrstuvwxyz0123456789.-_")] == '\0') {
        for (const char *l = host; *l; l += strcspn(l, ".") + (l[strcspn(l, ".")] == '.'))
            if (!(*l >= '0' && *l <= '9') && *l != '.')
                return true;
        struct in_addr a4;
        char back[INET_ADDRSTRLEN];
        if (inet_pton(AF_INET, host, &a4) == 1 && inet_ntop(AF_INET, &a4, back, sizeof back) &&
            strcmp(back, host) == 0)
            return true;
    }
    if (asprintf(&url, "http://%s/", host) >= 0 && (u = curl_url()) &&
        curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &again, 0) == CURLUE_OK) {
        lower(again);
        same = strcmp(again, host) == 0;
    }
    curl_free(again);
    curl_url_cleanup(u);
    free(url);
    return same;
}

static enum parse_result parts_read(CURLU *u, struct url_parts *p)
{
    char *port = NULL, *zone = NULL;
    if (curl_part(u, CURLUPART_SCHEME, &p->scheme) != PARSE_OK)
        return PARSE_BAD;
    if (!is_web_scheme(p->scheme))
        return PARSE_SCHEME;
    /* A link-local zone id is not part of a name a cache can share. */
    if (curl_url_get(u, CURLUPART_ZONEID, &zone, 0) == CURLUE_OK) {
        curl_free(zone);
        return PARSE_BAD;
    }
    if (curl_part(u, CURLUPART_HOST, &p->host) != PARSE_OK ||
        curl_part(u, CURLUPART_PORT, &port) != PARSE_OK ||
        curl_part(u, CURLUPART_PATH, &p->path) != PARSE_OK ||
        curl_part(u, CURLUPART_QUERY, &p->query) != PARSE_OK) {
        curl_free(port);
        return PARSE_BAD;
    }
    p->port = (unsigned)strtoul(port, NULL, 10);
    curl_free(port);
    lower(p->scheme);
    lower(p->host);
    if (p->port == 0 || p->host[0] == '\0')
        return PARSE_BAD;
    return host_is_fixed(p->host) ? PARSE_OK : PARSE_HOST;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* url with every percent-encoded unreserved character of its path
 * decoded (RFC 3986 §6.2.2.2: "%2e" is "."), so that dot segments spelt
 * encoded are removed like the others (a route's "/o/%2e%2e/x" must not
 * reach "/x" at the origin) and equal paths give one key. Reserved
 * characters ("%2F") stay encoded. malloc'd, or NULL when out of memory
 * or when a '%' in the path is not followed by two hex digits. */
static char *decode_unreserved(const char *url)
{
    char *out = strdup(url);
    if (!out)
        return NULL;
    char *scheme_end = strstr(out, "://");
    char *p = scheme_end ? scheme_end + 3 : out;
    p += strcspn(p, "/?#");                 /* the path starts after the authority */
    char *w = p;
    while (*p && *p != '?' && *p != '#') {
        int hi, lo;
        if (p[0] == '%' && ((hi = hexval(p[1])) < 0 || (lo = hexval(p[2])) < 0)) {
            free(out);          /* a stray '%' (see escapes_valid) */
            return NULL;
        }
        if (p[0] == '%') {
            char c = (char)(hi << 4 | lo);
            if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
                || c == '-' || c == '.' || c == '_' || c == '~') {
                *w++ = c;
                p += 3;
                continue;
            }
        }
        *w++ = *p++;
    }
    memmove(w, p, strlen(p) + 1);
    return out;
}

/* False when a '%' in path is not followed by two hex digits (RFC 3986
 * §2.1): "%5%41" would otherwise decode to "%5A", another escape, and the
 * key would not parse back to itself. Such a URL is refused. */
static bool escapes_valid(const char *path)
{
    for (const char *p = strchr(path, '%'); p; p = strchr(p + 1, '%'))
        if (hexval(p[1]) < 0 || hexval(p[2]) < 0)
            return false;
    return true;
}

/* True when path holds a percent-encoded unreserved character. */
static bool has_unreserved_escape(const char *path)
{
    for (const char *p = strchr(path, '%'); p; p = strchr(p + 1, '%')) {
        int hi = hexval(p[1]), lo = hi >= 0 ? hexval(p[2]) : -1;
        if (lo < 0)
            continue;
        char c = (char)(hi << 4 | lo);
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
            || c == '-' || c == '.' || c == '_' || c == '~')
            return true;
    }
    return false;
}

/* Parses an absolute URL. On anything but PARSE_OK, *p is left empty.
 * Encoded unreserved characters of the path are decoded first
 * (decode_unreserved), so that encoded dot segments are removed like the
 * others. When the path curl normalised still holds one (an odd input
 * whose authority is not where decode_unreserved looked), the URL curl
 * gives back is decoded and parsed once more: a key parses to itself. A
 * path with a stray '%' is refused. */
static enum parse_result parts_parse(const char *url, struct url_parts *p)
{
    char *again = NULL;
    enum parse_result r = PARSE_BAD;
    for (int pass = 0; pass < 2; pass++) {
        CURLU *u = curl_url();
        char *norm = NULL;
        memset(p, 0, sizeof *p);
        if (!u)
            break;
        if (pass == 0 && !(again = decode_unreserved(url))) {
            curl_url_cleanup(u);
            break;
        }
        CURLUcode rc = curl_url_set(u, CURLUPART_URL, again, 0);
        r = rc == CURLUE_UNSUPPORTED_SCHEME ? PARSE_SCHEME
            : rc == CURLUE_OK ? parts_read(u, p) : PARSE_BAD;
        if (r == PARSE_OK && !escapes_valid(p->path))
            r = PARSE_BAD;
        bool redo = r == PARSE_OK && pass == 0 && has_unreserved_escape(p->path);
        if (redo && curl_url_get(u, CURLUPART_URL, &norm, 0) == CURLUE_OK) {
            free(again);
            again = decode_unreserved(norm);
        }
        curl_free(norm);
        curl_url_cleanup(u);
        if (!redo)
            break;
        parts_free(p);
        r = PARSE_BAD;
        if (!again)
            break;
    }
    free(again);
    if (r != PARSE_OK)
        parts_free(p);
    return r;
}

/* "scheme://host[:port]path[?query]" with the port only when not the
 * default and the query filtered. malloc'd, NULL when out of memory. */
static char *parts_url(const struct url_parts *p, bool drop_auth)
{
    size_t qlen = p->query ? strlen(p->query) : 0;
    size_t size = strlen(p->scheme) + strlen(p->host) + strlen(p->path) + qlen + 16;
    char *s = malloc(size);
    if (!s)
        return NULL;
    int n = p->port == default_port(p->scheme)
        ? snprintf(s, size, "%s://%s%s", p->scheme, p->host, p->path)
        : snprintf(s, size, "%s://%s:%u%s", p->scheme, p->host, p->port, p->path);
    if (p->query && query_filter(p->query, drop_auth, s + n + 1) > 0)
        s[n] = '?';
    else
        s[n] = '\0';
    return s;
}

/* ---- shapes -------------------------------------------------------------- */

/* The common end of every shape: parse url, check it against the allow-list
 * (not for PREFIX, whose route the operator configured), fill *out. */
static enum route_status resolve_url(const struct cfg *cfg, const char *url,
                                     enum route_shape shape, struct route_target *out,
                                     char *reason, size_t reasonlen)
{
    struct url_parts p;
    enum parse_result r = parts_parse(url, &p);
    if (r == PARSE_SCHEME && shape == ROUTE_SHAPE_PROXY) {
        say(reason, reasonlen, "origin %.200s is not an http or https URL; only http "
            "and https origins can be on the allow-list (config key: allow)", url);
        return ROUTE_FORBIDDEN;
    }
    if (r == PARSE_HOST) {
        say(reason, reasonlen, "the host of origin URL %.200s is not a host name once "
            "percent-decoded (it holds a '%%', so it would name another host when parsed "
            "again)%s", url, shape == ROUTE_SHAPE_PREFIX ? " (config key: route)" : "");
        return ROUTE_BAD;
    }
    if (r != PARSE_OK) {
        say(reason, reasonlen, "origin URL %.200s does not parse as an http or https URL%s",
            url, shape == ROUTE_SHAPE_PREFIX ? " (config key: route)" : "");
        return ROUTE_BAD;
    }
    const struct cfg_allow *allow = NULL;
    if (shape != ROUTE_SHAPE_PREFIX) {
        allow = route_allow_match(cfg, p.scheme, p.host, p.port);
        if (!allow) {
            say(reason, reasonlen, "origin %s://%s:%u is not on the allow-list "
                "(config key: allow)", p.scheme, p.host, p.port);
            parts_free(&p);
            return ROUTE_FORBIDDEN;
        }
    }
    out->shape = shape;
    out->allow = allow;
    out->origin_url = parts_url(&p, false);
    out->key = parts_url(&p, true);
    parts_free(&p);
    if (!out->origin_url || !out->key) {
        route_target_free(out);
        say(reason, reasonlen, "out of memory");
        return ROUTE_BAD;
    }
    return ROUTE_OK;
}

static enum route_status resolve_proxy(const struct cfg *cfg, const char *target,
                                       struct route_target *out,
                                       char *reason, size_t reasonlen)
{
    if (!strstr(target, "://")) {
        say(reason, reasonlen, "request target %.200s is neither a path starting with "
            "'/' nor an absolute http or https URL", target);
        return ROUTE_BAD;
    }
    return resolve_url(cfg, target, ROUTE_SHAPE_PROXY, out, reason, reasonlen);
}

/* Path (dot segments removed) and raw query of an origin-form target, as
 * curl_url reads them. *query is NULL when there is none. 0 or -1. */
static int request_parts(const char *target, char **path, char **query)
{
    char *url = NULL;
    struct url_parts p;
    if (asprintf(&url, "%s%s", placeholder_base, target) < 0)
        return -1;
    enum parse_result r = parts_parse(url, &p);
    free(url);
    if (r != PARSE_OK)
        return -1;
    *path = p.path;
    *query = p.query;
    p.path = p.query = NULL;
    parts_free(&p);
    return 0;
}

/* Host (lower case, brackets kept) and explicit port (0: none) of a
 * decoded "host[:port]". 0 or -1. */
static int authority_parse(const char *authority, char **host, unsigned *port)
{
    char *url = NULL, *p = NULL;
    CURLU *u = curl_url();
    int rc = -1;
    if (!u || asprintf(&url, "http://%s/", authority) < 0)
        goto out;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, host, 0) != CURLUE_OK)
        goto out;
    CURLUcode prc = curl_url_get(u, CURLUPART_PORT, &p, 0);
    *port = prc == CURLUE_OK ? (unsigned)strtoul(p, NULL, 10) : 0;
    if ((prc != CURLUE_OK && prc != CURLUE_NO_PORT) || (prc == CURLUE_OK && *port == 0))
        goto out;
    lower(*host);
    rc = 0;
out:
    if (rc != 0) {
        curl_free(*host);
        *host = NULL;
    }
    curl_free(p);
    free(url);
    curl_url_cleanup(u);
    return rc;
}

/* Host and explicit port named by a raw (percent-encoded) cacheHostOrigin
 * value: a host or host:port, nothing else. */
static enum route_status do_origin_host(const char *value, size_t vlen, char **host,
                                        unsigned *port, char *reason, size_t reasonlen)
{
    int dlen = 0;
    char *v = vlen > 0 && vlen < 1024 ? curl_easy_unescape(NULL, value, (int)vlen, &dlen)
                                      : NULL;
    /* Decoded once, as a query value; a '%' left is no host (curl would
     * decode it again: see host_is_fixed). */
    bool plain = v && (size_t)dlen == strlen(v) &&
                 strcspn(v, "/?#@%\\ \t\r\n") == (size_t)dlen;
    *host = NULL;
    int rc = plain ? authority_parse(v, host, port) : -1;
    curl_free(v);
    if (rc == 0)
        return ROUTE_OK;
    say(reason, reasonlen, "cacheHostOrigin '%.*s' is not a host or host:port "
        "(without a path or user)", (int)(vlen < 200 ? vlen : 200), value);
    return ROUTE_BAD;
}

static enum route_status resolve_do(const struct cfg *cfg, const char *path,
                                    const char *query, struct route_target *out,
                                    char *reason, size_t reasonlen)
{
    size_t vlen = 0;
    const char *value = query_find(query, "cacheHostOrigin", &vlen);
    char *host = NULL, *url = NULL;
    unsigned port = 0;
    enum route_status st = do_origin_host(value, vlen, &host, &port, reason, reasonlen);
    if (st != ROUTE_OK)
        return st;
    const struct cfg_allow *allow = route_allow_match(cfg, NULL, host, port);
    if (!allow) {
        if (port)
            say(reason, reasonlen, "origin %s:%u (cacheHostOrigin) is not on the "
                "allow-list (config key: allow)", host, port);
        else
            say(reason, reasonlen, "origin %s (cacheHostOrigin) is not on the "
                "allow-list (config key: allow)", host);
        curl_free(host);
        return ROUTE_FORBIDDEN;
    }
    int n = port ? asprintf(&url, "%s://%s:%u%s?%s", allow->scheme, host, port, path, query)
                 : asprintf(&url, "%s://%s%s?%s", allow->scheme, host, path, query);
    curl_free(host);
    if (n < 0) {
        say(reason, reasonlen, "out of memory");
        return ROUTE_BAD;
    }
    st = resolve_url(cfg, url, ROUTE_SHAPE_DO, out, reason, reasonlen);
    free(url);
    return st;
}

static const struct cfg_route *route_longest(const struct cfg *cfg, const char *path)
{
    const struct cfg_route *best = NULL;
    size_t best_len = 0;
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct cfg_route *r = &cfg->routes[i];
        size_t len = strlen(r->prefix);
        if (len > best_len && strncmp(path, r->prefix, len) == 0) {
            best = r;
            best_len = len;
        }
    }
    return best;
}

static enum route_status resolve_prefix(const struct cfg *cfg, const char *path,
                                        const char *query, struct route_target *out,
                                        char *reason, size_t reasonlen)
{
    const struct cfg_route *r = route_longest(cfg, path);
    char *url = NULL;
    if (!r) {
        say(reason, reasonlen, "no origin for %.200s: the request needs a "
            "cacheHostOrigin query parameter (Delivery Optimization), an absolute "
            "URL (forward proxy), or a path under a configured route prefix "
            "(config key: route)", path);
        return ROUTE_NOT_FOUND;
    }
    const char *rest = path + strlen(r->prefix);
    int n = query ? asprintf(&url, "%s%s?%s", r->url, rest, query)
                  : asprintf(&url, "%s%s", r->url, rest);
    if (n < 0) {
        say(reason, reasonlen, "out of memory");
        return ROUTE_BAD;
    }
    enum route_status st = resolve_url(cfg, url, ROUTE_SHAPE_PREFIX, out, reason, reasonlen);
    free(url);
    return st;
}

enum route_status route_resolve(const struct cfg *cfg, const char *target,
                                struct route_target *out,
                                char *reason, size_t reasonlen)
{
    memset(out, 0, sizeof *out);
    say(reason, reasonlen, "%s", "");
    if (!target || target[0] == '\0') {
        say(reason, reasonlen, "empty request target");
        return ROUTE_BAD;
    }
    if (target[0] != '/')
        return resolve_proxy(cfg, target, out, reason, reasonlen);

    char *path = NULL, *query = NULL;
    if (request_parts(target, &path, &query) != 0) {
        say(reason, reasonlen, "request target %.200s does not parse as a path and "
            "query", target);
        return ROUTE_BAD;
    }
    size_t vlen;
    enum route_status st = query && query_find(query, "cacheHostOrigin", &vlen)
        ? resolve_do(cfg, path, query, out, reason, reasonlen)
        : resolve_prefix(cfg, path, query, out, reason, reasonlen);
    curl_free(path);
    curl_free(query);
    return st;
}

void route_target_free(struct route_target *t)
{
    if (!t)
        return;
    free(t->origin_url);
    free(t->key);
    t->origin_url = NULL;
    t->key = NULL;
    t->allow = NULL;
}

char *route_key_for_url(const char *url)
{
    struct url_parts p;
    if (!url || parts_parse(url, &p) != PARSE_OK)
        return NULL;
    char *key = parts_url(&p, true);
    parts_free(&p);
    return key;
}

/* ---- allow-list ---------------------------------------------------------- */

/* Case-insensitive equality of two hosts, ignoring IPv6 brackets on either. */
static bool host_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen >= 2 && a[0] == '[' && a[alen - 1] == ']') {
        a++;
        alen -= 2;
    }
    if (blen >= 2 && b[0] == '[' && b[blen - 1] == ']') {
        b++;
        blen -= 2;
    }
    return alen == blen && strncasecmp(a, b, alen) == 0;
}

/* "*.example.com" matches one or more non-empty labels before
 * ".example.com", never "example.com" itself nor "evilexample.com". */
static bool host_matches(const char *pattern, const char *host)
{
    size_t plen = strlen(pattern), hlen = strlen(host);
    if (strncmp(pattern, "*.", 2) != 0)
        return host_equal(pattern, plen, host, hlen);
    const char *suffix = pattern + 1;   /* ".example.com" */
    size_t slen = plen - 1;
    if (hlen <= slen || strcasecmp(host + hlen - slen, suffix) != 0)
        return false;
    size_t labels = hlen - slen;         /* "a.b" of "a.b.example.com" */
    if (host[0] == '.' || host[0] == '[')
        return false;
    for (size_t i = 0; i + 1 < labels; i++)
        if (host[i] == '.' && host[i + 1] == '.')
            return false;
    return host[labels - 1] != '.';
}

static const struct cfg_allow *entry_match(const struct cfg_allow *list, size_t n,
                                           const char *scheme, const char *host, unsigned port)
{
    if (!host)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const struct cfg_allow *e = &list[i];
        unsigned deflt = default_port(e->scheme);
        unsigned entry_port = e->port ? e->port : deflt;
        if (scheme && strcasecmp(scheme, e->scheme) != 0)
            continue;
        if ((port ? port : deflt) != entry_port)
            continue;
        if (host_matches(e->host, host))
            return e;
    }
    return NULL;
}

const struct cfg_allow *route_allow_match(const struct cfg *cfg, const char *scheme,
                                          const char *host, unsigned port)
{
    return cfg ? entry_match(cfg->allow, cfg->n_allow, scheme, host, port) : NULL;
}

int route_immutable(const struct cfg *cfg, const char *origin_url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    int hit = 0;
    if (u && curl_url_set(u, CURLUPART_URL, origin_url, 0) == CURLUE_OK
        && curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK
        && curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK
        && curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
        for (char *c = host; *c; c++)
            *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
        hit = entry_match(cfg->immutable, cfg->n_immutable, scheme, host,
                          (unsigned)strtoul(port, NULL, 10)) != NULL;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return hit;
}

char *route_do_url(const char *base, const char *origin_url)
{
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL, *path = NULL, *query = NULL, *out = NULL;
    size_t blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    if (u && curl_url_set(u, CURLUPART_URL, origin_url, 0) == CURLUE_OK
        && curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK
        && curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK) {
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_NO_DEFAULT_PORT);
        curl_url_get(u, CURLUPART_QUERY, &query, 0);
        int has_q = query && query[0];
        if (asprintf(&out, "%.*s%s?%s%scacheHostOrigin=%s%s%s", (int)blen, base, path,
                     has_q ? query : "", has_q ? "&" : "", host, port ? ":" : "",
                     port ? port : "") < 0)
            out = NULL;
    }
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(query);
    curl_url_cleanup(u);
    return out;
}

/* ---- the cache's own base URL ------------------------------------------------- */

static bool is_loopback_host(const char *h, size_t n)
{
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
    }
    if ((n == 9 && strncasecmp(h, "localhost", 9) == 0)
        || (n > 10 && strncasecmp(h + n - 10, ".localhost", 10) == 0))
        return true;
    if (n == 3 && strncmp(h, "::1", 3) == 0)
        return true;
    return n >= 4 && strncmp(h, "127.", 4) == 0 && strspn(h, "0123456789.") == n;
}

char *route_cache_base(const struct cfg *cfg, const char *host, int *warn, char *why,
                       size_t whylen)
{
    char *out = NULL;
    *warn = 0;
    if (cfg->advertise_url && cfg->advertise_url[0])
        return strdup(cfg->advertise_url);
    if (!host || !host[0]) {
        say(why, whylen, "no host to put into the URLs: set advertise_url (the URL devices "
            "reach this cache at, e.g. http://gateway:8080)");
        return NULL;
    }
    /* the host without its port (an IPv6 literal keeps its brackets) */
    size_t n = host[0] == '[' ? strcspn(host, "]") + 1 : strcspn(host, ":");
    if (n > strlen(host) || n == 0 || n > 255 || strcspn(host, "/?#@ \t") < n) {
        say(why, whylen, "the request's Host '%.100s' is not a host name: set advertise_url",
            host);
        return NULL;
    }
    const char *lh = cfg->listen.host;
    *warn = is_loopback_host(host, n) && !is_loopback_host(lh, strlen(lh));
    unsigned port = cfg->listen.port;
    int rc = port == 80 ? asprintf(&out, "http://%.*s", (int)n, host)
                        : asprintf(&out, "http://%.*s:%u", (int)n, host, port);
    if (rc < 0)
        return NULL;
    return out;
}
