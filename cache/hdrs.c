/* hdrs — see hdrs.h. */
#include "cache/hdrs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const hop_by_hop[] = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-authorization",
};

/* Fields a 304 never changes: they describe the bytes that are stored. */
static const char *const kept_on_update[] = {
    "content-length", "content-range", "content-encoding", "repr-digest", "digest",
    "content-md5", "x-ms-blob-content-md5",
};

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool name_in(const char *name, const char *const *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(name, set[i]) == 0)
            return true;
    return false;
}

/* ---- the list ------------------------------------------------------------------ */

static const char *source_get(void *ctx, const char *name)
{
    return hdrs_get(ctx, name);
}

static void source_each(void *ctx, int (*cb)(void *, const char *, const char *), void *arg)
{
    const struct hdrs *h = ctx;
    for (unsigned i = 0; i < h->n; i++)
        if (cb(arg, hdrs_name(h, i), hdrs_value(h, i)))
            return;
}

void hdrs_source(const struct hdrs *h, struct hdr_source *out)
{
    out->ctx = (void *)h;
    out->get = source_get;
    out->each = source_each;
}

void hdrs_init(struct hdrs *h)
{
    memset(h, 0, sizeof *h);
}

void hdrs_free(struct hdrs *h)
{
    free(h->buf);
    free(h->at);
    hdrs_init(h);
}

void hdrs_clear(struct hdrs *h)
{
    h->len = 0;
    h->n = 0;
}

int hdrs_copy(struct hdrs *dst, const struct hdrs *src)
{
    hdrs_init(dst);
    for (unsigned i = 0; i < src->n; i++)
        if (hdrs_add_str(dst, hdrs_name(src, i), hdrs_value(src, i)) != 0) {
            hdrs_free(dst);
            return -1;
        }
    return 0;
}

const char *hdrs_value(const struct hdrs *h, unsigned i)
{
    const char *name = h->buf + h->at[i];
    return name + strlen(name) + 1;
}

static int reserve(struct hdrs *h, size_t more)
{
    if (h->len + more > HDRS_MAX_BYTES)
        return -1;
    if (h->len + more > h->cap) {
        size_t cap = h->cap ? h->cap : 512;
        while (cap < h->len + more)
            cap *= 2;
        char *b = realloc(h->buf, cap);
        if (!b)
            return -1;
        h->buf = b;
        h->cap = cap;
    }
    if (h->n == h->n_cap) {
        unsigned cap = h->n_cap ? 2 * h->n_cap : 16;
        uint32_t *a = realloc(h->at, cap * sizeof *a);
        if (!a)
            return -1;
        h->at = a;
        h->n_cap = cap;
    }
    return 0;
}

int hdrs_add(struct hdrs *h, const char *name, size_t nlen, const char *value, size_t vlen)
{
    while (vlen && is_ows(*value)) {
        value++;
        vlen--;
    }
    while (vlen && (is_ows(value[vlen - 1]) || value[vlen - 1] == '\r' || value[vlen - 1] == '\n'))
        vlen--;
    if (nlen == 0 || reserve(h, nlen + vlen + 2) != 0)
        return -1;
    h->at[h->n++] = (uint32_t)h->len;
    memcpy(h->buf + h->len, name, nlen);
    h->len += nlen;
    h->buf[h->len++] = '\0';
    memcpy(h->buf + h->len, value, vlen);
    h->len += vlen;
    h->buf[h->len++] = '\0';
    return 0;
}

int hdrs_add_str(struct hdrs *h, const char *name, const char *value)
{
    return hdrs_add(h, name, strlen(name), value, strlen(value));
}

/* Obsolete line folding: the last field's value goes on after one space. */
static int continue_last(struct hdrs *h, const char *more, size_t n)
{
    while (n && is_ows(*more)) {
        more++;
        n--;
    }
    while (n && (is_ows(more[n - 1]) || more[n - 1] == '\r' || more[n - 1] == '\n'))
        n--;
    if (h->n == 0 || n == 0)
        return 0;
    if (h->len + n + 1 > HDRS_MAX_BYTES || (h->len + n + 1 > h->cap && reserve(h, n + 1) != 0))
        return -1;
    int empty = h->len >= 2 && h->buf[h->len - 2] == '\0';    /* "name\0\0" */
    if (empty) {
        h->len--;                   /* the value starts here */
    } else {
        h->buf[h->len - 1] = ' ';   /* the value's NUL becomes the space */
    }
    memcpy(h->buf + h->len, more, n);
    h->len += n;
    h->buf[h->len++] = '\0';
    return 0;
}

