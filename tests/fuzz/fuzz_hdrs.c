/*
 * fuzz_hdrs — header fields as the cache keeps them (cache/hdrs.h).
 *
 * Feeds: the input cut into four parts at NUL bytes (curl never hands a
 * header line with a NUL over; a missing part is empty):
 *   A  a response's header lines   B  a 304's header lines
 *   C  a request's header lines    D  Vary names, as hdrs_vary_names writes them
 * A, B and C are cut into lines after each '\n' and given one by one to
 * hdrs_add_line(), as curl hands them over. Then: A's copy stripped of its
 * hop-by-hop fields, serialised and parsed again, updated with B, its Vary
 * names read, and the secondary key of request C computed for them and
 * for D through a hdr_source over C.
 *
 * Checks, beyond "no crash, no leak, no UB":
 *   - every field has a non-empty name without white space, controls or
 *     ':', and a value without white space around it or a line end; the
 *     block stays within HDRS_MAX_BYTES; hdrs_copy is the same list;
 *   - hdrs_strip_hop_by_hop removes exactly the hop-by-hop fields and those
 *     that Connection names, keeping the others in their order;
 *   - hdrs_serialize then hdrs_parse_block gives the same fields in the same
 *     order, and serialising that gives the same text;
 *   - hdrs_update: each field name of B (not hop-by-hop, not one that
 *     describes the stored bytes) has exactly B's values, in B's order;
 *     every other name keeps its stored values; names B does not replace
 *     keep their relative order; B is unchanged;
 *   - hdrs_vary_names: "" without Vary, "*" when an element is "*", else
 *     the elements, lower case, sorted, unique, comma-separated, and every
 *     element of A's Vary among them (or -1: it does not fit);
 *   - hdrs_variant_key is deterministic, has one line per name ("name=...\n"
 *     or "name!\n", in the order of the names), and does not change when
 *     the Accept-Encoding list is permuted (reversed, and its fields in
 *     reverse order) or a field the names do not list is added.
 * No field length or element count is stepped around: a Connection, a Vary
 * or an Accept-Encoding of any length is read whole.
 *
 * run.sh: -max_len=8192
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache/hdrs.h"
#include "fuzz_util.h"

static const char *const hop_by_hop[] = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade", "proxy-authenticate", "proxy-authorization",
};
static const char *const kept_on_update[] = {
    "content-length", "content-range", "content-encoding", "repr-digest", "digest",
    "content-md5", "x-ms-blob-content-md5",
};

static bool in_set(const char *name, const char *const *set, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(name, set[i]) == 0)
            return true;
    return false;
}

static bool is_hop(const char *name)
{
    return in_set(name, hop_by_hop, sizeof hop_by_hop / sizeof hop_by_hop[0]);
}

/* The lines of part (len bytes, no NUL inside) into h. */
static void add_lines(struct hdrs *h, const char *part, size_t len)
{
    hdrs_init(h);
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(part + at, '\n', len - at);
        size_t n = nl ? (size_t)(nl - part - at) + 1 : len - at;
        unsigned before = h->n;
        size_t blen = h->len;
        if (hdrs_add_line(h, part + at, n) != 0)
            FUZZ_CHECK(h->n == before && h->len == blen,
                       "a refused line changed the list (%u -> %u fields)", before, h->n);
        at += n;
    }
}

static void check_list(const struct hdrs *h, const char *what)
{
    FUZZ_CHECK(h->len <= HDRS_MAX_BYTES, "%s: %zu bytes", what, h->len);
    for (unsigned i = 0; i < h->n; i++) {
        const char *name = hdrs_name(h, i), *value = hdrs_value(h, i);
        size_t vlen = strlen(value);
        FUZZ_CHECK(name[0] != '\0', "%s: field %u has no name", what, i);
        for (const unsigned char *c = (const unsigned char *)name; *c; c++)
            FUZZ_CHECK(*c > ' ' && *c != 0x7f && *c != ':', "%s: field %u: name '%s'", what,
                       i, name);
        FUZZ_CHECK(vlen == 0 || (value[0] != ' ' && value[0] != '\t' &&
                                 value[vlen - 1] != ' ' && value[vlen - 1] != '\t' &&
                                 value[vlen - 1] != '\r'),
                   "%s: %s: value '%s' not trimmed", what, name, value);
        FUZZ_CHECK(!strchr(value, '\n'), "%s: %s: a line end in the value", what, name);
    }
}

