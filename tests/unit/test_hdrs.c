/*
 * cache/hdrs.c: header fields as the cache keeps them. Lines as curl hands
 * them over (trimming, obsolete folding, the status line, bad names, the
 * size bound), reading and removing fields, hop-by-hop stripping, the
 * stored block's round trip, 304 updates (RFC 9111 §3.2), list membership,
 * the Vary names and the secondary key a request makes of them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/hdrs.h"

/* ---- helpers ------------------------------------------------------------ */

static int add_line(struct hdrs *h, const char *line)
{
    return hdrs_add_line(h, line, strlen(line));
}

/* A list from "Name: value\r\n" lines. */
static void from_block(struct hdrs *h, const char *block)
{
    hdrs_init(h);
    assert_int_equal(hdrs_parse_block(h, block, strlen(block)), 0);
}

/* Asserts the serialized form of h. */
static void assert_block(const struct hdrs *h, const char *expected)
{
    size_t len = 0;
    char *s = hdrs_serialize(h, &len);

    assert_non_null(s);
    assert_string_equal(s, expected);
    assert_int_equal(len, strlen(expected));
    free(s);
}

static void assert_field(const struct hdrs *h, unsigned i, const char *name, const char *value)
{
    assert_true(i < h->n);
    assert_string_equal(hdrs_name(h, i), name);
    assert_string_equal(hdrs_value(h, i), value);
}

/* The secondary key of a request whose fields are `block`. */
static char *key_for(const char *block, const char *names)
{
    struct hdrs req;
    struct hdr_source src;
    char *key;

    from_block(&req, block);
    hdrs_source(&req, &src);
    key = hdrs_variant_key(&src, names);
    hdrs_free(&req);
    assert_non_null(key);
    return key;
}

static void assert_key(const char *block, const char *names, const char *expected)
{
    char *key = key_for(block, names);

    if (strcmp(key, expected) != 0)
        fail_msg("request \"%s\" for \"%s\": key \"%s\", expected \"%s\"", block, names, key,
                 expected);
    free(key);
}

static void assert_same_key(const char *a, const char *b, const char *names, int same)
{
    char *ka = key_for(a, names), *kb = key_for(b, names);

    if ((strcmp(ka, kb) == 0) != same)
        fail_msg("\"%s\" -> \"%s\" and \"%s\" -> \"%s\" should %s", a, ka, b, kb,
                 same ? "be equal" : "differ");
    free(ka);
    free(kb);
}

/* ---- lines -------------------------------------------------------------- */

static void lines_are_trimmed(void **state)
{
    struct hdrs h;
    (void)state;

    hdrs_init(&h);
    assert_int_equal(add_line(&h, "HTTP/1.1 200 OK\r\n"), 0);      /* the status line */
    assert_int_equal(add_line(&h, "HTTP/2 304\r\n"), 0);
    assert_int_equal(add_line(&h, "Content-Type:   text/plain  \t\r\n"), 0);
    assert_int_equal(add_line(&h, "ETag:\"abc\"\n"), 0);
    assert_int_equal(add_line(&h, "X-Empty:\r\n"), 0);
    assert_int_equal(add_line(&h, "x-lower: Mixed Case Value\r\n"), 0);
    assert_int_equal(add_line(&h, "\r\n"), 0);                     /* the end of the block */
    assert_int_equal(h.n, 4);
    assert_field(&h, 0, "Content-Type", "text/plain");
    assert_field(&h, 1, "ETag", "\"abc\"");
    assert_field(&h, 2, "X-Empty", "");
    assert_field(&h, 3, "x-lower", "Mixed Case Value");
    /* a value may hold colons */
    assert_int_equal(add_line(&h, "Location: http://h:8080/x\r\n"), 0);
    assert_field(&h, 4, "Location", "http://h:8080/x");
    hdrs_free(&h);
    assert_int_equal(h.n, 0);
    assert_null(h.buf);
}