int hdrs_add_line(struct hdrs *h, const char *line, size_t len)
{
    if (len == 0 || line[0] == '\r' || line[0] == '\n')
        return 0;
    if (is_ows(line[0]))
        return continue_last(h, line, len);
    if (len >= 5 && strncmp(line, "HTTP/", 5) == 0)
        return 0;
    const char *colon = memchr(line, ':', len);
    if (!colon || colon == line)
        return 0;
    size_t nlen = (size_t)(colon - line);
    for (size_t i = 0; i < nlen; i++)
        if (line[i] <= ' ' || line[i] == 0x7f)  /* not a token: ignored (RFC 9112 §5.1) */
            return 0;
    return hdrs_add(h, line, nlen, colon + 1, len - nlen - 1);
}

const char *hdrs_get(const struct hdrs *h, const char *name)
{
    for (unsigned i = 0; i < h->n; i++)
        if (strcasecmp(hdrs_name(h, i), name) == 0)
            return hdrs_value(h, i);
    return NULL;
}

unsigned hdrs_get_all(const struct hdrs *h, const char *name, char *out, size_t outlen)
{
    unsigned found = 0;
    size_t pos = 0;
    if (outlen)
        out[0] = '\0';
    for (unsigned i = 0; i < h->n; i++) {
        if (strcasecmp(hdrs_name(h, i), name) != 0)
            continue;
        if (outlen && pos < outlen - 1) {
            int k = snprintf(out + pos, outlen - pos, "%s%s", found ? ", " : "", hdrs_value(h, i));
            pos += k > 0 ? (size_t)k : 0;
            if (pos >= outlen)
                pos = outlen - 1;
        }
        found++;
    }
    return found;
}

/* Keeps the fields for which keep() is true. */
static void filter(struct hdrs *h, bool (*keep)(const char *name, void *ctx), void *ctx)
{
    size_t w = 0;
    unsigned k = 0;
    for (unsigned i = 0; i < h->n; i++) {
        const char *name = hdrs_name(h, i);
        const char *value = hdrs_value(h, i);
        size_t size = (size_t)(value + strlen(value) + 1 - name);
        if (!keep(name, ctx))
            continue;
        memmove(h->buf + w, name, size);
        h->at[k++] = (uint32_t)w;
        w += size;
    }
    h->len = w;
    h->n = k;
}

static bool not_named(const char *name, void *ctx)
{
    return strcasecmp(name, ctx) != 0;
}

unsigned hdrs_remove(struct hdrs *h, const char *name)
{
    unsigned before = h->n;
    filter(h, not_named, (void *)name);
    return before - h->n;
}

bool hdrs_is_hop_by_hop(const char *name)
{
    return name_in(name, hop_by_hop, sizeof hop_by_hop / sizeof hop_by_hop[0]);
}

/* Every value of a field joined with ", ", however long: malloc'd, ""
 * when there is none, NULL when out of memory. */
static char *joined(const struct hdrs *h, const char *name)
{
    size_t size = 1;
    for (unsigned i = 0; i < h->n; i++)
        if (strcasecmp(hdrs_name(h, i), name) == 0)
            size += strlen(hdrs_value(h, i)) + 2;
    char *out = malloc(size);
    if (!out)
        return NULL;
    hdrs_get_all(h, name, out, size);
    return out;
}

static bool end_to_end(const char *name, void *ctx)
{
    const char *connection = ctx;
    return !hdrs_is_hop_by_hop(name) && !hdrs_list_has(connection, name);
}