static bool same_list(const struct hdrs *a, const struct hdrs *b)
{
    if (a->n != b->n)
        return false;
    for (unsigned i = 0; i < a->n; i++)
        if (strcmp(hdrs_name(a, i), hdrs_name(b, i)) != 0 ||
            strcmp(hdrs_value(a, i), hdrs_value(b, i)) != 0)
            return false;
    return true;
}

/* True when a comma-separated list (the whole of every Connection value)
 * has name as an element (parameters after ';' or '=' ignored). */
static bool connection_names(const struct hdrs *h, const char *name)
{
    for (unsigned i = 0; i < h->n; i++)
        if (strcasecmp(hdrs_name(h, i), "Connection") == 0 &&
            hdrs_list_has(hdrs_value(h, i), name))
            return true;
    return false;
}

static void check_strip(const struct hdrs *before)
{
    struct hdrs h;
    FUZZ_CHECK(hdrs_copy(&h, before) == 0, "hdrs_copy failed");
    hdrs_strip_hop_by_hop(&h);
    unsigned k = 0;
    for (unsigned i = 0; i < before->n; i++) {
        const char *name = hdrs_name(before, i);
        if (is_hop(name) || connection_names(before, name))
            continue;
        FUZZ_CHECK(k < h.n && strcmp(hdrs_name(&h, k), name) == 0 &&
                       strcmp(hdrs_value(&h, k), hdrs_value(before, i)) == 0,
                   "strip: end-to-end field %u (%s) lost or moved", i, name);
        k++;
    }
    FUZZ_CHECK(k == h.n, "strip: %u fields kept, %u end-to-end", h.n, k);
    hdrs_free(&h);
}

static void check_round_trip(const struct hdrs *h)
{
    size_t len = 0, len2 = 0;
    char *block = hdrs_serialize(h, &len);
    FUZZ_CHECK(block && strlen(block) == len, "serialize: length %zu", len);
    struct hdrs back;
    hdrs_init(&back);
    FUZZ_CHECK(hdrs_parse_block(&back, block, len) == 0, "parse_block refused its own block");
    FUZZ_CHECK(same_list(h, &back), "serialize + parse_block: not the same fields:\n%s", block);
    char *again = hdrs_serialize(&back, &len2);
    FUZZ_CHECK(again && len2 == len && memcmp(again, block, len) == 0,
               "serialised twice, two blocks");
    free(again);
    free(block);
    hdrs_free(&back);
}

/* The values of name in h, each followed by '\n', into a malloc'd string. */
static char *values_of(const struct hdrs *h, const char *name)
{
    size_t size = 1;
    for (unsigned i = 0; i < h->n; i++)
        if (strcasecmp(hdrs_name(h, i), name) == 0)
            size += strlen(hdrs_value(h, i)) + 1;
    char *out = malloc(size), *p = out;
    if (!out)
        abort();
    for (unsigned i = 0; i < h->n; i++)
        if (strcasecmp(hdrs_name(h, i), name) == 0) {
            size_t n = strlen(hdrs_value(h, i));
            memcpy(p, hdrs_value(h, i), n);
            p[n] = '\n';
            p += n + 1;
        }
    *p = '\0';
    return out;
}

static bool replaced_by(const struct hdrs *newer, const char *name)
{
    return hdrs_get(newer, name) && !is_hop(name) &&
           !in_set(name, kept_on_update, sizeof kept_on_update / sizeof kept_on_update[0]);
}

