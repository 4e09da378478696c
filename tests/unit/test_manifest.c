/*
 * manifest: deployment documents rewritten for children, and the files and
 * digests they promise.
 *
 * Documents come from tests/data/manifests ($EDGECACHE_TEST_DATA): the
 * shared fixtures (adu/, twin/) and documents written for these tests
 * (written/, see its README). For every rewrite the test checks, on its
 * own terms:
 *   - bytes: the answer equals the input with each URL's string literal
 *     replaced by the expected DO-shape URL, and nothing else; the
 *     updateManifest and signature literals are byte-identical
 *   - meaning: jansson reads input and answer as the same tree once the
 *     expected URLs are put back
 *   - the files: id, name, origin URL, rewritten URL, SHA-256 (decoded
 *     from the documents' base64 here, not by the module), size and flags
 *   - rewriting the answer again changes nothing
 * The allow-list is a hand-built configuration read through
 * manifest_allow_cfg, as the daemon and the command use it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>
#include <openssl/sha.h>

#include "cache/manifest.h"
#include "config/cfg.h"

#define BASE "http://gw:8080"
#define ADU_HOST "duinstance2.b.nlu.dl.adu.microsoft.com"
#define ADU_PATH "/westus2/duinstance2/"
#define TOASTER_HOST "contoso.b.nlu.dl.adu.microsoft.com"
#define BOM "\xEF\xBB\xBF"

static struct cfg_allow allow[] = {
    { "http", "*.dl.adu.microsoft.com", 80 },
    { "https", "*.blob.core.windows.net", 443 },
    { "http", "127.0.0.1", 9000 },
    { "http", "firmware.example.com", 8081 },
};

static const struct cfg test_cfg = {
    .allow = allow,
    .n_allow = sizeof allow / sizeof allow[0],
};

static const struct manifest_opts opts = {
    .cache_base = BASE,
    .allow = manifest_allow_cfg,
    .allow_ctx = (void *)&test_cfg,
    .max_bytes = 64 * 1024,
};

/* One URL of a document: its string literal's body as written in the file
 * (escapes and all) and the DO-shape URL expected in its place. */
struct url_pair {
    const char *raw;
    const char *rewritten;
};

/* One file the rewrite should report. b64 or hex: the digest as the
 * document writes it (NULL: none). */
struct want_file {
    const char *id, *name, *url, *rewritten, *b64, *hex;
    int64_t size;
    int detached, related;
};

/* ---- helpers ------------------------------------------------------------- */

static char *load(const char *rel, size_t *len)
{
    const char *dir = getenv("EDGECACHE_TEST_DATA");
    char path[4096];
    snprintf(path, sizeof path, "%s/manifests/%s", dir ? dir : "tests/data", rel);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s (set EDGECACHE_TEST_DATA)", path);
    char *buf = malloc(1 << 20);
    assert_non_null(buf);
    *len = fread(buf, 1, (1 << 20) - 1, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static int b64_value(char c)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(alphabet, c) : NULL;
    return p ? (int)(p - alphabet) : -1;
}

/* The test's own decoder: padded base64 of a 32-byte digest to hex. */
static void b64_to_hex(const char *b64, char hex[65])
{
    unsigned char bin[33];
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    assert_int_equal(strlen(b64), 44);
    for (const char *c = b64; *c && *c != '='; c++) {
        int v = b64_value(*c);
        assert_true(v >= 0);
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            bin[n++] = (unsigned char)(acc >> bits);
        }
    }
    assert_int_equal(n, 32);
    for (size_t i = 0; i < 32; i++)
        sprintf(hex + 2 * i, "%02x", bin[i]);
}

static char *str_replace_once(const char *text, size_t *len, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    if (!at)
        fail_msg("%s not in the input", from);
    if (strstr(at + 1, from))
        fail_msg("%s is more than once in the input", from);
    size_t flen = strlen(from), tlen = strlen(to), head = (size_t)(at - text);
    char *out = malloc(*len - flen + tlen + 1);
    assert_non_null(out);
    memcpy(out, text, head);
    memcpy(out + head, to, tlen);
    memcpy(out + head + tlen, at + flen, *len - head - flen + 1);
    *len = *len - flen + tlen;
    return out;
}

/* The input with every pair's literal swapped for its expected URL. */
static char *expected_text(const char *in, size_t len, const struct url_pair *pairs,
                           size_t n, size_t *outlen)
{
    char *cur = strdup(in);
    assert_non_null(cur);
    for (size_t i = 0; i < n; i++) {
        char from[1024], to[1024];
        snprintf(from, sizeof from, "\"%s\"", pairs[i].raw);
        snprintf(to, sizeof to, "\"%s\"", pairs[i].rewritten);
        char *next = str_replace_once(cur, &len, from, to);
        free(cur);
        cur = next;
    }
    *outlen = len;
    return cur;
}

/* The k-th raw string literal (quotes included) that is the value of
 * "key" in text; NULL when there is no k-th. */
static const char *raw_value_span(const char *text, const char *key, int k, size_t *len)
{
    char needle[128];
    snprintf(needle, sizeof needle, "\"%s\"", key);
    const char *p = text;
    for (int i = 0; (p = strstr(p, needle)); p++) {
        const char *v = p + strlen(needle);
        while (strchr(" \t\r\n", *v) && *v)
            v++;
        if (*v++ != ':')
            continue;
        while (strchr(" \t\r\n", *v) && *v)
            v++;
        if (*v != '"' || i++ != k)
            continue;
        const char *e = v + 1;
        while (*e && *e != '"')
            e += *e == '\\' ? 2 : 1;
        *len = (size_t)(e + 1 - v);
        return v;
    }
    return NULL;
}

/* Every value of key is byte-identical in a and b, and there are `count`. */
static void assert_spans_equal(const char *a, const char *b, const char *key, int count)
{
    int k = 0;
    for (;; k++) {
        size_t la, lb;
        const char *sa = raw_value_span(a, key, k, &la);
        const char *sb = raw_value_span(b, key, k, &lb);
        assert_true((sa == NULL) == (sb == NULL));
        if (!sa)
            break;
        assert_int_equal(la, lb);
        assert_memory_equal(sa, sb, la);
    }
    assert_int_equal(k, count);
}

static json_t *parse_doc(const char *text)
{
    json_error_t e;
    if (strncmp(text, BOM, 3) == 0)
        text += 3;
    json_t *j = json_loads(text, 0, &e);
    if (!j)
        fail_msg("not JSON: %s at %d:%d", e.text, e.line, e.column);
    return j;
}

/* a (input) and b (answer) are the same tree, except strings that are one
 * of the pairs (each used once, counted in used[]). */
static void assert_same_but_urls(const json_t *a, const json_t *b,
                                 const struct url_pair *pairs, size_t n, int *used)
{
    const char *key;
    const json_t *va;
    size_t i;
    assert_int_equal(json_typeof(a), json_typeof(b));
    if (json_is_object(a)) {
        assert_int_equal(json_object_size(a), json_object_size(b));
        json_object_foreach((json_t *)a, key, va) {
            const json_t *vb = json_object_get(b, key);
            if (!vb)
                fail_msg("member %s is missing from the answer", key);
            assert_same_but_urls(va, vb, pairs, n, used);
        }
    } else if (json_is_array(a)) {
        assert_int_equal(json_array_size(a), json_array_size(b));
        json_array_foreach(a, i, va)
            assert_same_but_urls(va, json_array_get(b, i), pairs, n, used);
    } else if (json_is_string(a) && !json_equal(a, b)) {
        for (i = 0; i < n; i++) {
            char lit[1024];
            snprintf(lit, sizeof lit, "\"%s\"", pairs[i].raw);
            json_t *decoded = json_loads(lit, JSON_DECODE_ANY, NULL);
            int match = decoded && strcmp(json_string_value(decoded), json_string_value(a)) == 0;
            json_decref(decoded);
            if (match) {
                assert_string_equal(json_string_value(b), pairs[i].rewritten);
                used[i]++;
                return;
            }
        }
        fail_msg("string changed: '%s' -> '%s'", json_string_value(a), json_string_value(b));
    } else {
        assert_true(json_equal(a, b));
    }
}

