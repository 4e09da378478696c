/*
 * manifest — rewrite the download URLs of a deployment document and read
 * the files it promises (see cache/manifest.h).
 *
 * One rewrite, in order:
 *   check_media   size (413), byte-order marks, binary or markup (415)
 *   parse_text    jansson, duplicate keys refused (400 with line, column)
 *   walk          every object of the tree: ADU service objects and
 *                 firmware sections give files and edits (an edit = a
 *                 jansson string node and the JSON literal replacing it)
 *   scan          the raw text again, in step with the tree, to find the
 *                 byte span of every edited string literal
 *   assemble      the text with those spans replaced
 *
 * An update manifest (the signed string, or a detached manifest's file) is
 * read into a catalog: manifest_file entries without URLs, keyed by fileId
 * (or only by name for a 2.0 `files` array). fileUrls entries are then
 * joined with the catalog.
 */
#include "cache/manifest.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache/digest.h"
#include "cache/route.h"

#define PATH_MAX_LEN 256            /* JSON paths in messages are cut here */
#define SCAN_MAX_DEPTH 4096         /* beyond jansson's own parsing depth */
#define QUOTE_MAX 200               /* characters of a value quoted in a message */

static const char utf8_bom[] = "\xEF\xBB\xBF";

/* A growable array of files; each entry owns its strings. */
struct file_list {
    struct manifest_file *v;
    size_t n, cap;
};

/* One string value of the document to replace. */
struct edit {
    const json_t *node;             /* the string node in the parsed tree */
    char *literal;                  /* its replacement, quotes included */
    size_t start, end;              /* the original literal's span, from the scan */
    bool found;
    size_t file;                    /* its download: an index into walk.files */
};

struct edit_list {
    struct edit *v;
    size_t n, cap;
};

/* The JSON path of the node being walked, for messages. */
struct json_path {
    char text[PATH_MAX_LEN];
    size_t len;
};

/* A service or firmware object that gave files: its deployment id is
 * computed once the whole document is walked (deployments_finish), when
 * the origin URL of every download in it is known. */
struct deployment {
    const json_t *obj;
    const char *prefix;             /* "adu-" or "fw-" for a hashed id */
    char *fixed;                    /* workflow.id or the updateManifest hash; NULL:
                                       hash the object's canonical text */
    size_t first, end;              /* its files: [first, end) of walk.files */
};

struct deployment_list {
    struct deployment *v;
    size_t n, cap;
};

/* What one rewrite collects while it walks the tree. */
struct walk {
    const struct manifest_opts *o;
    struct manifest_error *err;
    struct edit_list edits;
    struct file_list files;
    struct deployment_list deps;
    char *deployment_id;            /* of the first recognised object */
    struct json_path path;
};

/* The parts of a URL as curl_url reads them. */
struct url_parts {
    char *scheme, *host, *path, *query;     /* curl_free'd; query NULL if none */
    unsigned port;                          /* explicit and not the default, else 0 */
};

/* A URL put together again for children. */
struct url_rewrite {
    char *origin;                   /* scheme://host[:port]/path[?query] */
    char *rewritten;                /* <cache_base>/path?[query&]cacheHostOrigin=... */
    char *name;                     /* last path segment, or the host */
};

/* The raw text walked in step with the tree. */
struct scan {
    const char *s;
    size_t len, pos;
    struct edit_list *edits;
};