static void bad_lines_are_ignored(void **state)
{
    struct hdrs h;
    (void)state;

    hdrs_init(&h);
    assert_int_equal(add_line(&h, "no colon here\r\n"), 0);
    assert_int_equal(add_line(&h, ": no name\r\n"), 0);
    assert_int_equal(add_line(&h, "Bad Name: x\r\n"), 0);          /* a space in the name */
    assert_int_equal(add_line(&h, "Bad\tName: x\r\n"), 0);
    assert_int_equal(add_line(&h, "Name : x\r\n"), 0);             /* space before the colon */
    assert_int_equal(hdrs_add_line(&h, "", 0), 0);
    assert_int_equal(h.n, 0);
    assert_null(hdrs_get(&h, "Bad Name"));
    assert_null(hdrs_get(&h, "Name"));
    /* and the list goes on working */
    assert_int_equal(add_line(&h, "Good: yes\r\n"), 0);
    assert_int_equal(h.n, 1);
    assert_field(&h, 0, "Good", "yes");
    /* a field without a name is refused by hdrs_add */
    assert_int_equal(hdrs_add(&h, "", 0, "v", 1), -1);
    assert_int_equal(h.n, 1);
    hdrs_free(&h);
}

/* RFC 9112 §5.2: a line starting with white space continues the value. */
static void obsolete_folding_continues_the_value(void **state)
{
    struct hdrs h;
    (void)state;

    hdrs_init(&h);
    assert_int_equal(add_line(&h, "X-Long: first\r\n"), 0);
    assert_int_equal(add_line(&h, "   second  \r\n"), 0);
    assert_int_equal(add_line(&h, "\tthird\r\n"), 0);
    assert_int_equal(add_line(&h, "X-Next: n\r\n"), 0);
    assert_int_equal(h.n, 2);
    assert_field(&h, 0, "X-Long", "first second third");
    assert_field(&h, 1, "X-Next", "n");
    /* a blank continuation adds nothing */
    assert_int_equal(add_line(&h, "  \r\n"), 0);
    assert_field(&h, 1, "X-Next", "n");
    assert_block(&h, "X-Long: first second third\r\nX-Next: n\r\n");
    hdrs_free(&h);
    /* a continuation before any field is ignored */
    hdrs_init(&h);
    assert_int_equal(add_line(&h, " orphan\r\n"), 0);
    assert_int_equal(h.n, 0);
    hdrs_free(&h);
}

/* A field whose value starts on the next line: the fold's space is
 * leading white space of the value, which is removed like any other. */
static void folding_onto_an_empty_value(void **state)
{
    struct hdrs h;
    (void)state;

    hdrs_init(&h);
    assert_int_equal(add_line(&h, "X-Folded:\r\n"), 0);
    assert_int_equal(add_line(&h, " value\r\n"), 0);
    assert_int_equal(add_line(&h, "X-Next: n\r\n"), 0);
    assert_field(&h, 0, "X-Folded", "value");
    assert_block(&h, "X-Folded: value\r\nX-Next: n\r\n");
    hdrs_free(&h);
}

static void the_block_is_bounded(void **state)
{
    struct hdrs h;
    size_t big = HDRS_MAX_BYTES;
    char *v = malloc(big + 1), *line = malloc(big + 16);
    unsigned n;
    (void)state;

    assert_non_null(v);
    assert_non_null(line);
    memset(v, 'a', big);
    v[big] = '\0';
    hdrs_init(&h);
    /* one field as large as the bound: refused, nothing added */
    assert_int_equal(hdrs_add_str(&h, "X-Big", v), -1);
    assert_int_equal(h.n, 0);
    snprintf(line, big + 16, "X-Big: %s\r\n", v);
    assert_int_equal(hdrs_add_line(&h, line, strlen(line)), -1);
    assert_int_equal(h.n, 0);
    /* many small ones: accepted until the bound, then refused */
    v[1000] = '\0';
    for (n = 0; n < 200 && hdrs_add_str(&h, "X-Many", v) == 0; n++)
        ;
    assert_true(n > 10 && n < 200);
    assert_int_equal(h.n, n);
    assert_true(h.len <= HDRS_MAX_BYTES);
    /* a fold past the bound is refused too, and the field stays as it was */
    memset(v, 'b', 1000);
    v[0] = ' ';
    assert_int_equal(hdrs_add_line(&h, v, 1000), -1);
    assert_int_equal(strlen(hdrs_value(&h, h.n - 1)), 1000);
    /* what was accepted is intact */
    assert_int_equal(hdrs_remove(&h, "X-Many"), n);
    assert_int_equal(hdrs_add_str(&h, "X-After", "ok"), 0);
    assert_field(&h, 0, "X-After", "ok");
    hdrs_free(&h);
    free(v);
    free(line);
}

/* ---- reading and removing -------------------------------------------------- */