static void check_file(const struct manifest_file *f, const struct want_file *w)
{
    char hex[65] = "";
    assert_string_equal(f->id, w->id);
    assert_string_equal(f->name, w->name);
    assert_string_equal(f->url, w->url);
    assert_string_equal(f->rewritten, w->rewritten);
    assert_int_equal(f->size, w->size);
    assert_int_equal(f->detached_manifest, w->detached);
    assert_int_equal(f->related, w->related);
    if (w->b64)
        b64_to_hex(w->b64, hex);
    else if (w->hex)
        snprintf(hex, sizeof hex, "%s", w->hex);
    assert_int_equal(f->has_sha256, hex[0] != '\0');
    if (hex[0])
        assert_string_equal(f->sha256_hex, hex);
    assert_non_null(f->deployment_id);
}

static void check_files(const struct manifest_file *files, size_t n,
                        const struct want_file *want, size_t n_want)
{
    assert_int_equal(n, n_want);
    for (size_t i = 0; i < n; i++)
        check_file(&files[i], &want[i]);
}

/* Rewrites a document and checks bytes, meaning, spans, idempotence.
 * Returns the result for the caller's own checks (free it). */
static struct manifest_result rewrite_ok(const char *rel, const struct url_pair *pairs,
                                         size_t n, int services)
{
    struct manifest_result r, again;
    struct manifest_error err;
    size_t len, want_len;
    char *in = load(rel, &len);
    if (manifest_rewrite(in, len, &opts, &r, &err) != 0)
        fail_msg("%s: %d %s", rel, err.status, err.message);

    char *want = expected_text(in, len, pairs, n, &want_len);
    assert_int_equal(r.len, want_len);
    assert_memory_equal(r.doc, want, want_len);
    assert_int_equal(r.doc[r.len], '\0');
    assert_spans_equal(in, r.doc, "updateManifest", services);
    assert_spans_equal(in, r.doc, "updateManifestSignature", services);

    json_t *a = parse_doc(in), *b = parse_doc(r.doc);
    int used[16] = {0};
    assert_true(n <= 16);
    assert_same_but_urls(a, b, pairs, n, used);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(used[i], 1);
    json_decref(a);
    json_decref(b);

    if (manifest_rewrite(r.doc, r.len, &opts, &again, &err) != 0)
        fail_msg("%s rewritten again: %d %s", rel, err.status, err.message);
    assert_int_equal(again.len, r.len);
    assert_memory_equal(again.doc, r.doc, r.len);
    assert_int_equal(again.n_files, r.n_files);
    for (size_t i = 0; i < r.n_files; i++)
        assert_string_equal(again.files[i].url, r.files[i].url);
    assert_string_equal(again.deployment_id, r.deployment_id);
    manifest_result_free(&again);
    free(want);
    free(in);
    return r;
}

static void sha256_hex_of(const char *s, size_t n, char hex[65])
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)s, n, d);
    for (size_t i = 0; i < sizeof d; i++)
        sprintf(hex + 2 * i, "%02x", d[i]);
}

/* Expects the rewrite of text to fail with status and a message holding
 * every string of the NULL-ended list. */
static void rewrite_fails_n(const char *text, size_t len, int status, ...)
{
    struct manifest_result r;
    struct manifest_error err;
    va_list ap;
    if (manifest_rewrite(text, len, &opts, &r, &err) == 0)
        fail_msg("rewrite succeeded, wanted %d: %s", status, r.doc);
    if (err.status != status)
        fail_msg("status %d, wanted %d: %s", err.status, status, err.message);
    assert_null(r.doc);
    assert_null(r.files);
    va_start(ap, status);
    for (const char *s; (s = va_arg(ap, const char *));)
        if (!strstr(err.message, s))
            fail_msg("'%s' not in the message: %s", s, err.message);
    va_end(ap);
}

#define rewrite_fails(text, status, ...) \
    rewrite_fails_n(text, strlen(text), status, __VA_ARGS__, NULL)

/* ---- fixtures ------------------------------------------------------------ */

#define DEP_URL(p) "http://" ADU_HOST p
#define DEP_DO(p) BASE p "?cacheHostOrigin=" ADU_HOST

static const char p_apt[] = "/westus2/e5cc19d5e9174c93ada35cc315f1fb1d/apt-manifest-tree-1.0.json";
static const char p_detached[] = ADU_PATH "31c38c3340a84e38ae8d30ce340f4a49/"
                                 "contoso.contoso-virtual-motors.1.1.updatemanifest.json";
static const char p_motor[] = ADU_PATH "9ff068f7c2bf43eb9561da14a7cbcecd/motor-firmware-1.1.json";
static const char p_script[] = ADU_PATH "c02058a476a242d7bc0e3c576c180051/"
                               "contoso-motor-installscript.sh";

/* The deployment fixture: four URLs, one detached manifest, two files
 * named only by the detached manifest. */
static struct manifest_result rewrite_deployment_fixture(void)
{
    char u[4][300], d[4][300];
    const char *paths[4] = { p_apt, p_detached, p_motor, p_script };
    struct url_pair pairs[4];
    for (int i = 0; i < 4; i++) {
        snprintf(u[i], sizeof u[i], "http://%s%s", ADU_HOST, paths[i]);
        snprintf(d[i], sizeof d[i], "%s%s?cacheHostOrigin=%s", BASE, paths[i], ADU_HOST);
        pairs[i] = (struct url_pair){ u[i], d[i] };
    }
    struct manifest_result r = rewrite_ok("adu/deployment-with-detached-manifest.json",
                                          pairs, 4, 1);
    const struct want_file want[] = {
        { "f483750ebb885d32c", "apt-manifest-tree-1.0.json", u[0], d[0],
          "Uk1vsEL/nT4btMngo0YSJjheOL2aqm6/EAFhzPb0rXs=", NULL, 136, 0, 0 },
        { "f222b9ffefaaac577", "contoso.contoso-virtual-motors.1.1.updatemanifest.json",
          u[1], d[1], "9Rnjw7ThZhGacOGn3uvvVq0ccQTHc/UFSL9khR2oKsc=", NULL, 1031, 1, 0 },
        { "f2c5d1f3b0295db0f", "motor-firmware-1.1.json", u[2], d[2], NULL, NULL, -1, 0, 0 },
        { "f13b5435aab7c18da", "contoso-motor-installscript.sh", u[3], d[3], NULL, NULL, -1,
          0, 0 },
    };
    check_files(r.files, r.n_files, want, 4);
    return r;
}

static void test_deployment_fixture(void **state)
{
    (void)state;
    struct manifest_result r = rewrite_deployment_fixture();
    assert_string_equal(r.deployment_id, "e99c69ca-3188-43a3-80af-310616c7751d");
    for (size_t i = 0; i < r.n_files; i++)
        assert_string_equal(r.files[i].deployment_id, r.deployment_id);
    manifest_result_free(&r);
    manifest_result_free(&r);   /* safe twice */
}

static void test_firmware_fixture(void **state)
{
    (void)state;
    static const char url[] = "https://contosofirmware.blob.core.windows.net/firmware/"
        "plc-1.0.1.bin?sv=2021-08-06&se=2026-12-01T00%3A00%3A00Z&sr=b&sp=r&"
        "sig=Zm9vYmFyYmF6cXV4cXV1eA%3D%3D";
    static const char rewritten[] = BASE "/firmware/plc-1.0.1.bin?sv=2021-08-06&"
        "se=2026-12-01T00%3A00%3A00Z&sr=b&sp=r&sig=Zm9vYmFyYmF6cXV4cXV1eA%3D%3D&"
        "cacheHostOrigin=contosofirmware.blob.core.windows.net";
    const struct url_pair pairs[] = { { url, rewritten } };
    struct manifest_result r = rewrite_ok("twin/firmware-desired.json", pairs, 1, 0);
    const struct want_file want[] = {
        { "firmware", "plc-1.0.1.bin", url, rewritten, NULL,
          "3e7a1f0c9d1b55c4a0b8d0c7f00f1a4b8e2b9a6d5c4f3e2d1c0b9a8f7e6d5c4b", 4194304, 0, 0 },
    };
    check_files(r.files, r.n_files, want, 1);
    assert_int_equal(strlen(r.deployment_id), 3 + 16);
    assert_memory_equal(r.deployment_id, "fw-", 3);
    assert_string_equal(r.files[0].deployment_id, r.deployment_id);
    manifest_result_free(&r);
}