void hdrs_strip_hop_by_hop(struct hdrs *h)
{
    /* the whole Connection value: a name past any fixed buffer is still
     * hop-by-hop (and one cut at its edge must not strip another field) */
    char *connection = joined(h, "Connection");
    if (!connection) {
        /* out of memory: keep only what is end-to-end by name alone */
        filter(h, end_to_end, "");
        hdrs_remove(h, "Connection");
        return;
    }
    filter(h, end_to_end, connection);
    free(connection);
}

char *hdrs_serialize(const struct hdrs *h, size_t *len)
{
    size_t size = 1;
    for (unsigned i = 0; i < h->n; i++)
        size += strlen(hdrs_name(h, i)) + strlen(hdrs_value(h, i)) + 4;
    char *out = malloc(size);
    if (!out)
        return NULL;
    size_t pos = 0;
    for (unsigned i = 0; i < h->n; i++)
        pos += (size_t)snprintf(out + pos, size - pos, "%s: %s\r\n", hdrs_name(h, i),
                                hdrs_value(h, i));
    out[pos] = '\0';
    if (len)
        *len = pos;
    return out;
}

int hdrs_parse_block(struct hdrs *h, const char *block, size_t len)
{
    const char *p = block, *end = block + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl + 1 : end;
        if (hdrs_add_line(h, p, (size_t)(stop - p)) != 0)
            return -1;
        p = stop;
    }
    return 0;
}

/* ---- 304 updates --------------------------------------------------------------- */

static bool updatable(const struct hdrs *newer, const char *name)
{
    return hdrs_get(newer, name) && !hdrs_is_hop_by_hop(name)
           && !name_in(name, kept_on_update, sizeof kept_on_update / sizeof kept_on_update[0]);
}

static int add_all_named(struct hdrs *out, const struct hdrs *from, const char *name)
{
    for (unsigned j = 0; j < from->n; j++)
        if (strcasecmp(hdrs_name(from, j), name) == 0
            && hdrs_add_str(out, hdrs_name(from, j), hdrs_value(from, j)) != 0)
            return -1;
    return 0;
}

int hdrs_update(struct hdrs *stored, const struct hdrs *newer)
{
    struct hdrs out;
    hdrs_init(&out);
    int rc = 0;
    /* in place: the first stored field of a replaced name takes the new
     * values, later ones go */
    for (unsigned i = 0; i < stored->n && rc == 0; i++) {
        const char *name = hdrs_name(stored, i);
        if (!updatable(newer, name)) {
            rc = hdrs_add_str(&out, name, hdrs_value(stored, i));
            continue;
        }
        bool first = true;
        for (unsigned k = 0; k < i; k++)
            if (strcasecmp(hdrs_name(stored, k), name) == 0)
                first = false;
        if (first)
            rc = add_all_named(&out, newer, name);
    }
    /* then the fields the stored response did not have, in their order */
    for (unsigned j = 0; j < newer->n && rc == 0; j++) {
        const char *name = hdrs_name(newer, j);
        if (!updatable(newer, name) || hdrs_get(stored, name))
            continue;
        rc = hdrs_add_str(&out, name, hdrs_value(newer, j));
    }
    if (rc != 0) {
        hdrs_free(&out);
        return -1;
    }
    hdrs_free(stored);
    *stored = out;
    return 0;
}

/* ---- lists and Vary ------------------------------------------------------------ */

bool hdrs_list_has(const char *value, const char *token)
{
    size_t tl = strlen(token);
    for (const char *p = value; p && *p;) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, ",;= \t");
        if (n == tl && strncasecmp(p, token, tl) == 0)
            return true;
        p += strcspn(p, ",");
    }
    return false;
}

static int compare_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Splits a comma list into trimmed, lower-cased elements (in buf), sorted
 * and unique when `sort`: a malloc'd array of *n pointers into buf (every
 * element, however many), NULL when out of memory. */