/* table of contents */
static int fail(struct manifest_error *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool json_start(const char *text, size_t n);
static int check_media(const char *body, size_t len, size_t max, size_t *skip,
                       struct manifest_error *err);
static json_t *parse_text(const char *text, size_t len, const char *what,
                          struct manifest_error *err);
static size_t path_push_key(struct json_path *p, const char *key);
static size_t path_push_index(struct json_path *p, size_t i);
static void path_pop(struct json_path *p, size_t len);
static char *dup_or_null(const char *s);
static char *json_literal(const char *s);
static unsigned default_port(const char *scheme);
static bool param_is_do(const char *p, size_t n);
static int query_split_do(const char *query, char **rest, char **origin_value);
static int authority_parse(const char *raw, char **host, unsigned *port);
static void url_parts_free(struct url_parts *p);
static int url_parts_read(const char *url, struct url_parts *p);
static int url_build(const struct manifest_opts *o, const char *scheme, const char *host,
                     unsigned port, const char *path, const char *query,
                     struct url_rewrite *r);
static bool utf8_valid(const char *s);
static bool host_name_ok(const char *host);
static int quoted_len(const char *url);
static int url_rewrite(const struct manifest_opts *o, const char *url,
                       struct url_rewrite *r, char *why, size_t whylen);
static void url_rewrite_free(struct url_rewrite *r);
static int sha256_from_text(const char *s, char hex[65]);
static char *short_hash_id(const char *prefix, const char *text, size_t len);
static struct manifest_file *files_push(struct file_list *l);
static void file_clear(struct manifest_file *f);
static void files_clear(struct file_list *l);
static int file_copy_facts(struct manifest_file *dst, const struct manifest_file *src);
static int catalog_add_entry(struct file_list *cat, const char *id, const json_t *f,
                             bool related);
static int catalog_add_entries(struct file_list *cat, const json_t *files, bool related);
static int catalog_mark_one(struct file_list *cat, const json_t *id);
static int catalog_mark_detached(struct file_list *cat, const json_t *um);
static int catalog_read(struct file_list *cat, const json_t *um);
static const struct manifest_file *catalog_find(const struct file_list *cat,
                                                const char *id, const char *name);
static int edits_push(struct edit_list *l, const json_t *node, const char *url,
                      size_t file);
static void edits_clear(struct edit_list *l);
static int add_download(struct walk *w, const json_t *node, const char *id,
                        const struct file_list *cat, size_t *file, bool *added);
static int url_member(struct walk *w, const json_t *obj, const char *key,
                      const json_t **node);
static int read_update_manifest(struct walk *w, const json_t *svc, struct file_list *cat);
static int service_fixed_id(const json_t *svc, char **id);
static int walk_file_urls(struct walk *w, const json_t *svc, const struct file_list *cat);
static int walk_service(struct walk *w, const json_t *svc);
static void firmware_facts(struct manifest_file *f, const json_t *fw);
static int walk_firmware(struct walk *w, const json_t *fw);
static int deployments_push(struct walk *w, const json_t *obj, const char *prefix,
                            char *fixed, size_t first, size_t end);
static void deployments_clear(struct deployment_list *l);
static int origins_put(const struct walk *w, const json_t *node, json_t *copy);
static char *canonical_id(const struct walk *w, const json_t *obj, const char *prefix);
static int deployments_finish(struct walk *w);
static bool is_service(const json_t *obj);
static int walk_node(struct walk *w, const json_t *node);
static void scan_ws(struct scan *sc);
static int scan_string(struct scan *sc, size_t *start, size_t *end);
static const json_t *scan_member(const json_t *obj, const char *raw, size_t n);
static int scan_value(struct scan *sc, const json_t *node, int depth);
static int scan_object(struct scan *sc, const json_t *node, int depth);
static int scan_array(struct scan *sc, const json_t *node, int depth);
static int edit_cmp(const void *a, const void *b);
static char *assemble(const char *text, size_t len, struct edit_list *edits, size_t *outlen);
static int rewrite_text(const char *body, size_t len, size_t skip, const json_t *root,
                        struct walk *w, struct manifest_result *out);
static json_t *detached_update_manifest(const char *json, size_t len,
                                        struct manifest_error *err);

/* ---- errors and input ---------------------------------------------------- */

static int fail(struct manifest_error *err, int status, const char *fmt, ...)
{
    va_list ap;
    err->status = status;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* True when text (n bytes) begins the way a JSON value does. */
static bool json_start(const char *text, size_t n)
{
    static const char *const words[] = { "true", "false", "null" };
    if (strchr("{[\"-0123456789", text[0]))
        return true;
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (n >= strlen(words[i]) && memcmp(text, words[i], strlen(words[i])) == 0)
            return true;
    return false;
}

/* Refuses what is not a JSON text before jansson sees it; *skip is the
 * length of a UTF-8 byte-order mark (kept in the answer, hidden from the
 * parser). */
static int check_media(const char *body, size_t len, size_t max, size_t *skip,
                       struct manifest_error *err)
{
    const unsigned char *b = (const unsigned char *)body;
    *skip = 0;
    if (max && len > max)
        return fail(err, 413, "the manifest is %zu bytes, over the limit of %zu bytes "
                    "(manifest_max_bytes)", len, max);
    if (len >= 2 && ((b[0] == 0xFE && b[1] == 0xFF) || (b[0] == 0xFF && b[1] == 0xFE)))
        return fail(err, 415, "the manifest is UTF-16 or UTF-32 (byte-order mark %02X %02X); "
                    "send it as UTF-8 JSON", b[0], b[1]);
    if (len >= 3 && memcmp(body, utf8_bom, 3) == 0)
        *skip = 3;
    const char *nul = memchr(body, '\0', len);
    if (nul)
        return fail(err, 415, "the manifest is binary data (a NUL byte at offset %zu), "
                    "not JSON", (size_t)(nul - body));
    size_t i = *skip;
    while (i < len && strchr(" \t\r\n", body[i]))
        i++;
    if (i == len)
        return fail(err, 400, "the manifest is empty; send the deployment or device "
                    "twin JSON");
    if (json_start(body + i, len - i))
        return 0;
    if (body[i] == '<')
        return fail(err, 415, "the manifest is not JSON: it starts with '<' (HTML or "
                    "XML?); send the deployment or device twin JSON");
    if (b[i] >= 0x20 && b[i] < 0x7F)
        return fail(err, 415, "the manifest is not JSON: it starts with '%c'", body[i]);
    return fail(err, 415, "the manifest is not JSON: it starts with the byte 0x%02X", b[i]);
}

/* Parses one JSON text; `what` names it in the message ("the manifest",
 * or the JSON path of an updateManifest string). */
static json_t *parse_text(const char *text, size_t len, const char *what,
                          struct manifest_error *err)
{
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!root)
        fail(err, 400, "%s is not valid JSON: line %d, column %d: %s", what, je.line,
             je.column, je.text);
    return root;
}

/* ---- JSON paths for messages --------------------------------------------- */

static size_t path_push_key(struct json_path *p, const char *key)
{
    size_t old = p->len;
    int n = snprintf(p->text + p->len, sizeof p->text - p->len, "%s%s",
                     p->len ? "." : "", key);
    p->len = n < 0 ? p->len : p->len + (size_t)n;
    if (p->len >= sizeof p->text)
        p->len = sizeof p->text - 1;
    return old;
}

static size_t path_push_index(struct json_path *p, size_t i)
{
    size_t old = p->len;
    int n = snprintf(p->text + p->len, sizeof p->text - p->len, "[%zu]", i);
    p->len = n < 0 ? p->len : p->len + (size_t)n;
    if (p->len >= sizeof p->text)
        p->len = sizeof p->text - 1;
    return old;
}

static void path_pop(struct json_path *p, size_t len)
{
    p->len = len;
    p->text[len] = '\0';
}

/* ---- strings ------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* s as a JSON string literal: quotes, backslashes and control characters
 * escaped, '/' and UTF-8 as they are. */
static char *json_literal(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(6 * n + 3);
    size_t k = 0;
    if (!out)
        return NULL;
    out[k++] = '"';
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') {
            out[k++] = '\\';
            out[k++] = (char)*c;
        } else if (*c < 0x20) {
            k += (size_t)sprintf(out + k, "\\u%04x", *c);
        } else {
            out[k++] = (char)*c;
        }
    }
    out[k++] = '"';
    out[k] = '\0';
    return out;
}

/* ---- URLs ---------------------------------------------------------------- */

static unsigned default_port(const char *scheme)
{
    return strcasecmp(scheme, "https") == 0 ? 443 : 80;
}

static bool param_is_do(const char *p, size_t n)
{
    static const char *const names[] = { "cacheHostOrigin", "cacheHostFallback" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == n && strncasecmp(p, names[i], n) == 0)
            return true;
    return false;
}

/* Splits a raw query: *rest is the query without DO's own parameters
 * (NULL when nothing is left), *origin_value the raw value of the first
 * cacheHostOrigin (NULL when there is none). Every other parameter stays,
 * in order, empty ones too ("a=1&&b=2"): the origin URL keeps them, so
 * unwrapping its DO URL must give it back (and route.c's key keeps them
 * alike). 0, or -1 when out of memory. */
static int query_split_do(const char *query, char **rest, char **origin_value)
{
    static const char origin_name[] = "cacheHostOrigin";
    size_t k = 0, kept = 0;
    *origin_value = NULL;
    *rest = malloc(strlen(query) + 1);
    if (!*rest)
        return -1;
    for (const char *p = query;;) {
        size_t plen = strcspn(p, "&"), nlen = strcspn(p, "=&");
        bool is_origin = nlen == strlen(origin_name) && p[nlen] == '=' &&
                         strncasecmp(p, origin_name, nlen) == 0;
        if (is_origin && !*origin_value &&
            !(*origin_value = strndup(p + nlen + 1, plen - nlen - 1)))
            return -1;
        if (!param_is_do(p, nlen)) {
            if (kept++)
                (*rest)[k++] = '&';
            memcpy(*rest + k, p, plen);
            k += plen;
        }
        if (p[plen] == '\0')
            break;
        p += plen + 1;
    }
    (*rest)[k] = '\0';
    if (k == 0) {
        free(*rest);
        *rest = NULL;
    }
    return 0;
}