static void get_get_all_and_remove(void **state)
{
    struct hdrs h;
    char out[64];
    (void)state;

    from_block(&h, "Cache-Control: max-age=60\r\n"
                   "Vary: Accept-Encoding\r\n"
                   "cache-control: stale-if-error=600\r\n"
                   "Set-Cookie: a=1\r\n"
                   "CACHE-CONTROL: public\r\n");
    assert_string_equal(hdrs_get(&h, "cache-control"), "max-age=60");     /* the first */
    assert_string_equal(hdrs_get(&h, "VARY"), "Accept-Encoding");
    assert_null(hdrs_get(&h, "ETag"));
    assert_null(hdrs_get(&h, "Cache"));
    assert_int_equal(hdrs_get_all(&h, "Cache-Control", out, sizeof out), 3);
    assert_string_equal(out, "max-age=60, stale-if-error=600, public");
    assert_int_equal(hdrs_get_all(&h, "ETag", out, sizeof out), 0);
    assert_string_equal(out, "");
    /* cut to fit, and still counted */
    assert_int_equal(hdrs_get_all(&h, "cache-control", out, 12), 3);
    assert_int_equal(strlen(out), 11);
    assert_string_equal(out, "max-age=60,");

    assert_int_equal(hdrs_remove(&h, "CACHE-control"), 3);
    assert_int_equal(h.n, 2);
    assert_null(hdrs_get(&h, "Cache-Control"));
    assert_block(&h, "Vary: Accept-Encoding\r\nSet-Cookie: a=1\r\n");
    assert_int_equal(hdrs_remove(&h, "Cache-Control"), 0);
    /* the list stays usable after removing */
    assert_int_equal(hdrs_add_str(&h, "Age", "5"), 0);
    assert_block(&h, "Vary: Accept-Encoding\r\nSet-Cookie: a=1\r\nAge: 5\r\n");
    hdrs_clear(&h);
    assert_int_equal(h.n, 0);
    assert_null(hdrs_get(&h, "Age"));
    assert_block(&h, "");
    hdrs_free(&h);
}

static void copy_is_deep(void **state)
{
    struct hdrs a, b;
    (void)state;

    from_block(&a, "A: 1\r\nB: 2\r\nA: 3\r\n");
    assert_int_equal(hdrs_copy(&b, &a), 0);
    hdrs_remove(&a, "A");
    hdrs_add_str(&a, "C", "4");
    assert_block(&b, "A: 1\r\nB: 2\r\nA: 3\r\n");
    assert_block(&a, "B: 2\r\nC: 4\r\n");
    hdrs_free(&a);
    assert_block(&b, "A: 1\r\nB: 2\r\nA: 3\r\n");
    hdrs_free(&b);
}

static void hop_by_hop_fields_are_stripped(void **state)
{
    static const char *const hop[] = {
        "Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Proxy-Authenticate", "Proxy-Authorization",
    };
    struct hdrs h;
    (void)state;

    for (size_t i = 0; i < sizeof hop / sizeof hop[0]; i++)
        assert_true(hdrs_is_hop_by_hop(hop[i]));
    assert_true(hdrs_is_hop_by_hop("transfer-encoding"));
    assert_true(hdrs_is_hop_by_hop("KEEP-ALIVE"));
    assert_false(hdrs_is_hop_by_hop("Content-Length"));
    assert_false(hdrs_is_hop_by_hop("Trailers"));
    assert_false(hdrs_is_hop_by_hop("X-Connection"));

    from_block(&h, "Date: d\r\n"
                   "connection: Keep-Alive, X-Secret\r\n"
                   "Keep-Alive: timeout=5\r\n"
                   "x-secret: 1\r\n"
                   "Transfer-Encoding: chunked\r\n"
                   "Content-Type: text/plain\r\n"
                   "Connection: x-other\r\n"
                   "X-Other: 2\r\n"
                   "TE: trailers\r\n"
                   "Trailer: X-T\r\n"
                   "Upgrade: h2c\r\n"
                   "Proxy-Connection: keep-alive\r\n"
                   "Proxy-Authenticate: Basic\r\n"
                   "Proxy-Authorization: Basic eA==\r\n"
                   "X-Secretive: 3\r\n"
                   "ETag: \"e\"\r\n");
    hdrs_strip_hop_by_hop(&h);
    assert_block(&h, "Date: d\r\nContent-Type: text/plain\r\nX-Secretive: 3\r\nETag: \"e\"\r\n");
    hdrs_free(&h);
    /* without Connection only the fixed list goes */
    from_block(&h, "X-Secret: 1\r\nUpgrade: h2c\r\n");
    hdrs_strip_hop_by_hop(&h);
    assert_block(&h, "X-Secret: 1\r\n");
    hdrs_free(&h);
}