/* The firmware deployment id does not depend on key order, white space or
 * whether the URL was already rewritten by a parent; it changes with the
 * version. */
static void test_firmware_deployment_id_is_canonical(void **state)
{
    (void)state;
    static const char *const docs[] = {
        "{\"firmware\":{\"fwVersion\":\"1.0\",\"fwPackageURI\":\"http://a.dl.adu.microsoft.com/f.bin\"}}",
        "{ \"firmware\" : { \"fwPackageURI\" : \"http://a.dl.adu.microsoft.com/f.bin\", \"fwVersion\" : \"1.0\" } }",
        "{\"firmware\":{\"fwVersion\":\"1.0\",\"fwPackageURI\":\"http://l4:8080/f.bin?cacheHostOrigin=a.dl.adu.microsoft.com\"}}",
        "{\"firmware\":{\"fwVersion\":\"1.1\",\"fwPackageURI\":\"http://a.dl.adu.microsoft.com/f.bin\"}}",
    };
    char ids[4][64];
    for (int i = 0; i < 4; i++) {
        struct manifest_result r;
        struct manifest_error err;
        assert_int_equal(manifest_rewrite(docs[i], strlen(docs[i]), &opts, &r, &err), 0);
        snprintf(ids[i], sizeof ids[i], "%s", r.deployment_id);
        manifest_result_free(&r);
    }
    assert_string_equal(ids[0], ids[1]);
    assert_string_equal(ids[0], ids[2]);
    assert_string_not_equal(ids[0], ids[3]);
}

/* ---- documents written for the tests ------------------------------------- */

static void test_twin_with_delta_bom_query_port_escapes(void **state)
{
    (void)state;
#define TP "/westus2/contoso/"
    static const char swu[] = "http://" TOASTER_HOST TP "0f3c9a1e4b7d4a5c8e2f6b1d3a9c7e50/toaster-1.1.swu";
    static const char swu_do[] = BASE TP "0f3c9a1e4b7d4a5c8e2f6b1d3a9c7e50/toaster-1.1.swu"
                                 "?cacheHostOrigin=" TOASTER_HOST;
    static const char delta_raw[] = "http:\\/\\/" TOASTER_HOST "\\/westus2\\/contoso\\/"
        "5b2e8d4f1a6c4e7b9d3f0a2c6e8b1d47\\/toaster-1.0-to-1.1.delta?sv=2022-11-02&sig=q%2Bv8%3D";
    static const char delta[] = "http://" TOASTER_HOST TP "5b2e8d4f1a6c4e7b9d3f0a2c6e8b1d47/"
        "toaster-1.0-to-1.1.delta?sv=2022-11-02&sig=q%2Bv8%3D";
    static const char delta_do[] = BASE TP "5b2e8d4f1a6c4e7b9d3f0a2c6e8b1d47/"
        "toaster-1.0-to-1.1.delta?sv=2022-11-02&sig=q%2Bv8%3D&cacheHostOrigin=" TOASTER_HOST;
    static const char script[] = "http://127.0.0.1:9000/local/install-toaster.sh?arch=arm64&v=1";
    static const char script_do[] = BASE "/local/install-toaster.sh?arch=arm64&v=1"
                                    "&cacheHostOrigin=127.0.0.1:9000";
    static const char rootkey[] = "http://" TOASTER_HOST TP "rootkeys/rootkeypackage-5.json";
    static const char rootkey_do[] = BASE TP "rootkeys/rootkeypackage-5.json?cacheHostOrigin="
                                     TOASTER_HOST;
    const struct url_pair pairs[] = {
        { swu, swu_do }, { delta_raw, delta_do }, { script, script_do }, { rootkey, rootkey_do },
    };
    struct manifest_result r = rewrite_ok("written/twin-deployment-delta.json", pairs, 4, 1);
    const struct want_file want[] = {
        { "fa1b2c3d4e5f60718", "toaster-1.1.swu", swu, swu_do,
          "UpeslbqT+xpBWoGX2kBvIjM2PwofGInxEWxW1ejchdI=", NULL, 21, 0, 0 },
        { "fd4e5f6071829a3b4", "toaster-1.0-to-1.1.delta", delta, delta_do,
          "C8HXEf9Dn4NitXES7TFtSuVdcAZBjsyA33b3wx8n+wE=", NULL, 25, 0, 1 },
        { "f9a8b7c6d5e4f3a21", "install-toaster.sh", script, script_do,
          "psW0nHcuUvw3W4EQS6Yy6ANWQYpMuqqCkroNCFmpu/U=", NULL, 31, 0, 0 },
        { "rootKeyPackage", "rootkeypackage-5.json", rootkey, rootkey_do, NULL, NULL, -1, 0, 0 },
    };
    check_files(r.files, r.n_files, want, 4);
    assert_memory_equal(r.doc, BOM "{", 4);
    assert_non_null(strstr(r.doc, "\"note\": \"caf\xC3\xA9 line \\u00e9 \\\"kept\\\"\""));
    assert_string_equal(r.deployment_id, "7f1c0b6e-5a0d-4c3e-9c62-1f9a1c2b3d4e");
    manifest_result_free(&r);
#undef TP
}

static void test_two_service_objects(void **state)
{
    (void)state;
    static const char press_raw[] = "http://CONTOSO.b.nlu.dl.adu.microsoft.com:80/eastus/contoso/"
                                    "9d8c7b6a5f4e3d2c1b0a998877665544/press-4.2.swu";
    static const char press[] = "http://" TOASTER_HOST "/eastus/contoso/"
                                "9d8c7b6a5f4e3d2c1b0a998877665544/press-4.2.swu";
    static const char press_do[] = BASE "/eastus/contoso/9d8c7b6a5f4e3d2c1b0a998877665544/"
                                   "press-4.2.swu?cacheHostOrigin=" TOASTER_HOST;
    static const char oven_raw[] = "https://contosoupdates.blob.core.windows.net/ovens/"
                                   "oven-3.0.swu#fragment";
    static const char oven[] = "https://contosoupdates.blob.core.windows.net/ovens/oven-3.0.swu";
    static const char oven_do[] = BASE "/ovens/oven-3.0.swu?cacheHostOrigin="
                                  "contosoupdates.blob.core.windows.net";
    const struct url_pair pairs[] = { { press_raw, press_do }, { oven_raw, oven_do } };
    struct manifest_result r = rewrite_ok("written/two-services.json", pairs, 2, 2);
    const struct want_file want[] = {
        { "f0a1b2c3d4e5f6071", "press-4.2.swu", press, press_do,
          "iGDHDZDE/fJ8LK6GDgHhqZIYqA4qCWDvK8Sgi00+hiU=", NULL, 21, 0, 0 },
        { "f1122334455667788", "oven-3.0.swu", oven, oven_do,
          "xhsD4Svh0XTDkODyPOIp5/YHS9AKfJbnBM0UrWX714M=", NULL, 20, 0, 0 },
    };
    check_files(r.files, r.n_files, want, 2);

    /* Each file keeps its own deployment: the first one's workflow.id, the
     * second (no workflow) "adu-" + 16 hex of the manifest string's SHA-256. */
    size_t len;
    char *in = load("written/two-services.json", &len);
    json_t *doc = parse_doc(in);
    const json_t *um = json_object_get(json_object_get(json_array_get(
        json_object_get(doc, "groups"), 1), "service"), "updateManifest");
    char hex[65], want_id[32];
    sha256_hex_of(json_string_value(um), json_string_length(um), hex);
    snprintf(want_id, sizeof want_id, "adu-%.16s", hex);
    assert_string_equal(r.deployment_id, "wf-presses-42");
    assert_string_equal(r.files[0].deployment_id, "wf-presses-42");
    assert_string_equal(r.files[1].deployment_id, want_id);
    json_decref(doc);
    free(in);
    manifest_result_free(&r);
}