/* Host (lower case) and explicit port (0: none) of a percent-encoded
 * "host[:port]" (a cacheHostOrigin value). 0 or -1. */
static int authority_parse(const char *raw, char **host, unsigned *port)
{
    int dlen = 0, rc = -1;
    char *v = curl_easy_unescape(NULL, raw, 0, &dlen);
    char *url = NULL, *h = NULL, *p = NULL;
    CURLU *u = curl_url();
    *host = NULL;
    *port = 0;
    /* Decoded once, as a query value: a '%' left is no host (curl_url would
     * decode it again, and so would the next layer). */
    if (!u || !v || (size_t)dlen != strlen(v) || dlen == 0 ||
        strcspn(v, "/?#@%\\ \t\r\n") != (size_t)dlen || asprintf(&url, "http://%s/", v) < 0)
        goto out;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK)
        goto out;
    CURLUcode prc = curl_url_get(u, CURLUPART_PORT, &p, 0);
    if (prc == CURLUE_OK)
        *port = (unsigned)strtoul(p, NULL, 10);
    else if (prc != CURLUE_NO_PORT)
        goto out;
    *host = strdup(h);
    for (char *c = *host; c && *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
    rc = *host ? 0 : -1;
out:
    curl_free(v);
    curl_free(h);
    curl_free(p);
    free(url);
    curl_url_cleanup(u);
    return rc;
}

static void url_parts_free(struct url_parts *p)
{
    curl_free(p->scheme);
    curl_free(p->host);
    curl_free(p->path);
    curl_free(p->query);
    memset(p, 0, sizeof *p);
}

static int url_parts_read(const char *url, struct url_parts *p)
{
    CURLU *u = curl_url();
    char *port = NULL;
    int rc = -1;
    memset(p, 0, sizeof *p);
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
        goto out;
    if (curl_url_get(u, CURLUPART_SCHEME, &p->scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &p->host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PATH, &p->path, 0) != CURLUE_OK)
        goto out;
    CURLUcode q = curl_url_get(u, CURLUPART_QUERY, &p->query, 0);
    if (q != CURLUE_OK && q != CURLUE_NO_QUERY)
        goto out;
    if (p->query && p->query[0] == '\0') {
        curl_free(p->query);
        p->query = NULL;
    }
    CURLUcode pc = curl_url_get(u, CURLUPART_PORT, &port, CURLU_NO_DEFAULT_PORT);
    if (pc == CURLUE_OK)
        p->port = (unsigned)strtoul(port, NULL, 10);
    else if (pc != CURLUE_NO_PORT)
        goto out;
    for (char *c = p->host; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c);
    rc = 0;
out:
    curl_free(port);
    curl_url_cleanup(u);
    if (rc != 0)
        url_parts_free(p);
    return rc;
}

/* Builds the origin and DO-shape URLs from scheme, host, port (0: the
 * scheme's default), path and the query without DO's parameters. */
static int url_build(const struct manifest_opts *o, const char *scheme, const char *host,
                     unsigned port, const char *path, const char *query,
                     struct url_rewrite *r)
{
    const char *slash = strrchr(path, '/');
    const char *seg = slash ? slash + 1 : path;
    char portpart[16] = "";
    /* Sized from the input: a host is never cut (it would name another). */
    if (port && port != default_port(scheme))
        snprintf(portpart, sizeof portpart, ":%u", port);
    if (asprintf(&r->origin, "%s://%s%s%s%s%s", scheme, host, portpart, path,
                 query ? "?" : "", query ? query : "") < 0)
        r->origin = NULL;
    r->rewritten = r->origin ? route_do_url(o->cache_base, r->origin) : NULL;
    r->name = strdup(*seg ? seg : host);
    return r->origin && r->rewritten && r->name ? 0 : -1;
}

/* True when s is valid UTF-8 (what jansson accepts: no overlong forms, no
 * surrogates, nothing past U+10FFFF). */