static void serialize_and_parse_round_trip(void **state)
{
    struct hdrs h, back;
    char *block;
    size_t len;
    (void)state;

    hdrs_init(&h);
    assert_int_equal(hdrs_add_str(&h, "Content-Type", "application/json"), 0);
    assert_int_equal(hdrs_add_str(&h, "Set-Cookie", "a=1"), 0);
    assert_int_equal(hdrs_add_str(&h, "vary", "Accept-Encoding"), 0);
    assert_int_equal(hdrs_add_str(&h, "Set-Cookie", "b=2; Path=/"), 0);
    assert_int_equal(hdrs_add_str(&h, "X-Empty", ""), 0);
    assert_int_equal(hdrs_add_str(&h, "Link", "<http://h/a>; rel=\"next\", <http://h/b>"), 0);
    block = hdrs_serialize(&h, &len);
    assert_non_null(block);
    assert_string_equal(block, "Content-Type: application/json\r\n"
                               "Set-Cookie: a=1\r\n"
                               "vary: Accept-Encoding\r\n"
                               "Set-Cookie: b=2; Path=/\r\n"
                               "X-Empty: \r\n"
                               "Link: <http://h/a>; rel=\"next\", <http://h/b>\r\n");
    assert_int_equal(len, strlen(block));
    hdrs_init(&back);
    assert_int_equal(hdrs_parse_block(&back, block, len), 0);
    assert_int_equal(back.n, h.n);
    for (unsigned i = 0; i < h.n; i++)
        assert_field(&back, i, hdrs_name(&h, i), hdrs_value(&h, i));
    /* parsing appends */
    assert_int_equal(hdrs_parse_block(&back, "Age: 1\r\n", 8), 0);
    assert_int_equal(back.n, h.n + 1);
    assert_field(&back, h.n, "Age", "1");
    hdrs_free(&back);
    free(block);
    /* the last line may lack its line end; bare \n works too */
    hdrs_init(&back);
    assert_int_equal(hdrs_parse_block(&back, "A: 1\nB: 2", 9), 0);
    assert_block(&back, "A: 1\r\nB: 2\r\n");
    hdrs_free(&back);
    /* no fields: "" */
    hdrs_free(&h);
    assert_block(&h, "");
    assert_int_equal(hdrs_parse_block(&h, "", 0), 0);
    assert_int_equal(h.n, 0);
    hdrs_free(&h);
}

/* ---- 304 updates ---------------------------------------------------------- */

