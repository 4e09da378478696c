/*
 * manifest — deployment documents passed to children (DESIGN.md §3, §4):
 * every download URL in them rewritten to point at this cache, and the
 * files and SHA-256 digests they promise read out, so the caller can
 * register expectations, prefetch and pin.
 *
 * What is recognised, at any depth of a JSON document (a bare object, a
 * device twin, an IoT Edge deployment, an array of them):
 *   ADU service object   an object with a member `fileUrls`, `updateManifest`
 *                        or `rootKeyPackageUrl` (bare, or the twin's
 *                        properties.desired.deviceUpdate.service). The
 *                        values of `fileUrls` and `rootKeyPackageUrl` are
 *                        rewritten. `updateManifest` is a string holding the
 *                        signed update manifest: it is read (v4/v5 `files`
 *                        map with `fileName`, `sizeInBytes`, `hashes.sha256`
 *                        in base64, `relatedFiles`; manifestVersion 2.0
 *                        `files` array with `filename`), never changed.
 *                        `updateManifestSignature` and `workflow` are never
 *                        changed either.
 *   firmware section     an object with a member `fwPackageURI` (the twin's
 *                        properties.desired.firmware): the URI is rewritten;
 *                        `fwPackageCheckValue` is a SHA-256 when it is 64 hex
 *                        or 44 base64 characters (a CRC or anything else is
 *                        no digest and no error); `fwSize` is the size.
 * A null or empty URL value is left alone (nothing to download).
 *
 * The rewrite: http(s)://host[:port]/path[?query] becomes the Delivery
 * Optimization shape
 *     <cache_base>/path?query&cacheHostOrigin=host[:port]
 * (`<cache_base>/path?cacheHostOrigin=host` without a query), the port
 * kept only when it is not the scheme's default, the host lower-cased, the
 * path and query byte for byte as curl_url reads them (percent-encoding is
 * neither decoded nor added; a fragment and user info are dropped). A URL
 * that is already in DO shape (its query has cacheHostOrigin, e.g. written
 * by this cache's parent) is first unwrapped to its origin, whose scheme
 * the allow-list decides, so each layer of a hierarchy rewrites for its own
 * children and rewriting twice gives the same document.
 *
 * Bytes: the answer is the input text with only the literals of the
 * rewritten URL strings replaced (written JSON-escaped, '/' unescaped);
 * everything else, white space, key order, escapes, a UTF-8 byte-order
 * mark, the updateManifest and signature strings, is copied as it came.
 * jansson validates the document and finds the URLs; a scanner over the
 * raw text, walking in step with jansson's tree, finds their spans.
 *
 * Errors (struct manifest_error: an HTTP status and one line that names
 * what to change):
 *   400  malformed JSON (line and column), an empty body, a duplicate
 *        object key (two parsers could read different URLs), an
 *        updateManifest string that is not valid JSON (its JSON path named,
 *        e.g. "properties.desired.deviceUpdate.service.updateManifest")
 *   413  the body is over manifest_opts.max_bytes
 *   415  not JSON at all: markup ('<'), binary (a NUL byte), UTF-16/32
 *   422  no download URL anywhere; a URL value that is not an http(s) URL;
 *        a URL whose origin is not on the allow-list (named: a child could
 *        not fetch it through this cache); a member of the wrong type
 *   500  out of memory, or a rewritten URL the scanner could not place
 *
 * Ownership: a manifest_result owns everything it points to;
 * manifest_result_free() releases it and is safe on a zeroed or freed
 * result. Pure functions: no I/O, no globals; any thread.
 */
#ifndef EDGECACHE_MANIFEST_H
#define EDGECACHE_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

/* A sensible bound on a manifest body (the caller answers 413 above its
 * configured limit, or passes the limit in manifest_opts.max_bytes). */
#define MANIFEST_MAX_BYTES_DEFAULT (4u * 1024 * 1024)

/*
 * The allow-list as the rewrite asks it: the scheme ("http" or "https")
 * under which host:port may be fetched, or NULL when it may not. scheme
 * NULL means any scheme (a DO-shape URL names none); port 0 means the
 * scheme's default. The returned string must outlive the call.
 */
typedef const char *(*manifest_allow_fn)(void *ctx, const char *scheme,
                                         const char *host, unsigned port);