static void test_firmware_base64_check_value_and_port(void **state)
{
    (void)state;
    static const char url[] = "http://firmware.example.com:8081/plc/plc-2.0.bin";
    static const char rewritten[] = BASE "/plc/plc-2.0.bin?cacheHostOrigin=firmware.example.com:8081";
    const struct url_pair pairs[] = { { url, rewritten } };
    struct manifest_result r = rewrite_ok("written/firmware-base64.json", pairs, 1, 0);
    const struct want_file want[] = {
        { "firmware", "plc-2.0.bin", url, rewritten,
          "5tkiIUKMyvk+UU1brT195dWKm4QDSWhZlukFyVQ44as=", NULL, 17, 0, 0 },
    };
    check_files(r.files, r.n_files, want, 1);
    manifest_result_free(&r);
}

static void test_firmware_crc16_is_no_digest(void **state)
{
    (void)state;
    static const char url[] = "https://contosofirmware.blob.core.windows.net/firmware/plc-1.2.bin";
    static const char rewritten[] = BASE "/firmware/plc-1.2.bin?cacheHostOrigin="
                                    "contosofirmware.blob.core.windows.net";
    const struct url_pair pairs[] = { { url, rewritten } };
    struct manifest_result r = rewrite_ok("written/firmware-crc16.json", pairs, 1, 0);
    const struct want_file want[] = {
        { "firmware", "plc-1.2.bin", url, rewritten, NULL, NULL, -1, 0, 0 },
    };
    check_files(r.files, r.n_files, want, 1);
    manifest_result_free(&r);
}

/* Check values that look almost like a SHA-256 are no digest either. */
static void test_firmware_check_value_shapes(void **state)
{
    (void)state;
    static const struct {
        const char *value;
        const char *hex;        /* NULL: no digest */
    } cases[] = {
        { "3E7A1F0C9D1B55C4A0B8D0C7F00F1A4B8E2B9A6D5C4F3E2D1C0B9A8F7E6D5C4B",
          "3e7a1f0c9d1b55c4a0b8d0c7f00f1a4b8e2b9a6d5c4f3e2d1c0b9a8f7e6d5c4b" },
        { "3e7a1f0c9d1b55c4a0b8d0c7f00f1a4b8e2b9a6d5c4f3e2d1c0b9a8f7e6d5c4", NULL },
        { "3e7a1f0c9d1b55c4a0b8d0c7f00f1a4b8e2b9a6d5c4f3e2d1c0b9a8f7e6d5c4g", NULL },
        { "5tkiIUKMyvk-UU1brT195dWKm4QDSWhZlukFyVQ44as=", NULL },     /* base64url */
        { "5tkiIUKMyvk+UU1brT195dWKm4QDSWhZlukFyVQ44a==", NULL },
        { "", NULL },
        { "checksum-placeholder", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char doc[512];
        struct manifest_result r;
        struct manifest_error err;
        snprintf(doc, sizeof doc, "{\"fwPackageURI\":\"http://a.dl.adu.microsoft.com/x.bin\","
                 "\"fwPackageCheckValue\":\"%s\",\"fwSize\":\"12\"}", cases[i].value);
        if (manifest_rewrite(doc, strlen(doc), &opts, &r, &err) != 0)
            fail_msg("%s: %s", cases[i].value, err.message);
        assert_int_equal(r.n_files, 1);
        assert_int_equal(r.files[0].has_sha256, cases[i].hex != NULL);
        if (cases[i].hex)
            assert_string_equal(r.files[0].sha256_hex, cases[i].hex);
        assert_int_equal(r.files[0].size, -1);  /* a string is no size */
        manifest_result_free(&r);
    }
}

/* ---- URLs ---------------------------------------------------------------- */

/* Rewrites {"fileUrls":{"a":URL}} and checks the origin and DO URLs. */
static void url_case(const char *url_literal, const char *origin, const char *rewritten)
{
    char doc[1024];
    struct manifest_result r;
    struct manifest_error err;
    snprintf(doc, sizeof doc, "{\"fileUrls\":{\"a\":\"%s\"}}", url_literal);
    if (manifest_rewrite(doc, strlen(doc), &opts, &r, &err) != 0)
        fail_msg("%s: %s", url_literal, err.message);
    assert_int_equal(r.n_files, 1);
    assert_string_equal(r.files[0].url, origin);
    assert_string_equal(r.files[0].rewritten, rewritten);
    json_t *j = json_loads(r.doc, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "fileUrls"), "a")),
                        rewritten);
    json_decref(j);
    manifest_result_free(&r);
}

static void test_url_shapes(void **state)
{
    (void)state;
    /* no query, a query, a port, a default port, dot segments */
    url_case("http://i.b.nlu.dl.adu.microsoft.com/p/f.bin",
             "http://i.b.nlu.dl.adu.microsoft.com/p/f.bin",
             BASE "/p/f.bin?cacheHostOrigin=i.b.nlu.dl.adu.microsoft.com");
    url_case("http://i.b.nlu.dl.adu.microsoft.com/p/f.bin?a=1&b=%20",
             "http://i.b.nlu.dl.adu.microsoft.com/p/f.bin?a=1&b=%20",
             BASE "/p/f.bin?a=1&b=%20&cacheHostOrigin=i.b.nlu.dl.adu.microsoft.com");
    url_case("http://127.0.0.1:9000/f.bin", "http://127.0.0.1:9000/f.bin",
             BASE "/f.bin?cacheHostOrigin=127.0.0.1:9000");
    url_case("https://a.blob.core.windows.net:443/c/./d/../f.bin",
             "https://a.blob.core.windows.net/c/f.bin",
             BASE "/c/f.bin?cacheHostOrigin=a.blob.core.windows.net");
    /* characters that need escaping in JSON are written escaped */
    url_case("http://i.dl.adu.microsoft.com/a\\\"b\\\\c.bin",
             "http://i.dl.adu.microsoft.com/a\"b\\c.bin",
             BASE "/a\"b\\c.bin?cacheHostOrigin=i.dl.adu.microsoft.com");
    /* \u escapes are read as what they mean */
    url_case("http:\\/\\/i.dl.adu.microsoft.com\\/caf\\u00e9.bin",
             "http://i.dl.adu.microsoft.com/caf\xC3\xA9.bin",
             BASE "/caf\xC3\xA9.bin?cacheHostOrigin=i.dl.adu.microsoft.com");
}

/* A URL a parent cache already rewrote (DO shape) is unwrapped to its
 * origin and rewritten for this cache's children. */
static void test_do_shape_is_unwrapped(void **state)
{
    (void)state;
    url_case("http://l4-gateway:8080/westus2/x/fw.swu?cacheHostOrigin=i.b.nlu.dl.adu.microsoft.com",
             "http://i.b.nlu.dl.adu.microsoft.com/westus2/x/fw.swu",
             BASE "/westus2/x/fw.swu?cacheHostOrigin=i.b.nlu.dl.adu.microsoft.com");
    url_case("http://l4:8080/f.bin?x=1&cacheHostOrigin=127.0.0.1%3A9000&y=2&cacheHostFallback=0",
             "http://127.0.0.1:9000/f.bin?x=1&y=2",
             BASE "/f.bin?x=1&y=2&cacheHostOrigin=127.0.0.1:9000");
    url_case("http://l4:8080/c/f.bin?sv=1&sig=a%2Bb&cacheHostOrigin=acct.blob.core.windows.net",
             "https://acct.blob.core.windows.net/c/f.bin?sv=1&sig=a%2Bb",
             BASE "/c/f.bin?sv=1&sig=a%2Bb&cacheHostOrigin=acct.blob.core.windows.net");
    /* a default port in cacheHostOrigin is dropped, like one in a URL */
    url_case("http://l4:8080/f.bin?cacheHostOrigin=i.dl.adu.microsoft.com:80",
             "http://i.dl.adu.microsoft.com/f.bin",
             BASE "/f.bin?cacheHostOrigin=i.dl.adu.microsoft.com");
    rewrite_fails("{\"fileUrls\":{\"a\":\"http://l4:8080/f.bin?cacheHostOrigin=evil.example.com\"}}",
                  422, "fileUrls.a", "evil.example.com", "allow-list");
    rewrite_fails("{\"fileUrls\":{\"a\":\"http://l4:8080/f.bin?cacheHostOrigin=a.dl.adu.microsoft.com%2Fx\"}}",
                  422, "fileUrls.a", "cacheHostOrigin");
}