static void update_replaces_in_place_and_keeps_the_body_fields(void **state)
{
    struct hdrs stored, newer;
    (void)state;

    from_block(&stored, "Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
                        "Cache-Control: max-age=60\r\n"
                        "X-A: 1\r\n"
                        "Content-Length: 5\r\n"
                        "X-A: 2\r\n"
                        "Content-Encoding: gzip\r\n"
                        "Repr-Digest: sha-256=:abc=:\r\n"
                        "Content-MD5: md5old\r\n"
                        "ETag: \"v1\"\r\n"
                        "Content-Type: text/plain\r\n");
    from_block(&newer, "date: Tue, 02 Jan 2024 00:00:00 GMT\r\n"
                       "ETag: \"v1\"\r\n"
                       "Cache-Control: max-age=3600\r\n"
                       "Cache-Control: stale-if-error=60\r\n"
                       "X-A: 3\r\n"
                       "Content-Length: 0\r\n"
                       "Content-Encoding: br\r\n"
                       "Repr-Digest: sha-256=:xyz=:\r\n"
                       "Content-MD5: md5new\r\n"
                       "Content-Range: bytes 0-0/5\r\n"
                       "Connection: close\r\n"
                       "Keep-Alive: timeout=5\r\n"
                       "Transfer-Encoding: chunked\r\n"
                       "X-New: n\r\n"
                       "Expires: Tue, 02 Jan 2024 01:00:00 GMT\r\n");
    assert_int_equal(hdrs_update(&stored, &newer), 0);
    assert_block(&stored, "date: Tue, 02 Jan 2024 00:00:00 GMT\r\n"
                          "Cache-Control: max-age=3600\r\n"
                          "Cache-Control: stale-if-error=60\r\n"
                          "X-A: 3\r\n"
                          "Content-Length: 5\r\n"
                          "Content-Encoding: gzip\r\n"
                          "Repr-Digest: sha-256=:abc=:\r\n"
                          "Content-MD5: md5old\r\n"
                          "ETag: \"v1\"\r\n"
                          "Content-Type: text/plain\r\n"
                          "X-New: n\r\n"
                          "Expires: Tue, 02 Jan 2024 01:00:00 GMT\r\n");
    /* the 304 itself is not changed */
    assert_int_equal(newer.n, 15);
    hdrs_free(&stored);
    hdrs_free(&newer);

    /* the other integrity fields are kept as well; an empty 304 changes
     * nothing */
    from_block(&stored, "Digest: sha-256=old\r\nx-ms-blob-content-md5: old\r\nA: 1\r\n");
    from_block(&newer, "DIGEST: sha-256=new\r\nX-MS-Blob-Content-MD5: new\r\n");
    assert_int_equal(hdrs_update(&stored, &newer), 0);
    assert_block(&stored, "Digest: sha-256=old\r\nx-ms-blob-content-md5: old\r\nA: 1\r\n");
    hdrs_free(&newer);
    hdrs_init(&newer);
    assert_int_equal(hdrs_update(&stored, &newer), 0);
    assert_block(&stored, "Digest: sha-256=old\r\nx-ms-blob-content-md5: old\r\nA: 1\r\n");
    hdrs_free(&stored);
    hdrs_free(&newer);
    /* a 304 may bring integrity fields the stored response lacked: they
     * describe other bytes, and are not added */
    from_block(&stored, "A: 1\r\n");
    from_block(&newer, "Content-Length: 9\r\nRepr-Digest: sha-256=:x=:\r\nB: 2\r\n");
    assert_int_equal(hdrs_update(&stored, &newer), 0);
    assert_block(&stored, "A: 1\r\nB: 2\r\n");
    hdrs_free(&stored);
    hdrs_free(&newer);
}

/* ---- lists and Vary ---------------------------------------------------------- */

static void list_membership(void **state)
{
    (void)state;
    assert_true(hdrs_list_has("gzip, br", "br"));
    assert_true(hdrs_list_has("gzip, br", "GZIP"));
    assert_true(hdrs_list_has(" gzip;q=1.0 ,\tbr;q=0.5", "gzip"));
    assert_true(hdrs_list_has("no-cache=\"Set-Cookie\", max-age=5", "no-cache"));
    assert_true(hdrs_list_has("max-age=5,must-revalidate", "must-revalidate"));
    assert_true(hdrs_list_has(",,close", "close"));
    assert_false(hdrs_list_has("gzip, br", "brotli"));
    assert_false(hdrs_list_has("gzipped", "gzip"));
    assert_false(hdrs_list_has("x-gzip", "gzip"));
    assert_false(hdrs_list_has("max-age=5", "5"));
    assert_false(hdrs_list_has("", "gzip"));
    assert_false(hdrs_list_has(NULL, "gzip"));
}

static void assert_vary(const char *block, const char *expected)
{
    struct hdrs h;
    char out[256];

    from_block(&h, block);
    memset(out, 'x', sizeof out);
    assert_int_equal(hdrs_vary_names(&h, out, sizeof out), 0);
    if (strcmp(out, expected) != 0)
        fail_msg("\"%s\": Vary names \"%s\", expected \"%s\"", block, out, expected);
    hdrs_free(&h);
}

static void vary_names(void **state)
{
    struct hdrs h;
    char small[8];
    (void)state;

    assert_vary("", "");
    assert_vary("Content-Type: text/plain\r\n", "");
    assert_vary("Vary: Accept-Encoding\r\n", "accept-encoding");
    assert_vary("Vary: User-Agent, Accept-Encoding, accept-encoding\r\n",
                "accept-encoding,user-agent");
    assert_vary("Vary: Origin\r\nContent-Type: x\r\nvary: Accept-Language ,  ACCEPT\r\n",
                "accept,accept-language,origin");
    assert_vary("Vary: *\r\n", "*");
    assert_vary("Vary: Accept-Encoding, *\r\n", "*");
    assert_vary("Vary: Origin\r\nVary: *\r\n", "*");
    assert_vary("Vary:\r\n", "");
    assert_vary("Vary: , ,\r\n", "");
    /* too long for the buffer: refused */
    from_block(&h, "Vary: Accept-Encoding\r\n");
    assert_int_equal(hdrs_vary_names(&h, small, sizeof small), -1);
    assert_int_equal(hdrs_vary_names(&h, small, 0), -1);
    hdrs_free(&h);
}