struct manifest_opts {
    const char *cache_base;     /* where children reach this cache, e.g.
                                   "http://gw:8080" (see manifest_cache_base) */
    manifest_allow_fn allow;    /* required */
    void *allow_ctx;
    size_t max_bytes;           /* 0: no limit */
};

/* One download the document names. */
struct manifest_file {
    char *id;                   /* fileId (ADU), "rootKeyPackage", or "firmware" */
    char *name;                 /* fileName / filename, else the URL's last segment */
    char *url;                  /* the origin URL (what the cache fetches) */
    char *rewritten;            /* the DO-shape URL given to children */
    char *deployment_id;        /* of the service or firmware object it came from */
    int has_sha256;
    char sha256_hex[65];        /* lower-case hex when has_sha256 */
    int64_t size;               /* sizeInBytes / fwSize; -1 unknown */
    int detached_manifest;      /* a detachedManifestFileId: fetch it, check it,
                                   then manifest_files_from_update_manifest() */
    int related;                /* from relatedFiles (a delta's source) */
};

struct manifest_result {
    char *doc;                  /* the rewritten document, NUL-terminated */
    size_t len;                 /* its length without the NUL */
    struct manifest_file *files;    /* in document order */
    size_t n_files;
    /* Of the first service or firmware object: workflow.id; without one,
     * "adu-" + the first 16 hex of the SHA-256 of the updateManifest
     * string; for firmware "fw-" + the first 16 hex of the SHA-256 of the
     * section's canonical text (keys sorted, compact, fwPackageURI set to
     * the origin URL, so every layer of a hierarchy derives the same id). */
    char *deployment_id;
};

struct manifest_error {
    int status;                 /* 400, 413, 415, 422, 500 */
    char message[512];
};

/*
 * Rewrites body (len bytes, UTF-8, an optional byte-order mark) for
 * children. Returns 0 and fills *out (free with manifest_result_free), or
 * -1 with *err set and *out zeroed.
 */
int manifest_rewrite(const char *body, size_t len, const struct manifest_opts *o,
                     struct manifest_result *out, struct manifest_error *err);

/*
 * The files of a detached manifest: `json` is the fetched file (after the
 * caller checked it against the digest the parent promised), an update
 * manifest itself or an object whose `updateManifest` string holds one.
 * Its files are joined with `known` (the parent's result, which holds
 * every fileUrls entry) by fileId, or by name for a 2.0 `files` array:
 * each match is returned with the known URL, rewritten URL and deployment
 * id, and this manifest's name, SHA-256, size and flags. Files with no URL
 * in `known` are left out. Returns 0 with *out (malloc'd, free with
 * manifest_files_free; *n_out may be 0), or -1 with *err (400 not JSON,
 * 415 not text, 422 no `files`).
 */
int manifest_files_from_update_manifest(const char *json, size_t len,
                                        const struct manifest_file *known, size_t n_known,
                                        struct manifest_file **out, size_t *n_out,
                                        struct manifest_error *err);

void manifest_files_free(struct manifest_file *files, size_t n);
void manifest_result_free(struct manifest_result *r);

/*
 * A manifest_allow_fn over the configured allow-list: ctx is a
 * `const struct cfg *` (config/cfg.h), matched with route_allow_match().
 */
const char *manifest_allow_cfg(void *ctx, const char *scheme, const char *host,
                               unsigned port);

/*
 * Checks and normalises the base URL children use to reach this cache
 * ("http://gw:8080/" -> "http://gw:8080"): http or https, a host, an
 * optional port, no path, query or user. Returns a malloc'd string, or
 * NULL with a reason in why.
 */
char *manifest_cache_base(const char *url, char *why, size_t whylen);

/* One entry of an import manifest's files[] (the USB-stick sideload, read
 * by `edgecache import` and POST /api/v1/import). name is borrowed from
 * the JSON document. */
struct manifest_import_entry {
    const char *name;
    int64_t size;                   /* -1: the manifest gives none */
    char sha256[65];                /* lower-case hex */
};
struct json_t;
/* files[] of an import manifest: a malloc'd array and its count, or -1
 * with why (no files[], or an entry without a filename or a base64
 * hashes.sha256). */
int manifest_import_entries(const struct json_t *root, struct manifest_import_entry **out,
                            char *why, size_t whylen);

#endif