static void check_update(const struct hdrs *stored, const struct hdrs *newer)
{
    struct hdrs h, newer_before;
    FUZZ_CHECK(hdrs_copy(&h, stored) == 0 && hdrs_copy(&newer_before, newer) == 0,
               "hdrs_copy failed");
    if (hdrs_update(&h, newer) != 0) {
        FUZZ_CHECK(same_list(&h, stored), "update refused but changed the stored fields");
        goto out;
    }
    FUZZ_CHECK(same_list(newer, &newer_before), "update changed the 304's fields");
    check_list(&h, "updated");
    /* every name, of either list */
    const struct hdrs *lists[2] = { stored, newer };
    for (int l = 0; l < 2; l++)
        for (unsigned i = 0; i < lists[l]->n; i++) {
            const char *name = hdrs_name(lists[l], i);
            const struct hdrs *from = replaced_by(newer, name) ? newer : stored;
            char *want = values_of(from, name), *got = values_of(&h, name);
            FUZZ_CHECK(strcmp(want, got) == 0, "update: %s is\n%s\nnot\n%s", name, got, want);
            free(want);
            free(got);
        }
    for (unsigned i = 0; i < h.n; i++)
        FUZZ_CHECK(hdrs_get(stored, hdrs_name(&h, i)) || hdrs_get(newer, hdrs_name(&h, i)),
                   "update: %s from nowhere", hdrs_name(&h, i));
    /* the names kept keep their order */
    unsigned k = 0;
    for (unsigned i = 0; i < stored->n; i++) {
        if (replaced_by(newer, hdrs_name(stored, i)))
            continue;
        while (k < h.n && replaced_by(newer, hdrs_name(&h, k)))
            k++;
        FUZZ_CHECK(k < h.n && strcmp(hdrs_name(&h, k), hdrs_name(stored, i)) == 0 &&
                       strcmp(hdrs_value(&h, k), hdrs_value(stored, i)) == 0,
                   "update: stored field %u (%s) moved", i, hdrs_name(stored, i));
        k++;
    }
out:
    hdrs_free(&h);
    hdrs_free(&newer_before);
}

/* The elements of every Vary value, trimmed and lower-cased, each checked
 * with cb. */
static void vary_elements(const struct hdrs *h, void (*cb)(const char *e, size_t n, void *),
                          void *arg)
{
    for (unsigned i = 0; i < h->n; i++) {
        if (strcasecmp(hdrs_name(h, i), "Vary") != 0)
            continue;
        for (const char *p = hdrs_value(h, i); *p;) {
            p += strspn(p, " \t,");
            size_t n = strcspn(p, ",");
            size_t t = n;
            while (t && (p[t - 1] == ' ' || p[t - 1] == '\t'))
                t--;
            if (t)
                cb(p, t, arg);
            p += n;
        }
    }
}

static void star_cb(const char *e, size_t n, void *arg)
{
    if (n == 1 && e[0] == '*')
        *(bool *)arg = true;
}

static void count_cb(const char *e, size_t n, void *arg)
{
    (void)e;
    (void)n;
    (*(size_t *)arg)++;
}

static void listed_cb(const char *e, size_t n, void *arg)
{
    const char *names = arg;
    for (const char *p = names; *p;) {
        size_t m = strcspn(p, ",");
        if (m == n && strncasecmp(p, e, n) == 0)
            return;
        p += m + (p[m] == ',');
    }
    FUZZ_CHECK(0, "Vary element '%.*s' not among the names '%s'", (int)n, e, names);
}

static void check_vary(const struct hdrs *resp, char *names, size_t size)
{
    int rc = hdrs_vary_names(resp, names, size);
    if (rc != 0) {
        names[0] = '\0';
        return;         /* does not fit: the caller refuses to store */
    }
    bool star = false;
    size_t elements = 0;
    vary_elements(resp, star_cb, &star);
    vary_elements(resp, count_cb, &elements);
    if (star) {
        FUZZ_CHECK(strcmp(names, "*") == 0, "Vary with '*': names '%s'", names);
        return;
    }
    if (elements == 0) {
        FUZZ_CHECK(names[0] == '\0', "no Vary element: names '%s'", names);
        return;
    }
    const char *prev = NULL;
    size_t prev_len = 0;
    for (const char *p = names;;) {
        size_t m = strcspn(p, ",");
        FUZZ_CHECK(m > 0, "names '%s': an empty name", names);
        for (size_t i = 0; i < m; i++)
            FUZZ_CHECK(!(p[i] >= 'A' && p[i] <= 'Z'), "names '%s' not lower case", names);
        if (prev) {
            size_t c = m < prev_len ? m : prev_len;
            int cmp = memcmp(prev, p, c);
            FUZZ_CHECK(cmp < 0 || (cmp == 0 && prev_len < m),
                       "names '%s' not sorted and unique", names);
        }
        prev = p;
        prev_len = m;
        if (p[m] == '\0')
            break;
        p += m + 1;
    }
    vary_elements(resp, listed_cb, names);
}

/* C with every Accept-Encoding list reversed and those fields in reverse
 * order (after the others), plus a field no Vary name lists. */