static void variant_keys(void **state)
{
    struct hdr_source none = {0};
    char *key;
    (void)state;

    /* no names: the empty key, whatever the request holds */
    assert_key("Accept-Encoding: gzip\r\n", "", "");
    key = hdrs_variant_key(NULL, "");
    assert_non_null(key);
    assert_string_equal(key, "");
    free(key);

    /* case and white space are normalised */
    assert_key("Accept-Language:  EN-us ,   Fr\t \r\n", "accept-language",
               "accept-language=en-us,fr\n");
    assert_key("User-Agent: Foo   Bar/1.0  (X11)\r\n", "user-agent",
               "user-agent=foo bar/1.0 (x11)\n");
    assert_same_key("Accept-Language: en-US, fr\r\n", "accept-language: EN-us,fr\r\n",
                    "accept-language", 1);
    assert_same_key("User-Agent: a b\r\n", "User-Agent: a     b\r\n", "user-agent", 1);
    assert_same_key("User-Agent: a b\r\n", "User-Agent: ab\r\n", "user-agent", 0);
    /* repeated fields are joined */
    assert_key("Accept-Language: en\r\nX: 1\r\naccept-language: fr\r\n", "accept-language",
               "accept-language=en,fr\n");
    /* order matters for most fields... */
    assert_same_key("Accept-Language: en, fr\r\n", "Accept-Language: fr, en\r\n",
                    "accept-language", 0);
    /* ...but Accept-Encoding is a set */
    assert_same_key("Accept-Encoding: gzip, br\r\n", "Accept-Encoding: br,gzip\r\n",
                    "accept-encoding", 1);
    assert_same_key("Accept-Encoding: gzip, br\r\n", "Accept-Encoding: BR, gzip, br\r\n",
                    "accept-encoding", 1);
    assert_same_key("Accept-Encoding: gzip\r\nAccept-Encoding: br\r\n",
                    "Accept-Encoding: br, gzip\r\n", "accept-encoding", 1);
    assert_same_key("Accept-Encoding: gzip, br\r\n", "Accept-Encoding: gzip\r\n",
                    "accept-encoding", 0);
    assert_key("Accept-Encoding: gzip, br\r\n", "accept-encoding", "accept-encoding=br,gzip\n");

    /* an absent field is distinct from an empty one */
    assert_key("", "accept-encoding", "accept-encoding!\n");
    assert_key("Accept-Encoding:\r\n", "accept-encoding", "accept-encoding=\n");
    assert_same_key("", "Accept-Encoding:\r\n", "accept-encoding", 0);
    key = hdrs_variant_key(&none, "origin");
    assert_non_null(key);
    assert_string_equal(key, "origin!\n");
    free(key);
    key = hdrs_variant_key(NULL, "origin");
    assert_non_null(key);
    assert_string_equal(key, "origin!\n");
    free(key);

    /* several names, in the (sorted) order hdrs_vary_names writes them;
     * other fields do not matter */
    assert_key("Origin: https://A.example\r\nAccept-Encoding: br\r\nCookie: x=1\r\n",
               "accept-encoding,accept-language,origin",
               "accept-encoding=br\naccept-language!\norigin=https://a.example\n");
    assert_same_key("Accept-Encoding: br\r\nCookie: a\r\n", "Accept-Encoding: br\r\nCookie: b\r\n",
                    "accept-encoding", 1);
    /* the field names of the request are matched without regard to case */
    assert_same_key("ACCEPT-ENCODING: br\r\n", "accept-encoding: br\r\n", "accept-encoding", 1);
}

/* hdrs_source reads a struct hdrs as the server's fields are read. */
struct walk {
    unsigned n, stop_at;
    char seen[256];
};

static int walk_cb(void *arg, const char *name, const char *value)
{
    struct walk *w = arg;
    size_t len = strlen(w->seen);

    snprintf(w->seen + len, sizeof w->seen - len, "%s=%s;", name, value);
    return ++w->n == w->stop_at;
}