static void test_null_and_empty_urls_are_left_alone(void **state)
{
    (void)state;
    static const char doc[] =
        "{\"fileUrls\":{\"a\":\"\",\"b\":null,\"c\":\"http://i.dl.adu.microsoft.com/c.bin\"},"
        "\"rootKeyPackageUrl\":null,\"firmware\":{\"fwPackageURI\":\"\"}}";
    struct manifest_result r;
    struct manifest_error err;
    assert_int_equal(manifest_rewrite(doc, strlen(doc), &opts, &r, &err), 0);
    assert_int_equal(r.n_files, 1);
    assert_string_equal(r.files[0].id, "c");
    assert_non_null(strstr(r.doc, "{\"a\":\"\",\"b\":null,\"c\":\"" BASE "/c.bin?"));
    manifest_result_free(&r);
    rewrite_fails("{\"fileUrls\":{\"a\":\"\"},\"firmware\":{\"fwPackageURI\":null}}", 422,
                  "no download URL");
}

/* A fileUrls member named like a firmware field (fwPackageURI) or a
 * rootKeyPackageUrl makes one string two downloads in the walk: it is
 * edited once (the fuzzer's heap overflow in assemble: two edits of one
 * span). */
static void test_one_string_two_meanings_is_one_edit(void **state)
{
    (void)state;
    static const char *const docs[] = {
        "{\"fileUrls\":{\"fwPackageURI\":\"http://a.dl.adu.microsoft.com/a.bin\"}}",
        "{\"fileUrls\":{\"rootKeyPackageUrl\":\"http://a.dl.adu.microsoft.com/a.bin\"}}",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        struct manifest_result r;
        struct manifest_error err;
        if (manifest_rewrite(docs[i], strlen(docs[i]), &opts, &r, &err) != 0)
            fail_msg("%s: %s", docs[i], err.message);
        assert_int_equal(r.n_files, 1);
        json_t *j = json_loads(r.doc, 0, NULL);
        assert_non_null(j);
        assert_non_null(strstr(r.doc, BASE "/a.bin?cacheHostOrigin=a.dl.adu.microsoft.com"));
        json_decref(j);
        manifest_result_free(&r);
    }
}

/* ---- a document and its answer: the next layer's view -------------------- */

/* Rewrites doc, then the answer again (as the next layer of a hierarchy
 * does): the same bytes, files and deployment ids. Returns the first
 * result (free it). */
static struct manifest_result rewrite_twice(const char *doc)
{
    struct manifest_result r, again;
    struct manifest_error err;
    if (manifest_rewrite(doc, strlen(doc), &opts, &r, &err) != 0)
        fail_msg("%s: %d %s", doc, err.status, err.message);
    json_t *j = json_loadb(r.doc, r.len, 0, NULL);
    if (!j)
        fail_msg("the answer is not JSON: %s", r.doc);
    json_decref(j);
    if (manifest_rewrite(r.doc, r.len, &opts, &again, &err) != 0)
        fail_msg("%s rewritten again: %d %s", r.doc, err.status, err.message);
    if (again.len != r.len || memcmp(again.doc, r.doc, r.len) != 0)
        fail_msg("rewriting again changed\n%s\ninto\n%s", r.doc, again.doc);
    assert_int_equal(again.n_files, r.n_files);
    for (size_t i = 0; i < r.n_files; i++) {
        assert_string_equal(again.files[i].url, r.files[i].url);
        assert_string_equal(again.files[i].rewritten, r.files[i].rewritten);
        assert_string_equal(again.files[i].deployment_id, r.files[i].deployment_id);
    }
    assert_string_equal(again.deployment_id, r.deployment_id);
    manifest_result_free(&again);
    return r;
}

/* A host too long for a fixed buffer used to be cut in the origin and DO
 * URLs, which then named another host (found by fuzz_manifest). */
static void test_long_host_is_never_cut(void **state)
{
    (void)state;
    char host[1200], url[1300], doc[1400], want[1400];
    for (size_t len = 250; len <= 1000; len += 375) {
        memset(host, 'a', len);
        snprintf(host + len, sizeof host - len, ".dl.adu.microsoft.com");
        snprintf(url, sizeof url, "http://%s/f1.bin?x=1", host);
        snprintf(doc, sizeof doc, "{\"workflow\":{\"id\":\"w\"},\"fileUrls\":{\"f1\":\"%s\"}}",
                 url);
        struct manifest_result r = rewrite_twice(doc);
        assert_string_equal(r.files[0].url, url);
        snprintf(want, sizeof want, BASE "/f1.bin?x=1&cacheHostOrigin=%s", host);
        assert_string_equal(r.files[0].rewritten, want);
        manifest_result_free(&r);
        /* the same host as a parent's cacheHostOrigin, with a port */
        snprintf(doc, sizeof doc, "{\"workflow\":{\"id\":\"w\"},\"fileUrls\":{\"f1\":"
                 "\"http://l4:8080/f1.bin?cacheHostOrigin=%s:80\"}}", host);
        r = rewrite_twice(doc);
        snprintf(url, sizeof url, "http://%s/f1.bin", host);
        assert_string_equal(r.files[0].url, url);
        manifest_result_free(&r);
    }
}

/* Empty query parameters ("a=1&&b=2") stay in the origin URL, and
 * unwrapping its DO URL gives them back: one origin and one key at every
 * layer (found by fuzz_manifest). */