static bool utf8_valid(const char *s)
{
    const unsigned char *c = (const unsigned char *)s;
    while (*c) {
        unsigned n, cp;
        if (*c < 0x80) {
            c++;
            continue;
        }
        if (*c >= 0xC2 && *c <= 0xDF)
            n = 1, cp = *c & 0x1Fu;
        else if (*c >= 0xE0 && *c <= 0xEF)
            n = 2, cp = *c & 0x0Fu;
        else if (*c >= 0xF0 && *c <= 0xF4)
            n = 3, cp = *c & 0x07u;
        else
            return false;
        for (unsigned i = 1; i <= n; i++) {
            if ((c[i] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (c[i] & 0x3Fu);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        c += n + 1;
    }
    return true;
}

/* A host as curl_url decoded it may be put into the answer and read again
 * by the next layer: it must hold no '%' (decoded again, it would name
 * another host: "a%2541" -> "a%41" -> "aA") and be UTF-8 (the answer is
 * JSON). */
static bool host_name_ok(const char *host)
{
    return host && !strchr(host, '%') && utf8_valid(host);
}

/* How much of url a message quotes: never the query, which may carry a
 * signature (Azure SAS sig, X-Amz-Signature). */
static int quoted_len(const char *url)
{
    size_t n = strcspn(url, "?#");
    return (int)(n > QUOTE_MAX ? QUOTE_MAX : n);
}

/* Rewrites one URL for children. Returns 0, or the status (422, 500) with
 * a reason in why. */
static int url_rewrite(const struct manifest_opts *o, const char *url,
                       struct url_rewrite *r, char *why, size_t whylen)
{
    struct url_parts p;
    char *rest = NULL, *origin_value = NULL, *host = NULL;
    unsigned port = 0;
    int status = 422;
    memset(r, 0, sizeof *r);
    int shown = quoted_len(url);
    if (url_parts_read(url, &p) != 0) {
        snprintf(why, whylen, "'%.*s' is not a URL", shown, url);
        return 422;
    }
    if (strcmp(p.scheme, "http") != 0 && strcmp(p.scheme, "https") != 0) {
        snprintf(why, whylen, "'%.*s' is not an http or https URL", shown, url);
        goto out;
    }
    if (p.query && query_split_do(p.query, &rest, &origin_value) != 0) {
        snprintf(why, whylen, "out of memory");
        status = 500;
        goto out;
    }
    if (origin_value && authority_parse(origin_value, &host, &port) != 0) {
        snprintf(why, whylen, "'%.*s' has a cacheHostOrigin that is not a host or "
                 "host:port", shown, url);
        goto out;
    }
    if (!host_name_ok(origin_value ? host : p.host)) {
        snprintf(why, whylen, "'%.*s' has a %s that is not a host name once "
                 "percent-decoded (a '%%', or bytes that are not UTF-8)", shown, url,
                 origin_value ? "cacheHostOrigin" : "host");
        goto out;
    }
    const char *scheme = origin_value
        ? o->allow(o->allow_ctx, NULL, host, port)
        : o->allow(o->allow_ctx, p.scheme, p.host, p.port ? p.port : default_port(p.scheme));
    if (!scheme) {
        char origin[QUOTE_MAX + 64];     /* a message: the host quoted, at most QUOTE_MAX */
        if (!origin_value)
            snprintf(origin, sizeof origin, "%s://%.*s:%u", p.scheme, QUOTE_MAX, p.host,
                     p.port ? p.port : default_port(p.scheme));
        else if (port)
            snprintf(origin, sizeof origin, "%.*s:%u (its cacheHostOrigin)", QUOTE_MAX, host,
                     port);
        else
            snprintf(origin, sizeof origin, "%.*s (its cacheHostOrigin)", QUOTE_MAX, host);
        snprintf(why, whylen, "origin %s of '%.*s' is not on the allow-list (config key: "
                 "allow), so a child could not fetch it through this cache", origin,
                 shown, url);
        goto out;
    }
    status = origin_value
        ? url_build(o, scheme, host, port, p.path, rest, r)
        : url_build(o, p.scheme, p.host, p.port, p.path, p.query, r);
    if (status != 0) {
        snprintf(why, whylen, "out of memory");
        status = 500;
    }
out:
    if (status != 0)
        url_rewrite_free(r);
    free(rest);
    free(origin_value);
    free(host);
    url_parts_free(&p);
    return status;
}

static void url_rewrite_free(struct url_rewrite *r)
{
    free(r->origin);
    free(r->rewritten);
    free(r->name);
    memset(r, 0, sizeof *r);
}

/* ---- digests ------------------------------------------------------------- */

/* A SHA-256 written as 64 hex characters (any case) or 44 characters of
 * padded standard base64: 0 with hex filled, else -1. */
static int sha256_from_text(const char *s, char hex[65])
{
    unsigned char bin[DIGEST_SHA256_LEN];
    size_t n = strlen(s);
    int rc = n == 64 ? digest_from_hex(s, bin, sizeof bin)
             : n == 44 ? digest_from_base64(s, bin, sizeof bin) : -1;
    if (rc == 0)
        digest_hex(bin, sizeof bin, hex);
    return rc;
}

/* prefix + the first 16 hex characters of SHA-256(text). */
static char *short_hash_id(const char *prefix, const char *text, size_t len)
{
    struct digest d = {0};
    unsigned char bin[DIGEST_SHA256_LEN];
    char hex[DIGEST_SHA256_HEX], *id = NULL;
    if (digest_init(&d) != 0)
        return NULL;
    digest_update(&d, text, len);
    digest_final(&d, bin);
    digest_free(&d);
    digest_hex(bin, sizeof bin, hex);
    if (asprintf(&id, "%s%.16s", prefix, hex) < 0)
        return NULL;
    return id;
}

/* ---- file lists ---------------------------------------------------------- */

/* A new zeroed entry (size unknown) at the end of l, or NULL. */
static struct manifest_file *files_push(struct file_list *l)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        struct manifest_file *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return NULL;
        l->v = v;
        l->cap = cap;
    }
    struct manifest_file *f = &l->v[l->n++];
    memset(f, 0, sizeof *f);
    f->size = -1;
    return f;
}

static void file_clear(struct manifest_file *f)
{
    free(f->id);
    free(f->name);
    free(f->url);
    free(f->rewritten);
    free(f->deployment_id);
    memset(f, 0, sizeof *f);
}

static void files_clear(struct file_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        file_clear(&l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Name, digest, size and flags of a catalog entry onto dst. 0 or -1. */
static int file_copy_facts(struct manifest_file *dst, const struct manifest_file *src)
{
    if (src->name) {
        char *name = strdup(src->name);
        if (!name)
            return -1;
        free(dst->name);
        dst->name = name;
    }
    dst->has_sha256 = src->has_sha256;
    memcpy(dst->sha256_hex, src->sha256_hex, sizeof dst->sha256_hex);
    dst->size = src->size;
    dst->detached_manifest |= src->detached_manifest;
    dst->related |= src->related;
    return 0;
}

/* ---- update manifests (the catalog) -------------------------------------- */

/* One entry of `files` or `relatedFiles` (id NULL for a 2.0 array), then
 * its own relatedFiles. A malformed entry is kept with what it has: the
 * agent, not the cache, judges the manifest. 0 or -1 (memory). */
static int catalog_add_entry(struct file_list *cat, const char *id, const json_t *f,
                             bool related)
{
    if (!json_is_object(f))
        return 0;
    struct manifest_file *e = files_push(cat);
    if (!e)
        return -1;
    const json_t *name = json_object_get(f, "fileName");
    const json_t *size = json_object_get(f, "sizeInBytes");
    const json_t *sha = json_object_get(json_object_get(f, "hashes"), "sha256");
    if (!json_is_string(name))
        name = json_object_get(f, "filename");
    e->related = related;
    e->id = dup_or_null(id);
    e->name = dup_or_null(json_string_value(name));
    if ((id && !e->id) || (json_is_string(name) && !e->name))
        return -1;
    if (json_is_integer(size) && json_integer_value(size) >= 0)
        e->size = (int64_t)json_integer_value(size);
    if (json_is_string(sha))
        e->has_sha256 = sha256_from_text(json_string_value(sha), e->sha256_hex) == 0;
    return catalog_add_entries(cat, json_object_get(f, "relatedFiles"), true);
}

/* A `files` map (fileId -> entry) or array (2.0), or a relatedFiles one. */
static int catalog_add_entries(struct file_list *cat, const json_t *files, bool related)
{
    const char *id;
    const json_t *f;
    size_t i;
    if (json_is_object(files)) {
        json_object_foreach((json_t *)files, id, f)
            if (catalog_add_entry(cat, id, f, related) != 0)
                return -1;
    } else if (json_is_array(files)) {
        json_array_foreach(files, i, f)
            if (catalog_add_entry(cat, NULL, f, related) != 0)
                return -1;
    }
    return 0;
}

/* Flags the files named by detachedManifestFileId, at the top of the
 * manifest or in its steps; an id the files map lacks gets a bare entry. */
static int catalog_mark_one(struct file_list *cat, const json_t *id)
{
    if (!json_is_string(id))
        return 0;
    for (size_t i = 0; i < cat->n; i++)
        if (cat->v[i].id && strcmp(cat->v[i].id, json_string_value(id)) == 0) {
            cat->v[i].detached_manifest = 1;
            return 0;
        }
    struct manifest_file *e = files_push(cat);
    if (!e || !(e->id = strdup(json_string_value(id))))
        return -1;
    e->detached_manifest = 1;
    return 0;
}

static int catalog_mark_detached(struct file_list *cat, const json_t *um)
{
    const json_t *steps = json_object_get(json_object_get(um, "instructions"), "steps");
    const json_t *step;
    size_t i;
    if (catalog_mark_one(cat, json_object_get(um, "detachedManifestFileId")) != 0)
        return -1;
    json_array_foreach(steps, i, step)
        if (catalog_mark_one(cat, json_object_get(step, "detachedManifestFileId")) != 0)
            return -1;
    return 0;
}

static int catalog_read(struct file_list *cat, const json_t *um)
{
    if (catalog_add_entries(cat, json_object_get(um, "files"), false) != 0)
        return -1;
    return catalog_mark_detached(cat, um);
}

/* The entry for fileId id; failing that, an id-less (2.0 array) entry
 * whose name is name. */
static const struct manifest_file *catalog_find(const struct file_list *cat,
                                                const char *id, const char *name)
{
    for (size_t i = 0; id && i < cat->n; i++)
        if (cat->v[i].id && strcmp(cat->v[i].id, id) == 0)
            return &cat->v[i];
    for (size_t i = 0; name && i < cat->n; i++)
        if (!cat->v[i].id && cat->v[i].name && strcmp(cat->v[i].name, name) == 0)
            return &cat->v[i];
    return NULL;
}

/* ---- edits --------------------------------------------------------------- */

static int edits_push(struct edit_list *l, const json_t *node, const char *url,
                      size_t file)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 8;
        struct edit *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    struct edit *e = &l->v[l->n];
    memset(e, 0, sizeof *e);
    e->node = node;
    e->file = file;
    e->literal = json_literal(url);
    if (!e->literal)
        return -1;
    l->n++;
    return 0;
}

static void edits_clear(struct edit_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].literal);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* ---- the walk ------------------------------------------------------------ */

/* Rewrites the URL in string node (its path is w->path), records the edit
 * and a file joined with the catalog cat (NULL: none); *file is the
 * download's index in w->files. One string reached twice (a fileUrls
 * member named like a firmware field is both) is one download, edited
 * once: *added tells whether this call made it. Its deployment id is set
 * by deployments_finish. 0 or -1 with w->err. */
static int add_download(struct walk *w, const json_t *node, const char *id,
                        const struct file_list *cat, size_t *file, bool *added)
{
    struct url_rewrite r;
    char why[400];
    *added = false;
    for (size_t i = 0; i < w->edits.n; i++)
        if (w->edits.v[i].node == node) {
            *file = w->edits.v[i].file;
            return 0;
        }
    int st = url_rewrite(w->o, json_string_value(node), &r, why, sizeof why);
    if (st != 0)
        return fail(w->err, st, "%s: %s", w->path.text, why);
    struct manifest_file *f = files_push(&w->files);
    const struct manifest_file *known = cat ? catalog_find(cat, id, r.name) : NULL;
    int rc = -1;
    if (f && (f->id = strdup(id)) &&
        edits_push(&w->edits, node, r.rewritten, w->files.n - 1) == 0 &&
        (!known || file_copy_facts(f, known) == 0)) {
        f->url = r.origin;
        f->rewritten = r.rewritten;
        if (!f->name) {
            f->name = r.name;
            r.name = NULL;
        }
        r.origin = r.rewritten = NULL;
        *file = w->files.n - 1;
        *added = true;
        rc = 0;
    }
    url_rewrite_free(&r);
    return rc == 0 ? 0 : fail(w->err, 500, "out of memory");
}

/* obj[key] as a URL string node: *node NULL when absent, null or "" (no
 * download); 422 when it is another type. */
static int url_member(struct walk *w, const json_t *obj, const char *key,
                      const json_t **node)
{
    const json_t *v = json_object_get(obj, key);
    *node = NULL;
    if (!v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0))
        return 0;
    if (!json_is_string(v))
        return fail(w->err, 422, "%s%s%s is not a string (a download URL)",
                    w->path.text, w->path.len ? "." : "", key);
    *node = v;
    return 0;
}