static void source_reads_the_list(void **state)
{
    struct hdrs h;
    struct hdr_source src;
    struct walk w = {0};
    (void)state;

    from_block(&h, "Host: h\r\nAccept: a\r\naccept: b\r\n");
    hdrs_source(&h, &src);
    assert_string_equal(src.get(src.ctx, "ACCEPT"), "a");
    assert_null(src.get(src.ctx, "Range"));
    src.each(src.ctx, walk_cb, &w);
    assert_string_equal(w.seen, "Host=h;Accept=a;accept=b;");
    memset(&w, 0, sizeof w);
    w.stop_at = 2;
    src.each(src.ctx, walk_cb, &w);
    assert_string_equal(w.seen, "Host=h;Accept=a;");
    hdrs_free(&h);
}

/* No field is read into a fixed buffer (found by fuzz_hdrs): a name late in
 * a long Connection is still hop-by-hop, a Vary with more names than fit
 * is refused rather than cut, and Accept-Encoding is a set whatever its
 * length. */
static void long_lists_are_read_whole(void **state)
{
    struct hdrs h, perm;
    char val[4096], rev[4096], out[8192];
    size_t pos = 0, rpos = 0;
    (void)state;

    /* Connection: x-hop-000 .. x-hop-199, then the field it names */
    for (int i = 0; i < 200; i++)
        pos += (size_t)snprintf(val + pos, sizeof val - pos, "%sx-hop-%03d", i ? ", " : "", i);
    hdrs_init(&h);
    assert_int_equal(hdrs_add_str(&h, "Connection", val), 0);
    assert_int_equal(hdrs_add_str(&h, "X-Hop-199", "1"), 0);
    assert_int_equal(hdrs_add_str(&h, "X-Hop-1", "kept"), 0);
    assert_int_equal(hdrs_add_str(&h, "ETag", "\"e\""), 0);
    hdrs_strip_hop_by_hop(&h);
    assert_block(&h, "X-Hop-1: kept\r\nETag: \"e\"\r\n");
    hdrs_free(&h);

    /* Vary of 200 names: every one, or -1 when out is too small */
    hdrs_init(&h);
    assert_int_equal(hdrs_add_str(&h, "Vary", val), 0);
    assert_int_equal(hdrs_vary_names(&h, out, sizeof out), 0);
    assert_non_null(strstr(out, "x-hop-000,"));
    assert_non_null(strstr(out, ",x-hop-199"));
    char small[1024];
    assert_int_equal(hdrs_vary_names(&h, small, sizeof small), -1);
    hdrs_free(&h);

    /* 100 codings, in two orders: one key */
    pos = 0;
    for (int i = 0; i < 100; i++) {
        pos += (size_t)snprintf(val + pos, sizeof val - pos, "%sc%02d", i ? ", " : "", i);
        rpos += (size_t)snprintf(rev + rpos, sizeof rev - rpos, "%sc%02d", i ? ", " : "",
                                 99 - i);
    }
    hdrs_init(&h);
    hdrs_init(&perm);
    assert_int_equal(hdrs_add_str(&h, "Accept-Encoding", val), 0);
    assert_int_equal(hdrs_add_str(&perm, "Accept-Encoding", rev), 0);
    struct hdr_source a, b;
    hdrs_source(&h, &a);
    hdrs_source(&perm, &b);
    char *ka = hdrs_variant_key(&a, "accept-encoding"), *kb = hdrs_variant_key(&b, "accept-encoding");
    assert_non_null(ka);
    assert_non_null(kb);
    assert_string_equal(ka, kb);
    assert_non_null(strstr(ka, "c99"));
    free(ka);
    free(kb);
    hdrs_free(&h);
    hdrs_free(&perm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lines_are_trimmed),
        cmocka_unit_test(bad_lines_are_ignored),
        cmocka_unit_test(obsolete_folding_continues_the_value),
        cmocka_unit_test(folding_onto_an_empty_value),
        cmocka_unit_test(the_block_is_bounded),
        cmocka_unit_test(get_get_all_and_remove),
        cmocka_unit_test(copy_is_deep),
        cmocka_unit_test(hop_by_hop_fields_are_stripped),
        cmocka_unit_test(serialize_and_parse_round_trip),
        cmocka_unit_test(update_replaces_in_place_and_keeps_the_body_fields),
        cmocka_unit_test(list_membership),
        cmocka_unit_test(vary_names),
        cmocka_unit_test(variant_keys),
        cmocka_unit_test(source_reads_the_list),
        cmocka_unit_test(long_lists_are_read_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
