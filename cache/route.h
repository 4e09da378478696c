/*
 * route — from what a client asked for to the origin URL and the cache key.
 *
 * A data-plane request names its origin URL in one of three shapes
 * (DESIGN.md §1), all of which map to the same key:
 *
 *   DO      /westus2/inst/ab12/fw.swu?x=1&cacheHostOrigin=inst.b.nlu.dl.adu.microsoft.com
 *           origin host from cacheHostOrigin (may carry ":port"); the scheme is
 *           the one of the allow-list entry that matches host and port.
 *   PROXY   http://deb.debian.org/debian/pool/x.deb  (absolute-form target)
 *   PREFIX  /debian/pool/x.deb with route "/debian/=http://deb.debian.org/debian/"
 *
 * Precedence: an absolute-form target is PROXY; else a query that has
 * cacheHostOrigin is DO; else the longest matching route prefix; else
 * ROUTE_NOT_FOUND.
 *
 * The key is "scheme://host[:port]/path[?query]": scheme and host lower case,
 * the port only when it is not the scheme's default, the path as curl_url
 * normalises it (dot segments removed), and the query with these parameters
 * removed (compared case-insensitively, order of the rest kept):
 *   Azure SAS: sv se sr sp sig st spr skoid sktid skt ske sks skv
 *   S3 presign: every X-Amz-* parameter
 *   DO's own: cacheHostOrigin cacheHostFallback
 * A query left empty is dropped with its '?'. The origin URL keeps the
 * authorising parameters (the upstream needs them) and loses only DO's own.
 * Percent-encoding is kept as sent (never re-encoded), but for unreserved
 * characters in the path, which are decoded (RFC 3986 §6.2.2.2: "%2e" is
 * ".", "%41" is "A") before dot segments are removed, so an encoded
 * "%2e%2e" cannot leave a route prefix and equal paths give one key; the
 * query is never decoded. The same bytes in any shape give the same key. User info ("user:pw@") and a
 * fragment are dropped from both; an IPv6 zone id is refused (ROUTE_BAD).
 * A PREFIX path has its dot segments removed before the prefix is matched,
 * so "/debian/../x" cannot leave its route.
 *
 * The allow-list decides what may be fetched: PROXY and DO targets must match
 * an entry (scheme, host pattern, port), else ROUTE_FORBIDDEN. PREFIX targets
 * are allowed by their route, which the operator configured.
 *
 * URL parsing is curl_url's. Pure functions; any thread.
 */
#ifndef EDGECACHE_ROUTE_H
#define EDGECACHE_ROUTE_H

#include <stddef.h>
#include "config/cfg.h"

enum route_shape { ROUTE_SHAPE_DO, ROUTE_SHAPE_PROXY, ROUTE_SHAPE_PREFIX };

enum route_status {
    ROUTE_OK = 0,
    ROUTE_BAD = -1,         /* 400: unparseable target or origin URL */
    ROUTE_FORBIDDEN = -2,   /* 403: origin not on the allow-list */
    ROUTE_NOT_FOUND = -3,   /* 404: no shape matched (no cacheHostOrigin, no route) */
};

struct route_target {
    enum route_shape shape;
    char *origin_url;               /* malloc'd: what to fetch upstream */
    char *key;                      /* malloc'd: the cache key */
    const struct cfg_allow *allow;  /* entry that allowed it; NULL for PREFIX */
};

/*
 * Resolves the raw request-target (exactly as on the request line, not
 * percent-decoded). On error, reason receives one line for the client that
 * names what to change, e.g. for 403:
 *   "origin http://evil.example:80 is not on the allow-list (config key: allow)"
 * On success the caller frees with route_target_free(); on error *out is
 * left empty (route_target_free() on it is harmless).
 */
enum route_status route_resolve(const struct cfg *cfg, const char *target,
                                struct route_target *out,
                                char *reason, size_t reasonlen);

void route_target_free(struct route_target *t);

/* The cache key of an absolute origin URL (the same normalisation as above).
 * Returns a malloc'd string, or NULL when the URL does not parse or is not
 * http or https. */
char *route_key_for_url(const char *url);

/* The Delivery Optimization shape of origin_url at a cache whose base URL
 * is base ("http://l4-gateway:8080"): base/path?query&cacheHostOrigin=host[:port],
 * the port only when it is not the scheme's default. This is how a child
 * asks its parent. malloc'd, or NULL when origin_url does not parse. */
char *route_do_url(const char *base, const char *origin_url);

/* Where children reach this cache's data plane, as a base URL for
 * rewritten manifests: advertise_url when it is set; else the host name
 * the request came to (its Host without the port; NULL: none), with the
 * data plane's port (the request reached the control plane, whose port is
 * no use to a device). *warn is set when that host is a loopback name or
 * address while the data plane listens beyond loopback: the URLs work on
 * this machine only, and the operator should set advertise_url. malloc'd,
 * or NULL with why. */
char *route_cache_base(const struct cfg *cfg, const char *host, int *warn, char *why,
                       size_t whylen);

/* True when origin_url's origin is listed in `immutable`. */
int route_immutable(const struct cfg *cfg, const char *origin_url);

/* The allow-list entry that admits scheme (NULL: any scheme) + host + port
 * (0: the entry's scheme default), or NULL. Host compared case-insensitively. */
const struct cfg_allow *route_allow_match(const struct cfg *cfg, const char *scheme,
                                          const char *host, unsigned port);

#endif