/* Reads the service's updateManifest string into cat (nothing when it is
 * absent, null or ""). 400 when it is not JSON. */
static int read_update_manifest(struct walk *w, const json_t *svc, struct file_list *cat)
{
    const json_t *s = json_object_get(svc, "updateManifest");
    size_t old = path_push_key(&w->path, "updateManifest");
    int rc = 0;
    if (s && !json_is_null(s) && !json_is_string(s))
        rc = fail(w->err, 422, "%s is not a string (the signed update manifest)",
                  w->path.text);
    if (rc == 0 && json_is_string(s) && json_string_length(s) > 0) {
        json_t *um = parse_text(json_string_value(s), json_string_length(s), w->path.text,
                                w->err);
        if (!um)
            rc = -1;
        else if (!json_is_object(um))
            rc = fail(w->err, 422, "%s is not a JSON object (an update manifest)",
                      w->path.text);
        else if (catalog_read(cat, um) != 0)
            rc = fail(w->err, 500, "out of memory");
        json_decref(um);
    }
    path_pop(&w->path, old);
    return rc;
}

/* The id a service object names itself: workflow.id, else "adu-" + a hash
 * of the updateManifest string (neither is ever rewritten); *id NULL when
 * it has neither (deployments_finish then hashes its canonical text). 0,
 * or -1 when out of memory. */
static int service_fixed_id(const json_t *svc, char **id)
{
    const json_t *wid = json_object_get(json_object_get(svc, "workflow"), "id");
    const json_t *um = json_object_get(svc, "updateManifest");
    *id = NULL;
    if (json_is_string(wid) && json_string_length(wid) > 0)
        *id = strdup(json_string_value(wid));
    else if (json_is_string(um) && json_string_length(um) > 0)
        *id = short_hash_id("adu-", json_string_value(um), json_string_length(um));
    else
        return 0;
    return *id ? 0 : -1;
}