static char **split_list(char *buf, size_t *n, bool sort)
{
    size_t max = 1;
    for (const char *c = buf; *c; c++)
        max += *c == ',';
    char **elem = malloc(max * sizeof *elem);
    *n = 0;
    if (!elem)
        return NULL;
    for (char *p = buf; *p && *n < max;) {
        p += strspn(p, " \t,");
        if (!*p)
            break;
        char *start = p;
        p += strcspn(p, ",");
        char *end = p;
        if (*p)
            *p++ = '\0';
        while (end > start && is_ows(end[-1]))
            *--end = '\0';
        for (char *c = start; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        if (*start)
            elem[(*n)++] = start;
    }
    if (sort && *n > 1) {
        qsort(elem, *n, sizeof *elem, compare_str);
        size_t k = 1;
        for (size_t i = 1; i < *n; i++)
            if (strcmp(elem[i], elem[k - 1]) != 0)
                elem[k++] = elem[i];
        *n = k;
    }
    return elem;
}

int hdrs_vary_names(const struct hdrs *resp, char *out, size_t outlen)
{
    if (outlen == 0)
        return -1;
    out[0] = '\0';
    char *all = joined(resp, "Vary");
    size_t n = 0;
    char **elem = all ? split_list(all, &n, true) : NULL;
    int rc = elem ? 0 : -1;
    size_t pos = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (strcmp(elem[i], "*") == 0) {
            snprintf(out, outlen, "*");
            goto out;
        }
    /* every name, or -1: a name left out would serve a variant to
     * requests that differ in it */
    for (size_t i = 0; rc == 0 && i < n; i++) {
        int k = snprintf(out + pos, outlen - pos, "%s%s", i ? "," : "", elem[i]);
        if (k < 0 || (size_t)k >= outlen - pos) {
            out[0] = '\0';
            rc = -1;
        } else {
            pos += (size_t)k;
        }
    }
out:
    free(elem);
    free(all);
    return rc;
}

/* A growable string. */
struct sbuf {
    char *s;
    size_t len, cap;
    int failed;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 128;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

struct gather {
    const char *name;
    struct sbuf values;
    unsigned found;
};

static int gather_field(void *arg, const char *name, const char *value)
{
    struct gather *g = arg;
    if (strcasecmp(name, g->name) != 0)
        return 0;
    if (g->found++)
        sb_str(&g->values, ",");
    sb_str(&g->values, value ? value : "");
    return 0;
}

/* Lower case, white space runs collapsed to one space, none around commas. */
static void normalise_value(struct sbuf *out, const char *v)
{
    int space = 0;
    for (const char *p = v; *p; p++) {
        char c = *p;
        if (is_ows(c)) {
            space = 1;
            continue;
        }
        if (space && c != ',' && out->len && out->s[out->len - 1] != ',')
            sb_add(out, " ", 1);
        space = 0;
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        sb_add(out, &c, 1);
    }
}

/* Accept-Encoding: the codings as a set (order and repeats do not matter). */
static void normalise_set(struct sbuf *out, char *v)
{
    size_t n = 0;
    char **elem = split_list(v, &n, true);
    if (!elem)
        out->failed = 1;
    for (size_t i = 0; elem && i < n; i++) {
        if (i)
            sb_add(out, ",", 1);
        for (const char *c = elem[i]; *c; c++)
            if (!is_ows(*c))
                sb_add(out, c, 1);
    }
    free(elem);
}

char *hdrs_variant_key(const struct hdr_source *req, const char *names)
{
    struct sbuf key = {0};
    char *list = strdup(names ? names : "");
    size_t n = 0;
    char **elem = list ? split_list(list, &n, true) : NULL;
    if (!elem)
        key.failed = 1;
    sb_add(&key, "", 0);
    for (size_t i = 0; elem && i < n; i++) {
        struct gather g = {.name = elem[i]};
        if (req && req->each)
            req->each(req->ctx, gather_field, &g);
        sb_str(&key, elem[i]);
        if (!g.found) {
            sb_str(&key, "!\n");
            continue;
        }
        sb_str(&key, "=");
        if (g.values.s && strcmp(elem[i], "accept-encoding") == 0)
            normalise_set(&key, g.values.s);
        else if (g.values.s)
            normalise_value(&key, g.values.s);
        sb_str(&key, "\n");
        free(g.values.s);
        if (g.values.failed)
            key.failed = 1;
    }
    free(elem);
    free(list);
    if (key.failed) {
        free(key.s);
        return NULL;
    }
    return key.s;
}