static void test_empty_query_params_are_kept(void **state)
{
    (void)state;
    static const struct { const char *url, *origin, *rewritten; } cases[] = {
        { "http://a.dl.adu.microsoft.com/f.bin?a=1&&b=2",
          "http://a.dl.adu.microsoft.com/f.bin?a=1&&b=2",
          BASE "/f.bin?a=1&&b=2&cacheHostOrigin=a.dl.adu.microsoft.com" },
        { "http://a.dl.adu.microsoft.com/f.bin?&a=1",
          "http://a.dl.adu.microsoft.com/f.bin?&a=1",
          BASE "/f.bin?&a=1&cacheHostOrigin=a.dl.adu.microsoft.com" },
        { "http://a.dl.adu.microsoft.com/f.bin?a=1&",
          "http://a.dl.adu.microsoft.com/f.bin?a=1&",
          BASE "/f.bin?a=1&&cacheHostOrigin=a.dl.adu.microsoft.com" },
        { "http://a.dl.adu.microsoft.com/f.bin?&",
          "http://a.dl.adu.microsoft.com/f.bin?&",
          BASE "/f.bin?&&cacheHostOrigin=a.dl.adu.microsoft.com" },
        /* unwrapped from a parent's DO URL */
        { "http://l4:8080/f.bin?a=1&&b=2&cacheHostOrigin=a.dl.adu.microsoft.com",
          "http://a.dl.adu.microsoft.com/f.bin?a=1&&b=2",
          BASE "/f.bin?a=1&&b=2&cacheHostOrigin=a.dl.adu.microsoft.com" },
        { "http://l4:8080/f.bin?a=1&&cacheHostOrigin=a.dl.adu.microsoft.com",
          "http://a.dl.adu.microsoft.com/f.bin?a=1&",
          BASE "/f.bin?a=1&&cacheHostOrigin=a.dl.adu.microsoft.com" },
        { "http://l4:8080/f.bin?cacheHostOrigin=a.dl.adu.microsoft.com&&a=1",
          "http://a.dl.adu.microsoft.com/f.bin?&a=1",
          BASE "/f.bin?&a=1&cacheHostOrigin=a.dl.adu.microsoft.com" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char doc[512];
        snprintf(doc, sizeof doc, "{\"workflow\":{\"id\":\"w\"},\"fileUrls\":{\"f1\":\"%s\"}}",
                 cases[i].url);
        struct manifest_result r = rewrite_twice(doc);
        if (strcmp(r.files[0].url, cases[i].origin) != 0 ||
            strcmp(r.files[0].rewritten, cases[i].rewritten) != 0)
            fail_msg("%s: origin %s, rewritten %s", cases[i].url, r.files[0].url,
                     r.files[0].rewritten);
        manifest_result_free(&r);
    }
}

/* A host that is no host name once percent-decoded is refused (422, the
 * field named): bytes that are not UTF-8 would make the answer invalid
 * JSON, and a '%' would be decoded again by the next layer into another
 * host (found by fuzz_manifest). */
static void test_host_not_a_name_once_decoded_is_422(void **state)
{
    (void)state;
    rewrite_fails("{\"fileUrls\":{\"f1\":\"http://gw:8080/a.bin?"
                  "cacheHostOrigin=x%e2.dl.adu.microsoft.com\"}}", 422, "fileUrls.f1",
                  "cacheHostOrigin", "not a host name");
    rewrite_fails("{\"fileUrls\":{\"f1\":\"http://x%e2.dl.adu.microsoft.com/a.bin\"}}", 422,
                  "fileUrls.f1", "not a host name");
    rewrite_fails("{\"firmware\":{\"fwPackageURI\":\"http://x%c0%af.dl.adu.microsoft.com/a\"}}",
                  422, "firmware.fwPackageURI", "not a host name");
    rewrite_fails("{\"rootKeyPackageUrl\":\"http://x%ed%a0%80.dl.adu.microsoft.com/a\"}", 422,
                  "rootKeyPackageUrl", "not a host name");
    rewrite_fails("{\"fileUrls\":{\"f1\":\"http://a%2541.dl.adu.microsoft.com/a.bin\"}}", 422,
                  "fileUrls.f1", "not a host name");
    rewrite_fails("{\"fileUrls\":{\"f1\":\"http://gw:8080/a.bin?"
                  "cacheHostOrigin=a%2541.dl.adu.microsoft.com\"}}", 422, "fileUrls.f1",
                  "cacheHostOrigin");
    /* UTF-8 spelt with percent-encoding is a name JSON can carry */
    struct manifest_result r = rewrite_twice(
        "{\"workflow\":{\"id\":\"w\"},"
        "\"fileUrls\":{\"f1\":\"http://x%c3%a9.dl.adu.microsoft.com/a.bin\"}}");
    assert_string_equal(r.files[0].url, "http://x\xc3\xa9.dl.adu.microsoft.com/a.bin");
    manifest_result_free(&r);
    /* an encoded unreserved character is the character */
    r = rewrite_twice("{\"workflow\":{\"id\":\"w\"},"
                      "\"fileUrls\":{\"f1\":\"http://a%41.dl.adu.microsoft.com/a.bin\"}}");
    assert_string_equal(r.files[0].url, "http://aa.dl.adu.microsoft.com/a.bin");
    manifest_result_free(&r);
}

/* A deployment id hashed from a document's text is the same on the
 * document and on its rewritten answer (each layer derives the same id):
 * every download URL in the hashed object counts as its origin URL, its
 * own and those of objects nested in it (found by fuzz_manifest). */
static void test_adu_id_from_text_is_the_same_at_every_layer(void **state)
{
    (void)state;
    /* ADU services without workflow.id or updateManifest */
    static const char *const docs[] = {
        "{\"fileUrls\":{\"f1\":\"http://i.dl.adu.microsoft.com/f1.bin\"}}",
        "{\"fileUrls\":{\"f1\":\"http://i.dl.adu.microsoft.com/f1.bin\","
        "\"f2\":\"http://i.dl.adu.microsoft.com/f2.bin\"},"
        "\"rootKeyPackageUrl\":\"http://i.dl.adu.microsoft.com/rk.json\"}",
        "{\"rootKeyPackageUrl\":\"http://i.dl.adu.microsoft.com/rk.json\",\"x\":"
        "{\"firmware\":{\"fwPackageURI\":\"http://i.dl.adu.microsoft.com/fw.bin\"}}}",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        struct manifest_result r = rewrite_twice(docs[i]);
        assert_memory_equal(r.deployment_id, "adu-", 4);
        manifest_result_free(&r);
    }
    /* the same service, already rewritten by a parent: the same id */
    struct manifest_result a = rewrite_twice(docs[0]), b = rewrite_twice(
        "{\"fileUrls\":{\"f1\":\"http://l4:8080/f1.bin?cacheHostOrigin=i.dl.adu.microsoft.com\"}}");
    assert_string_equal(a.deployment_id, b.deployment_id);
    manifest_result_free(&a);
    manifest_result_free(&b);
}

/* The same for a firmware section that holds other URLs than its own. */
static void test_firmware_id_with_nested_urls_is_the_same_at_every_layer(void **state)
{
    (void)state;
    static const char *const docs[] = {
        "{\"firmware\":{\"fwPackageURI\":\"http://a.dl.adu.microsoft.com/a.bin\","
        "\"x\":{\"fwPackageURI\":\"http://a.dl.adu.microsoft.com/b.bin\"}}}",
        "{\"firmware\":{\"fwPackageURI\":\"http://a.dl.adu.microsoft.com/a.bin\","
        "\"x\":{\"fileUrls\":{\"f\":\"http://a.dl.adu.microsoft.com/c.bin\"}}}}",
        "[{\"fwPackageURI\":\"http://a.dl.adu.microsoft.com/a.bin\",\"n\":[{\"fwPackageURI\":"
        "\"http://a.dl.adu.microsoft.com/b.bin\",\"fwVersion\":\"2\"}]}]",
    };
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        struct manifest_result r = rewrite_twice(docs[i]);
        assert_memory_equal(r.deployment_id, "fw-", 3);
        manifest_result_free(&r);
    }
    /* A firmware section with only its own URL keeps the id it had:
     * "fw-" + 16 hex of the SHA-256 of its canonical text. */
    static const char fw[] = "{\"firmware\":{\"fwVersion\":\"1.0\",\"fwPackageURI\":"
                             "\"http://l4:8080/f.bin?cacheHostOrigin=a.dl.adu.microsoft.com\"}}";
    static const char canon[] = "{\"fwPackageURI\":\"http://a.dl.adu.microsoft.com/f.bin\","
                                "\"fwVersion\":\"1.0\"}";
    char hex[65], want[32];
    sha256_hex_of(canon, strlen(canon), hex);
    snprintf(want, sizeof want, "fw-%.16s", hex);
    struct manifest_result r = rewrite_twice(fw);
    assert_string_equal(r.deployment_id, want);
    manifest_result_free(&r);
    /* Nested sections keep their own ids, which differ from the outer one. */
    r = rewrite_twice(docs[0]);
    assert_int_equal(r.n_files, 2);
    assert_string_equal(r.files[0].deployment_id, r.deployment_id);
    assert_string_not_equal(r.files[1].deployment_id, r.deployment_id);
    manifest_result_free(&r);
}

/* ---- detached manifests and update manifests ------------------------------ */

static void test_detached_manifest_join(void **state)
{
    (void)state;
    struct manifest_result r = rewrite_deployment_fixture();
    struct manifest_file *files = NULL;
    struct manifest_error err;
    size_t n = 99, len;
    char *det = load("written/contoso-virtual-motors-1.1-updatemanifest.json", &len);
    char u[2][300], d[2][300];
    const char *paths[2] = { p_script, p_motor };
    for (int i = 0; i < 2; i++) {
        snprintf(u[i], sizeof u[i], "http://%s%s", ADU_HOST, paths[i]);
        snprintf(d[i], sizeof d[i], "%s%s?cacheHostOrigin=%s", BASE, paths[i], ADU_HOST);
    }
    if (manifest_files_from_update_manifest(det, len, r.files, r.n_files, &files, &n, &err))
        fail_msg("%d %s", err.status, err.message);
    const struct want_file want[] = {
        { "f13b5435aab7c18da", "contoso-motor-installscript.sh", u[0], d[0],
          "a+ehSNaTU7sAkpToFdKtlvJm0zokVxxgKe9HsQ0QzG8=", NULL, 29, 0, 0 },
        { "f2c5d1f3b0295db0f", "motor-firmware-1.1.json", u[1], d[1],
          "FbSa+cPGuaLwWxx1rnq55y887fJfXCrcbmsj+Z0DL6A=", NULL, 19, 0, 0 },
    };
    check_files(files, n, want, 2);
    assert_string_equal(files[0].deployment_id, "e99c69ca-3188-43a3-80af-310616c7751d");
    manifest_files_free(files, n);

    /* The same manifest wrapped as {"updateManifest": "..."} reads alike. */
    json_t *wrap = json_pack("{s:s}", "updateManifest", det);
    char *wrapped = json_dumps(wrap, 0);
    assert_int_equal(manifest_files_from_update_manifest(wrapped, strlen(wrapped), r.files,
                                                         r.n_files, &files, &n, &err), 0);
    check_files(files, n, want, 2);
    manifest_files_free(files, n);
    free(wrapped);
    json_decref(wrap);
    free(det);
    manifest_result_free(&r);
}