static int walk_file_urls(struct walk *w, const json_t *svc, const struct file_list *cat)
{
    const json_t *urls = json_object_get(svc, "fileUrls");
    const char *id;
    const json_t *url;
    size_t old = path_push_key(&w->path, "fileUrls");
    int rc = 0;
    if (urls && !json_is_null(urls) && !json_is_object(urls))
        rc = fail(w->err, 422, "%s is not an object (fileId -> URL)", w->path.text);
    json_object_foreach((json_t *)urls, id, url) {
        const json_t *node;
        size_t file;
        bool added;
        if (rc != 0)
            break;
        size_t mid = w->path.len;
        rc = url_member(w, urls, id, &node);
        if (rc == 0 && node) {
            path_push_key(&w->path, id);
            rc = add_download(w, node, id, cat, &file, &added);
            path_pop(&w->path, mid);
        }
    }
    path_pop(&w->path, old);
    return rc;
}

static int walk_service(struct walk *w, const json_t *svc)
{
    struct file_list cat = {0};
    const json_t *root_key;
    size_t before = w->files.n, file;
    bool added;
    char *fixed = NULL;
    int rc = service_fixed_id(svc, &fixed) == 0 ? 0 : fail(w->err, 500, "out of memory");
    if (rc == 0)
        rc = read_update_manifest(w, svc, &cat);
    if (rc == 0)
        rc = walk_file_urls(w, svc, &cat);
    if (rc == 0)
        rc = url_member(w, svc, "rootKeyPackageUrl", &root_key);
    if (rc == 0 && root_key) {
        size_t old = path_push_key(&w->path, "rootKeyPackageUrl");
        rc = add_download(w, root_key, "rootKeyPackage", NULL, &file, &added);
        path_pop(&w->path, old);
    }
    if (rc == 0 && w->files.n > before) {
        rc = deployments_push(w, svc, "adu-", fixed, before, w->files.n);
        fixed = NULL;
    }
    files_clear(&cat);
    free(fixed);
    return rc;
}

/* fwPackageCheckValue (when it is a SHA-256) and fwSize onto f. */
static void firmware_facts(struct manifest_file *f, const json_t *fw)
{
    const json_t *check = json_object_get(fw, "fwPackageCheckValue");
    const json_t *size = json_object_get(fw, "fwSize");
    if (json_is_string(check))
        f->has_sha256 = sha256_from_text(json_string_value(check), f->sha256_hex) == 0;
    if (json_is_integer(size) && json_integer_value(size) >= 0)
        f->size = (int64_t)json_integer_value(size);
}

/* A firmware section: its fwPackageURI, whose deployment id is "fw-" + a
 * hash of the section's canonical text. A URI that is already another
 * object's download (a fileUrls member named fwPackageURI) stays that
 * object's, facts and deployment. */
static int walk_firmware(struct walk *w, const json_t *fw)
{
    const json_t *uri;
    size_t file;
    bool added;
    int rc = url_member(w, fw, "fwPackageURI", &uri);
    if (rc != 0 || !uri)
        return rc;
    size_t old = path_push_key(&w->path, "fwPackageURI");
    rc = add_download(w, uri, "firmware", NULL, &file, &added);
    path_pop(&w->path, old);
    if (rc != 0 || !added)
        return rc;
    firmware_facts(&w->files.v[file], fw);
    return deployments_push(w, fw, "fw-", NULL, file, file + 1);
}

/* ---- deployment ids ------------------------------------------------------ */

/* Records a deployment; takes fixed (freed on failure). 0 or -1 with w->err. */
static int deployments_push(struct walk *w, const json_t *obj, const char *prefix,
                            char *fixed, size_t first, size_t end)
{
    struct deployment_list *l = &w->deps;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 4;
        struct deployment *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            free(fixed);
            return fail(w->err, 500, "out of memory");
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (struct deployment){ obj, prefix, fixed, first, end };
    return 0;
}

static void deployments_clear(struct deployment_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].fixed);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* In copy (a deep copy of node), every download URL of the walk set to its
 * origin URL. 0 or -1. */
static int origins_put(const struct walk *w, const json_t *node, json_t *copy)
{
    const char *key;
    size_t klen, i;
    json_t *child;
    if (json_is_string(node)) {
        for (size_t k = 0; k < w->edits.n; k++)
            if (w->edits.v[k].node == node)
                return json_string_set(copy, w->files.v[w->edits.v[k].file].url);
    } else if (json_is_object(node)) {
        json_object_keylen_foreach((json_t *)node, key, klen, child)
            if (origins_put(w, child, json_object_getn(copy, key, klen)) != 0)
                return -1;
    } else if (json_is_array(node)) {
        json_array_foreach(node, i, child)
            if (origins_put(w, child, json_array_get(copy, i)) != 0)
                return -1;
    }
    return 0;
}

/* prefix + a hash of obj's canonical text: keys sorted, compact, and every
 * download URL in it (its own and those of objects nested in it) set to
 * its origin URL, so that a document and its rewritten answer (each layer
 * of a hierarchy) give the same id. NULL when out of memory. */
static char *canonical_id(const struct walk *w, const json_t *obj, const char *prefix)
{
    json_t *copy = json_deep_copy(obj);
    char *text = NULL, *id = NULL;
    if (copy && origins_put(w, obj, copy) == 0)
        text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
    if (text)
        id = short_hash_id(prefix, text, strlen(text));
    free(text);
    json_decref(copy);
    return id;
}

/* Gives every file the id of the deployment it came from, and the result
 * the first one's. 0 or -1 with w->err. */
static int deployments_finish(struct walk *w)
{
    for (size_t i = 0; i < w->deps.n; i++) {
        struct deployment *d = &w->deps.v[i];
        if (!d->fixed && !(d->fixed = canonical_id(w, d->obj, d->prefix)))
            return fail(w->err, 500, "out of memory");
        for (size_t f = d->first; f < d->end; f++)
            if (!w->files.v[f].deployment_id &&
                !(w->files.v[f].deployment_id = strdup(d->fixed)))
                return fail(w->err, 500, "out of memory");
        if (!w->deployment_id && !(w->deployment_id = strdup(d->fixed)))
            return fail(w->err, 500, "out of memory");
    }
    return 0;
}

static bool is_service(const json_t *obj)
{
    return json_object_get(obj, "fileUrls") || json_object_get(obj, "updateManifest") ||
           json_object_get(obj, "rootKeyPackageUrl");
}

/* Depth first, in document order: an object is looked at, then its members. */
static int walk_node(struct walk *w, const json_t *node)
{
    const char *key;
    const json_t *child;
    size_t i;
    if (json_is_object(node)) {
        if (is_service(node) && walk_service(w, node) != 0)
            return -1;
        if (json_object_get(node, "fwPackageURI") && walk_firmware(w, node) != 0)
            return -1;
        json_object_foreach((json_t *)node, key, child) {
            size_t old = path_push_key(&w->path, key);
            int rc = walk_node(w, child);
            path_pop(&w->path, old);
            if (rc != 0)
                return -1;
        }
    } else if (json_is_array(node)) {
        json_array_foreach(node, i, child) {
            size_t old = path_push_index(&w->path, i);
            int rc = walk_node(w, child);
            path_pop(&w->path, old);
            if (rc != 0)
                return -1;
        }
    }
    return 0;
}

