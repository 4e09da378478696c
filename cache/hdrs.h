/*
 * hdrs — HTTP header fields as edgecache keeps them (RFC 9110 §5).
 *
 * A struct hdrs is an ordered list of fields, each a name and a value, in
 * the order they arrived, names spelt as they arrived (compared without
 * regard to case), values with the whitespace around them removed. A field
 * that arrives several times stays several fields. It owns its bytes.
 *
 * What a cache does with them:
 *  - hop-by-hop fields (Connection, Keep-Alive, Proxy-Connection, TE,
 *    Trailer, Transfer-Encoding, Upgrade, Proxy-Authenticate,
 *    Proxy-Authorization) and every field that Connection names are never
 *    stored nor forwarded (hdrs_strip_hop_by_hop);
 *  - a stored response's block is kept as text ("Name: value\r\n" lines,
 *    hdrs_serialize / hdrs_parse_block) and replayed in the same order;
 *  - a 304 updates the stored block (RFC 9111 §3.2, hdrs_update);
 *  - Vary names request fields; the request's values of them, normalised,
 *    are the response's secondary key (hdrs_vary_names, hdrs_variant_key).
 *
 * Request fields are read through struct hdr_source, so that cache/ needs
 * nothing of the HTTP server that holds them.
 *
 * Pure functions on the structs given; any thread.
 */
#ifndef EDGECACHE_HDRS_H
#define EDGECACHE_HDRS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HDRS_MAX_BYTES (64 * 1024)     /* a header block larger than this is refused */

struct hdrs {
    char *buf;              /* "name\0value\0" for each field, in order */
    size_t len, cap;
    uint32_t *at;           /* offset of each field's name in buf */
    unsigned n, n_cap;
};

/* Request fields as the server holds them. get returns the first value
 * of a field (case-insensitive name) or NULL; each calls cb for every
 * field in order until cb returns non-zero. */
struct hdr_source {
    void *ctx;
    const char *(*get)(void *ctx, const char *name);
    void (*each)(void *ctx, int (*cb)(void *arg, const char *name, const char *value),
                 void *arg);
};

/* A hdr_source that reads h (which must outlive it). */
void hdrs_source(const struct hdrs *h, struct hdr_source *out);

void hdrs_init(struct hdrs *h);
void hdrs_free(struct hdrs *h);
void hdrs_clear(struct hdrs *h);
/* A deep copy; 0 or -1 (out of memory; dst empty). */
int hdrs_copy(struct hdrs *dst, const struct hdrs *src);

/* Appends a field; the value is trimmed of surrounding whitespace. 0, or -1
 * when out of memory or the block would pass HDRS_MAX_BYTES. */
int hdrs_add(struct hdrs *h, const char *name, size_t nlen, const char *value, size_t vlen);
int hdrs_add_str(struct hdrs *h, const char *name, const char *value);

/* One line as curl hands it over ("Name: value\r\n"). A line that starts
 * with a space or tab continues the previous value (obsolete folding,
 * RFC 9112 §5.2: replaced by one space). Lines without a colon, and the
 * status line, are ignored. 0, or -1 as hdrs_add. */
int hdrs_add_line(struct hdrs *h, const char *line, size_t len);

static inline const char *hdrs_name(const struct hdrs *h, unsigned i)
{
    return h->buf + h->at[i];
}
const char *hdrs_value(const struct hdrs *h, unsigned i);

/* The first value of a field, or NULL. */
const char *hdrs_get(const struct hdrs *h, const char *name);
/* Every value of a field joined with ", " into out (outlen bytes, cut to
 * fit); returns how many fields there were. */
unsigned hdrs_get_all(const struct hdrs *h, const char *name, char *out, size_t outlen);
/* Removes every field of that name; returns how many. */
unsigned hdrs_remove(struct hdrs *h, const char *name);

/* True when name is a hop-by-hop field (the fixed list above). */
bool hdrs_is_hop_by_hop(const char *name);
/* Removes the hop-by-hop fields and those that Connection names. */
void hdrs_strip_hop_by_hop(struct hdrs *h);

/* "Name: value\r\n..." (NUL-terminated, malloc'd; "" for no fields), or
 * NULL when out of memory. *len may be NULL. */
char *hdrs_serialize(const struct hdrs *h, size_t *len);
/* The reverse, appending to h. 0, or -1. */
int hdrs_parse_block(struct hdrs *h, const char *block, size_t len);

/* RFC 9111 §3.2 / §4.3.4: every field of `newer` (a 304) replaces the
 * stored fields of its name, except the hop-by-hop ones, Content-Length,
 * Content-Range, Content-Encoding and the integrity fields (Repr-Digest,
 * Digest, Content-MD5, x-ms-blob-content-md5), which describe the stored
 * bytes. 0, or -1 (stored unchanged). */
int hdrs_update(struct hdrs *stored, const struct hdrs *newer);

/* True when a comma-separated field value holds token (case-insensitive,
 * ignoring parameters after ';' or '='). */
bool hdrs_list_has(const char *value, const char *token);

/* The field names a response's Vary lists, lower case, sorted, unique,
 * comma-separated, into out: "" when it has no Vary, "*" when it varies on
 * everything (such a response is never reused). Returns 0, or -1 when it
 * does not fit. */
int hdrs_vary_names(const struct hdrs *resp, char *out, size_t outlen);

/* The secondary key of a request for a response that varies on `names` (as
 * hdrs_vary_names wrote them): for each name, "name=value\n", with the
 * request's values of that field joined, white space collapsed, lower
 * case; Accept-Encoding's values as a sorted set; "name!\n" when the
 * request has no such field. "" for no names. malloc'd, or NULL. */
char *hdrs_variant_key(const struct hdr_source *req, const char *names);

#endif