/* A detachedManifestFileId that the files map does not list still flags
 * its fileUrls entry. */
static void test_detached_id_only_in_a_step(void **state)
{
    (void)state;
    static const char doc[] =
        "{\"updateManifest\":\"{\\\"files\\\":{},\\\"instructions\\\":{\\\"steps\\\":[{"
        "\\\"type\\\":\\\"reference\\\",\\\"detachedManifestFileId\\\":\\\"d1\\\"}]}}\","
        "\"fileUrls\":{\"f2\":\"http://i.dl.adu.microsoft.com/f2.bin\","
        "\"d1\":\"http://i.dl.adu.microsoft.com/d1.json\"}}";
    struct manifest_result r;
    struct manifest_error err;
    if (manifest_rewrite(doc, strlen(doc), &opts, &r, &err) != 0)
        fail_msg("%s", err.message);
    assert_int_equal(r.n_files, 2);
    assert_string_equal(r.files[0].id, "f2");
    assert_int_equal(r.files[0].detached_manifest, 0);
    assert_string_equal(r.files[1].id, "d1");
    assert_int_equal(r.files[1].detached_manifest, 1);
    assert_int_equal(r.files[1].has_sha256, 0);
    manifest_result_free(&r);
}

/* Keys written with escapes are the keys they mean, for the walk and for
 * the scan that places the rewritten URLs. */
static void test_escaped_keys(void **state)
{
    (void)state;
    static const char doc[] =
        "{\"a\\\"b\":[1,{\"x\":\"}\"}],\"file\\u0055rls\":{\"\\u00e9t\\u00e9\":"
        "\"http://i.dl.adu.microsoft.com/e.bin\"},\"z\":\"http://i.dl.adu.microsoft.com/e.bin\"}";
    static const char want[] =
        "{\"a\\\"b\":[1,{\"x\":\"}\"}],\"file\\u0055rls\":{\"\\u00e9t\\u00e9\":"
        "\"" BASE "/e.bin?cacheHostOrigin=i.dl.adu.microsoft.com\"},"
        "\"z\":\"http://i.dl.adu.microsoft.com/e.bin\"}";
    struct manifest_result r;
    struct manifest_error err;
    if (manifest_rewrite(doc, strlen(doc), &opts, &r, &err) != 0)
        fail_msg("%s", err.message);
    assert_string_equal(r.doc, want);
    assert_int_equal(r.n_files, 1);
    assert_string_equal(r.files[0].id, "\xC3\xA9t\xC3\xA9");
    manifest_result_free(&r);
}

/* The v5 template: relatedFiles flagged; placeholder hashes are no
 * digest; a file with no known URL is left out. */
static void test_update_manifest_v5_related_files(void **state)
{
    (void)state;
    struct manifest_file known[] = {
        { .id = "DELTA_UPDATE_FILE_ID", .name = "x", .url = "http://o/delta",
          .rewritten = BASE "/delta?cacheHostOrigin=o", .deployment_id = "dep", .size = -1 },
        { .id = "TARGET_UPDATE_FILE_ID", .name = "y", .url = "http://o/target",
          .rewritten = BASE "/target?cacheHostOrigin=o", .deployment_id = "dep", .size = -1 },
        { .id = "OTHER", .name = "z", .url = "http://o/other", .rewritten = "r",
          .deployment_id = "dep", .size = -1 },
    };
    struct manifest_file *files;
    struct manifest_error err;
    size_t n, len;
    char *um = load("adu/update-manifest-v5-related-files-template.json", &len);
    assert_int_equal(manifest_files_from_update_manifest(um, len, known, 3, &files, &n, &err), 0);
    const struct want_file want[] = {
        { "TARGET_UPDATE_FILE_ID", "target_update.swu", "http://o/target",
          BASE "/target?cacheHostOrigin=o", NULL, NULL, 98765, 0, 0 },
        { "DELTA_UPDATE_FILE_ID", "DELTA_UPDATE_FILE_NAME", "http://o/delta",
          BASE "/delta?cacheHostOrigin=o", NULL, NULL, 1234, 0, 1 },
    };
    check_files(files, n, want, 2);
    manifest_files_free(files, n);
    free(um);
}

/* A 2.0 import manifest (byte-order mark, `files` array, `filename`):
 * joined by name. */
static void test_update_manifest_v2_array_by_name(void **state)
{
    (void)state;
    struct manifest_file known[] = {
        { .id = "f1", .name = "libcurl4-doc-apt-manifest.json", .url = "http://o/l.json",
          .rewritten = "r", .deployment_id = "dep", .size = -1 },
    };
    struct manifest_file *files;
    struct manifest_error err;
    size_t n, len;
    char *um = load("adu/import-manifest-v4-apt.json", &len);
    assert_int_equal(manifest_files_from_update_manifest(um, len, known, 1, &files, &n, &err), 0);
    const struct want_file want[] = {
        { "f1", "libcurl4-doc-apt-manifest.json", "http://o/l.json", "r",
          "G9gVz4WqTRu/cXfRjNMbpENxEuAXqlT0E1vLOgaMICw=", NULL, 154, 0, 0 },
    };
    check_files(files, n, want, 1);
    manifest_files_free(files, n);
    free(um);
}

static void test_update_manifest_errors(void **state)
{
    (void)state;
    struct manifest_file *files;
    struct manifest_error err;
    size_t n, len;
    char *apt = load("adu/apt-manifest.json", &len);
    assert_int_equal(manifest_files_from_update_manifest(apt, len, NULL, 0, &files, &n, &err), -1);
    assert_int_equal(err.status, 422);
    assert_non_null(strstr(err.message, "files"));
    assert_null(files);
    free(apt);
    assert_int_equal(manifest_files_from_update_manifest("{\"files\":", 9, NULL, 0, &files, &n,
                                                         &err), -1);
    assert_int_equal(err.status, 400);
    assert_non_null(strstr(err.message, "line 1"));
    assert_int_equal(manifest_files_from_update_manifest("<x/>", 4, NULL, 0, &files, &n, &err),
                     -1);
    assert_int_equal(err.status, 415);
}

/* ---- bad input ----------------------------------------------------------- */

static void test_malformed_json_names_line_and_column(void **state)
{
    (void)state;
    rewrite_fails("{\n  \"fileUrls\": {\n    \"a\": \"http://i.dl.adu.microsoft.com/a\",\n  }\n}",
                  400, "not valid JSON", "line 4, column 3");
    rewrite_fails("{\"fileUrls\": {\"a\": \"http://i.dl.adu.microsoft.com/a\"}", 400,
                  "line 1");
    /* a byte-order mark does not shift the column */
    rewrite_fails(BOM "{\"a\": tru}", 400, "line 1, column 9: invalid token near 'tru'");
    rewrite_fails("{\"a\": tru}", 400, "line 1, column 9: invalid token near 'tru'");
    rewrite_fails("{\"fileUrls\":{\"a\":\"http://i.dl.adu.microsoft.com/a\"},\"fileUrls\":{}}",
                  400, "duplicate");
    rewrite_fails("   \n\t", 400, "empty");
    rewrite_fails_n("", 0, 400, "empty", NULL);
}