/* ---- the scan: spans of the edited literals in the raw text -------------- */

static void scan_ws(struct scan *sc)
{
    while (sc->pos < sc->len && strchr(" \t\r\n", sc->s[sc->pos]) && sc->s[sc->pos])
        sc->pos++;
}

/* At a '"': moves past the closing quote; [start, end) is the literal. */
static int scan_string(struct scan *sc, size_t *start, size_t *end)
{
    size_t i = sc->pos + 1;
    if (sc->pos >= sc->len || sc->s[sc->pos] != '"')
        return -1;
    while (i < sc->len && sc->s[i] != '"')
        i += sc->s[i] == '\\' ? 2 : 1;
    if (i >= sc->len)
        return -1;
    *start = sc->pos;
    *end = sc->pos = i + 1;
    return 0;
}

/* The member of obj whose key is the raw literal body raw (n bytes, quotes
 * excluded); escapes are decoded by jansson itself. */
static const json_t *scan_member(const json_t *obj, const char *raw, size_t n)
{
    if (!obj)
        return NULL;
    if (!memchr(raw, '\\', n))
        return json_object_getn(obj, raw, n);
    json_t *key = json_loadb(raw - 1, n + 2, JSON_DECODE_ANY, NULL);
    const json_t *v = json_is_string(key)
        ? json_object_getn(obj, json_string_value(key), json_string_length(key)) : NULL;
    json_decref(key);
    return v;
}

static int scan_object(struct scan *sc, const json_t *node, int depth)
{
    size_t ks, ke;
    sc->pos++;
    scan_ws(sc);
    if (sc->pos < sc->len && sc->s[sc->pos] == '}') {
        sc->pos++;
        return 0;
    }
    for (;;) {
        scan_ws(sc);
        if (scan_string(sc, &ks, &ke) != 0)
            return -1;
        scan_ws(sc);
        if (sc->pos >= sc->len || sc->s[sc->pos++] != ':')
            return -1;
        if (scan_value(sc, scan_member(node, sc->s + ks + 1, ke - ks - 2), depth + 1) != 0)
            return -1;
        scan_ws(sc);
        if (sc->pos >= sc->len)
            return -1;
        char c = sc->s[sc->pos++];
        if (c == '}')
            return 0;
        if (c != ',')
            return -1;
    }
}

static int scan_array(struct scan *sc, const json_t *node, int depth)
{
    sc->pos++;
    scan_ws(sc);
    if (sc->pos < sc->len && sc->s[sc->pos] == ']') {
        sc->pos++;
        return 0;
    }
    for (size_t i = 0;; i++) {
        if (scan_value(sc, json_array_get(node, i), depth + 1) != 0)
            return -1;
        scan_ws(sc);
        if (sc->pos >= sc->len)
            return -1;
        char c = sc->s[sc->pos++];
        if (c == ']')
            return 0;
        if (c != ',')
            return -1;
    }
}

/* One value at sc->pos, node its counterpart in the tree (NULL when the
 * walk does not need it). */
static int scan_value(struct scan *sc, const json_t *node, int depth)
{
    size_t start, end;
    if (depth > SCAN_MAX_DEPTH)
        return -1;
    scan_ws(sc);
    if (sc->pos >= sc->len)
        return -1;
    switch (sc->s[sc->pos]) {
    case '{':
        return scan_object(sc, node, depth);
    case '[':
        return scan_array(sc, node, depth);
    case '"':
        if (scan_string(sc, &start, &end) != 0)
            return -1;
        for (size_t i = 0; node && i < sc->edits->n; i++)
            if (sc->edits->v[i].node == node) {
                sc->edits->v[i].start = start;
                sc->edits->v[i].end = end;
                sc->edits->v[i].found = true;
            }
        return 0;
    default:    /* number, true, false, null */
        while (sc->pos < sc->len && !strchr(",}] \t\r\n", sc->s[sc->pos]))
            sc->pos++;
        return 0;
    }
}

static int edit_cmp(const void *a, const void *b)
{
    const struct edit *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* text with every edit's span replaced by its literal (edits sorted by
 * position here). NULL when out of memory. */
static char *assemble(const char *text, size_t len, struct edit_list *edits, size_t *outlen)
{
    size_t total = len, at = 0, k = 0;
    qsort(edits->v, edits->n, sizeof *edits->v, edit_cmp);
    for (size_t i = 0; i < edits->n; i++)
        total += strlen(edits->v[i].literal) - (edits->v[i].end - edits->v[i].start);
    char *out = malloc(total + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < edits->n; i++) {
        const struct edit *e = &edits->v[i];
        size_t llen = strlen(e->literal);
        if (e->start < at || e->end < e->start || e->end > len) {
            free(out);              /* overlapping spans: never happens (one edit per node) */
            return NULL;
        }
        memcpy(out + k, text + at, e->start - at);
        k += e->start - at;
        memcpy(out + k, e->literal, llen);
        k += llen;
        at = e->end;
    }
    memcpy(out + k, text + at, len - at);
    k += len - at;
    out[k] = '\0';
    *outlen = k;
    return out;
}

/* Finds every edit's span and builds the answer into out->doc. */
static int rewrite_text(const char *body, size_t len, size_t skip, const json_t *root,
                        struct walk *w, struct manifest_result *out)
{
    struct scan sc = { .s = body, .len = len, .pos = skip, .edits = &w->edits };
    if (scan_value(&sc, root, 0) != 0)
        return fail(w->err, 500, "the manifest parsed but could not be scanned again");
    for (size_t i = 0; i < w->edits.n; i++)
        if (!w->edits.v[i].found)
            return fail(w->err, 500, "a download URL was found but not placed in the text");
    out->doc = assemble(body, len, &w->edits, &out->len);
    return out->doc ? 0 : fail(w->err, 500, "out of memory");
}

/* ---- public -------------------------------------------------------------- */