static void permuted(const struct hdrs *req, struct hdrs *out)
{
    hdrs_init(out);
    for (unsigned i = 0; i < req->n; i++)
        if (strcasecmp(hdrs_name(req, i), "Accept-Encoding") != 0 &&
            hdrs_add_str(out, hdrs_name(req, i), hdrs_value(req, i)) != 0)
            abort();
    for (unsigned i = req->n; i-- > 0;) {
        if (strcasecmp(hdrs_name(req, i), "Accept-Encoding") != 0)
            continue;
        const char *v = hdrs_value(req, i);
        size_t n = strlen(v), k = 0;
        char *rev = malloc(n + 2);
        if (!rev)
            abort();
        /* the elements from last to first */
        for (size_t end = n; end > 0;) {
            size_t start = end;
            while (start > 0 && v[start - 1] != ',')
                start--;
            if (k)
                rev[k++] = ',';
            memcpy(rev + k, v + start, end - start);
            k += end - start;
            end = start > 0 ? start - 1 : 0;
        }
        rev[k] = '\0';
        if (hdrs_add_str(out, hdrs_name(req, i), rev) != 0)
            abort();
        free(rev);
    }
}

static void check_key(const struct hdrs *req, const char *names)
{
    struct hdr_source src, src2;
    struct hdrs perm;
    hdrs_source(req, &src);
    char *k1 = hdrs_variant_key(&src, names), *k2 = hdrs_variant_key(&src, names);
    FUZZ_CHECK(k1 && k2 && strcmp(k1, k2) == 0, "variant key for '%s': twice, two keys", names);
    /* one line per name, in order */
    size_t lines = 0;
    for (const char *p = k1; *p; p++)
        lines += *p == '\n';
    size_t n_names = 0;
    for (const char *p = names; *p;) {
        p += strspn(p, " \t,");
        if (!*p)
            break;
        n_names++;
        p += strcspn(p, ",");
    }
    FUZZ_CHECK(k1[0] == '\0' || k1[strlen(k1) - 1] == '\n', "key '%s' unended", k1);
    FUZZ_CHECK(lines <= n_names, "key for '%s': %zu lines for %zu names:\n%s", names, lines,
               n_names, k1);
    permuted(req, &perm);
    if (hdrs_add_str(&perm, "X-Fuzz-Unlisted-Field", "1") == 0 &&
        !strcasestr(names, "x-fuzz-unlisted-field")) {
        hdrs_source(&perm, &src2);
        char *k3 = hdrs_variant_key(&src2, names);
        FUZZ_CHECK(k3 && strcmp(k1, k3) == 0,
                   "variant key for '%s' changed with Accept-Encoding permuted:\n%s---\n%s",
                   names, k1, k3 ? k3 : "(null)");
        free(k3);
    }
    hdrs_free(&perm);
    free(k1);
    free(k2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *part[4] = { "", "", "", "" };
    size_t plen[4] = { 0, 0, 0, 0 }, at = 0;
    for (int i = 0; i < 4 && at <= size; i++) {
        const uint8_t *nul = memchr(data + at, '\0', size - at);
        size_t n = nul ? (size_t)(nul - data - at) : size - at;
        part[i] = (const char *)data + at;
        plen[i] = n;
        at += n + 1;
        if (!nul)
            break;
    }
    struct hdrs resp, newer, req, copy;
    add_lines(&resp, part[0], plen[0]);
    add_lines(&newer, part[1], plen[1]);
    add_lines(&req, part[2], plen[2]);
    check_list(&resp, "A");
    check_list(&newer, "B");
    check_list(&req, "C");
    FUZZ_CHECK(hdrs_copy(&copy, &resp) == 0 && same_list(&copy, &resp), "hdrs_copy differs");
    hdrs_free(&copy);

    check_strip(&resp);
    check_round_trip(&resp);
    check_update(&resp, &newer);

    char names[4096];
    check_vary(&resp, names, sizeof names);
    check_key(&req, names);
    /* names as hdrs_vary_names writes them hold no line end */
    char *d = fuzz_cstr((const uint8_t *)part[3], plen[3]);
    for (char *c = d; *c; c++)
        if (*c == '\n' || *c == '\r')
            *c = ',';
    check_key(&req, d);
    free(d);

    hdrs_free(&resp);
    hdrs_free(&newer);
    hdrs_free(&req);
    return 0;
}