static void test_not_json_is_415(void **state)
{
    (void)state;
    rewrite_fails("<html><body>502 Bad Gateway</body></html>", 415, "'<'");
    rewrite_fails("<?xml version=\"1.0\"?><a/>", 415, "not JSON");
    rewrite_fails_n("\x7F" "ELF\x02\x01\x01\0\0\0", 10, 415, "not JSON", NULL);
    rewrite_fails_n("{\"a\":\"\0\"}", 9, 415, "NUL", NULL);
    rewrite_fails_n("\xFF\xFE{\0}\0", 6, 415, "UTF-16", NULL);
    rewrite_fails("fileUrls=http://x", 415, "'f'");
}

static void test_no_download_url_is_422(void **state)
{
    (void)state;
    static const char *const files[] = {
        "adu/apt-manifest.json", "adu/import-manifest-v4-apt.json",
        "adu/update-manifest-v5-related-files-template.json",
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        size_t len;
        char *in = load(files[i], &len);
        rewrite_fails_n(in, len, 422, "no download URL", "fileUrls", "fwPackageURI", NULL);
        free(in);
    }
    rewrite_fails("{\"workflow\":{\"action\":255,\"id\":\"x\"}}", 422, "no download URL");
    rewrite_fails("[1, 2, \"http://i.dl.adu.microsoft.com/a\"]", 422, "no download URL");
    rewrite_fails("\"http://i.dl.adu.microsoft.com/a\"", 422, "no download URL");
}

static void test_bad_update_manifest_names_its_path(void **state)
{
    (void)state;
    rewrite_fails("{\"properties\":{\"desired\":{\"deviceUpdate\":{\"service\":{"
                  "\"updateManifest\":\"{\\\"files\\\":\",\"fileUrls\":{\"a\":"
                  "\"http://i.dl.adu.microsoft.com/a\"}}}}}}", 400,
                  "properties.desired.deviceUpdate.service.updateManifest is not valid JSON",
                  "line 1");
    rewrite_fails("{\"deviceUpdate\":{\"service\":{\"updateManifest\":\"[1]\","
                  "\"fileUrls\":{\"a\":\"http://i.dl.adu.microsoft.com/a\"}}}}", 422,
                  "deviceUpdate.service.updateManifest is not a JSON object");
    rewrite_fails("{\"s\":[{\"updateManifest\":{\"files\":{}},\"fileUrls\":{}}]}", 422,
                  "s[0].updateManifest is not a string");
}

static void test_disallowed_and_unusable_urls_are_422(void **state)
{
    (void)state;
    rewrite_fails("{\"deviceUpdate\":{\"service\":{\"fileUrls\":{\"f1\":"
                  "\"http://evil.example.com/x.bin?sig=SECRET\"}}}}", 422,
                  "deviceUpdate.service.fileUrls.f1", "http://evil.example.com:80",
                  "http://evil.example.com/x.bin", "allow-list");
    struct manifest_result r;
    struct manifest_error err;
    static const char sas[] = "{\"fileUrls\":{\"f1\":\"http://evil.example.com/x.bin?sig=SECRET\"}}";
    assert_int_equal(manifest_rewrite(sas, strlen(sas), &opts, &r, &err), -1);
    assert_null(strstr(err.message, "SECRET"));     /* signatures stay out of messages */
    /* the right host with the wrong scheme or port */
    rewrite_fails("{\"fileUrls\":{\"f1\":\"http://a.blob.core.windows.net/x\"}}", 422,
                  "http://a.blob.core.windows.net:80");
    rewrite_fails("{\"fileUrls\":{\"f1\":\"http://127.0.0.1:9001/x\"}}", 422, "127.0.0.1:9001");
    rewrite_fails("{\"firmware\":{\"fwPackageURI\":\"ftp://i.dl.adu.microsoft.com/x\"}}", 422,
                  "firmware.fwPackageURI", "not an http or https URL");
    rewrite_fails("{\"rootKeyPackageUrl\":\"not a url\"}", 422, "rootKeyPackageUrl",
                  "not a URL");
    rewrite_fails("{\"fileUrls\":{\"f1\":42}}", 422, "fileUrls.f1 is not a string");
    rewrite_fails("{\"fileUrls\":[\"http://i.dl.adu.microsoft.com/a\"]}", 422,
                  "fileUrls is not an object");
    /* one bad URL refuses the whole document */
    rewrite_fails("{\"fileUrls\":{\"ok\":\"http://i.dl.adu.microsoft.com/a\","
                  "\"bad\":\"http://evil.example.com/b\"}}", 422, "fileUrls.bad");
}

static void test_over_max_bytes_is_413(void **state)
{
    (void)state;
    size_t len = opts.max_bytes + 1;
    char *big = malloc(len + 1);
    assert_non_null(big);
    memset(big, ' ', len);
    big[0] = '{';
    big[len - 1] = '}';
    big[len] = '\0';
    rewrite_fails_n(big, len, 413, "manifest_max_bytes", NULL);
    free(big);
}

/* ---- the cache base ------------------------------------------------------ */

static void test_cache_base(void **state)
{
    (void)state;
    char why[256];
    char *b = manifest_cache_base("http://GW:8080/", why, sizeof why);
    assert_non_null(b);
    assert_string_equal(b, "http://gw:8080");
    free(b);
    b = manifest_cache_base("https://gw", why, sizeof why);
    assert_string_equal(b, "https://gw");
    free(b);
    static const char *const bad[] = {
        "gw:8080", "http://gw:8080/edge", "http://gw:8080/?a=1", "ftp://gw",
        "http://user@gw:8080", "", "http://",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        b = manifest_cache_base(bad[i], why, sizeof why);
        if (b)
            fail_msg("%s accepted as %s", bad[i], b);
        assert_true(why[0] != '\0');
    }
}

/* A missing allow-list or base is a caller's bug, reported, not a crash. */
static void test_missing_options(void **state)
{
    (void)state;
    struct manifest_opts o = opts;
    struct manifest_result r;
    struct manifest_error err;
    o.cache_base = NULL;
    assert_int_equal(manifest_rewrite("{}", 2, &o, &r, &err), -1);
    assert_int_equal(err.status, 500);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deployment_fixture),
        cmocka_unit_test(test_firmware_fixture),
        cmocka_unit_test(test_firmware_deployment_id_is_canonical),
        cmocka_unit_test(test_twin_with_delta_bom_query_port_escapes),
        cmocka_unit_test(test_two_service_objects),
        cmocka_unit_test(test_firmware_base64_check_value_and_port),
        cmocka_unit_test(test_firmware_crc16_is_no_digest),
        cmocka_unit_test(test_firmware_check_value_shapes),
        cmocka_unit_test(test_url_shapes),
        cmocka_unit_test(test_do_shape_is_unwrapped),
        cmocka_unit_test(test_null_and_empty_urls_are_left_alone),
        cmocka_unit_test(test_one_string_two_meanings_is_one_edit),
        cmocka_unit_test(test_long_host_is_never_cut),
        cmocka_unit_test(test_empty_query_params_are_kept),
        cmocka_unit_test(test_host_not_a_name_once_decoded_is_422),
        cmocka_unit_test(test_adu_id_from_text_is_the_same_at_every_layer),
        cmocka_unit_test(test_firmware_id_with_nested_urls_is_the_same_at_every_layer),
        cmocka_unit_test(test_detached_manifest_join),
        cmocka_unit_test(test_detached_id_only_in_a_step),
        cmocka_unit_test(test_escaped_keys),
        cmocka_unit_test(test_update_manifest_v5_related_files),
        cmocka_unit_test(test_update_manifest_v2_array_by_name),
        cmocka_unit_test(test_update_manifest_errors),
        cmocka_unit_test(test_malformed_json_names_line_and_column),
        cmocka_unit_test(test_not_json_is_415),
        cmocka_unit_test(test_no_download_url_is_422),
        cmocka_unit_test(test_bad_update_manifest_names_its_path),
        cmocka_unit_test(test_disallowed_and_unusable_urls_are_422),
        cmocka_unit_test(test_over_max_bytes_is_413),
        cmocka_unit_test(test_cache_base),
        cmocka_unit_test(test_missing_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