int manifest_rewrite(const char *body, size_t len, const struct manifest_opts *o,
                     struct manifest_result *out, struct manifest_error *err)
{
    struct walk w = { .o = o, .err = err };
    size_t skip;
    json_t *root = NULL;
    int rc = -1;
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    if (!o || !o->cache_base || !o->cache_base[0] || !o->allow)
        return fail(err, 500, "no cache base URL or allow-list given for the rewrite");
    if (check_media(body, len, o->max_bytes, &skip, err) != 0)
        return -1;
    root = parse_text(body + skip, len - skip, "the manifest", err);
    if (!root || walk_node(&w, root) != 0 || deployments_finish(&w) != 0)
        goto out;
    if (w.edits.n == 0) {
        fail(err, 422, "no download URL in the manifest: expected an ADU deployment "
             "(fileUrls or rootKeyPackageUrl, bare or under "
             "properties.desired.deviceUpdate.service) or a firmware twin "
             "(firmware.fwPackageURI)");
        goto out;
    }
    if (rewrite_text(body, len, skip, root, &w, out) != 0)
        goto out;
    out->files = w.files.v;
    out->n_files = w.files.n;
    out->deployment_id = w.deployment_id;
    w.files = (struct file_list){0};
    w.deployment_id = NULL;
    rc = 0;
out:
    json_decref(root);
    edits_clear(&w.edits);
    files_clear(&w.files);
    deployments_clear(&w.deps);
    free(w.deployment_id);
    if (rc != 0)
        manifest_result_free(out);
    return rc;
}

/* The update manifest held by a detached manifest's file: the object
 * itself, or the JSON in its updateManifest string. */
static json_t *detached_update_manifest(const char *json, size_t len,
                                        struct manifest_error *err)
{
    size_t skip;
    if (check_media(json, len, 0, &skip, err) != 0)
        return NULL;
    json_t *doc = parse_text(json + skip, len - skip, "the detached manifest", err);
    const json_t *inner = json_object_get(doc, "updateManifest");
    if (json_is_string(inner)) {
        json_t *um = parse_text(json_string_value(inner), json_string_length(inner),
                                "the detached manifest's updateManifest", err);
        json_decref(doc);
        doc = um;
    }
    const json_t *files = json_object_get(doc, "files");
    if (doc && !json_is_object(files) && !json_is_array(files)) {
        json_decref(doc);
        fail(err, 422, "the detached manifest is not an update manifest: it has no "
             "files map or array");
        return NULL;
    }
    return doc;
}

int manifest_files_from_update_manifest(const char *json, size_t len,
                                        const struct manifest_file *known, size_t n_known,
                                        struct manifest_file **out, size_t *n_out,
                                        struct manifest_error *err)
{
    struct file_list cat = {0}, res = {0};
    int rc = -1;
    *out = NULL;
    *n_out = 0;
    memset(err, 0, sizeof *err);
    json_t *um = detached_update_manifest(json, len, err);
    if (!um)
        return -1;
    if (catalog_read(&cat, um) != 0)
        goto oom;
    for (size_t i = 0; i < cat.n; i++) {
        const struct manifest_file *e = &cat.v[i];
        const struct manifest_file *k = NULL;
        for (size_t j = 0; j < n_known && !k; j++)
            if (known[j].url && (e->id ? known[j].id && strcmp(known[j].id, e->id) == 0
                                       : e->name && known[j].name &&
                                         strcmp(known[j].name, e->name) == 0))
                k = &known[j];
        if (!k)
            continue;
        struct manifest_file *f = files_push(&res);
        if (!f || !(f->id = strdup(k->id)) || !(f->url = strdup(k->url)) ||
            !(f->rewritten = dup_or_null(k->rewritten)) ||
            !(f->deployment_id = dup_or_null(k->deployment_id)) ||
            !(f->name = dup_or_null(k->name)) || file_copy_facts(f, e) != 0)
            goto oom;
    }
    *out = res.v;
    *n_out = res.n;
    res = (struct file_list){0};
    rc = 0;
    goto done;
oom:
    fail(err, 500, "out of memory");
done:
    files_clear(&cat);
    files_clear(&res);
    json_decref(um);
    return rc;
}

void manifest_files_free(struct manifest_file *files, size_t n)
{
    struct file_list l = { .v = files, .n = n, .cap = n };
    files_clear(&l);
}

void manifest_result_free(struct manifest_result *r)
{
    if (!r)
        return;
    manifest_files_free(r->files, r->n_files);
    free(r->doc);
    free(r->deployment_id);
    memset(r, 0, sizeof *r);
}

const char *manifest_allow_cfg(void *ctx, const char *scheme, const char *host,
                               unsigned port)
{
    const struct cfg_allow *a = route_allow_match(ctx, scheme, host, port);
    return a ? a->scheme : NULL;
}

char *manifest_cache_base(const char *url, char *why, size_t whylen)
{
    struct url_parts p;
    char *base = NULL;
    if (!url || url_parts_read(url, &p) != 0) {
        snprintf(why, whylen, "'%.*s' is not a URL (e.g. http://gateway:8080)", QUOTE_MAX,
                 url ? url : "");
        return NULL;
    }
    bool web = strcmp(p.scheme, "http") == 0 || strcmp(p.scheme, "https") == 0;
    bool bare = strcmp(p.path, "/") == 0 && !p.query && !strpbrk(url, "@#");
    int n = !web || !bare ? 0
            : p.port ? asprintf(&base, "%s://%s:%u", p.scheme, p.host, p.port)
                     : asprintf(&base, "%s://%s", p.scheme, p.host);
    if (!web || !bare)
        snprintf(why, whylen, "'%.*s' must be an http or https URL with a host and an "
                 "optional port only (e.g. http://gateway:8080)", QUOTE_MAX, url);
    else if (n < 0)
        snprintf(why, whylen, "out of memory");
    url_parts_free(&p);
    return n < 0 ? NULL : base;
}

int manifest_import_entries(const json_t *root, struct manifest_import_entry **out, char *why,
                            size_t whylen)
{
    json_t *files = json_object_get(root, "files");
    size_t n = json_array_size(files);
    *out = NULL;
    if (!json_is_array(files) || n == 0) {
        snprintf(why, whylen, "the manifest has no files[] list (an import manifest is needed)");
        return -1;
    }
    struct manifest_import_entry *e = calloc(n, sizeof *e);
    if (!e) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *f = json_array_get(files, i);
        json_t *name = json_object_get(f, "filename");
        json_t *sha = json_object_get(json_object_get(f, "hashes"), "sha256");
        json_t *size = json_object_get(f, "sizeInBytes");
        unsigned char bin[DIGEST_SHA256_LEN];
        if (!name)
            name = json_object_get(f, "fileName");
        if (!json_is_string(name) || !json_is_string(sha)
            || digest_from_base64(json_string_value(sha), bin, sizeof bin) != 0) {
            snprintf(why, whylen, "manifest files[%zu]: needs a filename and hashes.sha256 "
                     "(base64)", i);
            free(e);
            return -1;
        }
        e[i].name = json_string_value(name);
        e[i].size = json_is_integer(size) ? (int64_t)json_integer_value(size) : -1;
        digest_hex(bin, sizeof bin, e[i].sha256);
    }
    *out = e;
    return (int)n;
}
