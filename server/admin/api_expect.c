/*
 * POST /api/v1/expectations — register what the bytes behind URLs must be.
 *
 *   [{"url": "http://host/path", "sha256": "<64 hex or 44 base64>", "size": 123}, ...]
 *   or {"expectations": [...]}
 *
 * Each URL becomes its cache key (the same key a request for it gets), so
 * every later fill of that key is checked against the SHA-256 and size, and
 * a key whose SHA-256 the store already holds is a hit by hash. The rows are
 * written in one transaction on the thread pool. A bad item rejects the whole
 * request (400, naming the item); nothing is registered from it.
 */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/catalog.h"
#include "cache/digest.h"
#include "cache/index.h"
#include "cache/route.h"
#include "server/admin/api.h"

struct expect_job {
    struct admin_job base;          /* first: the job is freed through it */
    struct index_expectation *items;
    char (*sha)[DIGEST_SHA256_HEX];
    size_t n;
    int rc;
};

static void expect_destroy(struct admin_job *j)
{
    struct expect_job *x = (struct expect_job *)j;
    for (size_t i = 0; i < x->n; i++)
        free((char *)x->items[i].key);
    free(x->items);
    free(x->sha);
    free(x);
}

static void expect_run(struct admin_job *j)
{
    struct expect_job *x = (struct expect_job *)j;
    x->rc = index_expect_put(j->e->index, x->items, x->n);
}

static void expect_finish(struct admin_job *j)
{
    struct expect_job *x = (struct expect_job *)j;
    char text[64];
    if (x->rc == 0) {
        catalog_expect_all(j->e->catalog, x->items, x->n);
        j->e->stats.expectations_registered += x->n;
    }
    if (!j->req)
        return;
    if (x->rc != 0) {
        admin_answer(j->req, 500, "text/plain", "the index refused the expectations (see the log)\n");
        return;
    }
    snprintf(text, sizeof text, "{\"registered\": %zu}\n", x->n);
    admin_answer(j->req, 200, "application/json", text);
}

/* sha256 given as hex (any case) or standard base64: lower-case hex. */
static int parse_sha(const char *s, char out[DIGEST_SHA256_HEX])
{
    unsigned char bin[DIGEST_SHA256_LEN];
    if (digest_from_hex(s, bin, sizeof bin) != 0 && digest_from_base64(s, bin, sizeof bin) != 0)
        return -1;
    digest_hex(bin, sizeof bin, out);
    return 0;
}

static int parse_item(json_t *it, size_t i, struct expect_job *x, char *why, size_t whylen)
{
    json_t *url = json_object_get(it, "url"), *sha = json_object_get(it, "sha256");
    json_t *size = json_object_get(it, "size");
    if (!json_is_object(it) || !json_is_string(url) || !json_is_string(sha)) {
        snprintf(why, whylen, "item %zu: needs \"url\" and \"sha256\" strings", i);
        return -1;
    }
    char *key = route_key_for_url(json_string_value(url));
    if (!key) {
        snprintf(why, whylen, "item %zu: url '%.200s' is not an http or https URL", i,
                 json_string_value(url));
        return -1;
    }
    x->items[i].key = key;
    if (parse_sha(json_string_value(sha), x->sha[i]) != 0) {
        snprintf(why, whylen, "item %zu: sha256 '%.100s' is neither 64 hex nor 44 base64 "
                 "characters", i, json_string_value(sha));
        return -1;
    }
    x->items[i].sha256 = x->sha[i];
    x->items[i].size = -1;
    if (size && (!json_is_integer(size) || json_integer_value(size) < 0)) {
        snprintf(why, whylen, "item %zu: size must be a non-negative integer", i);
        return -1;
    }
    if (size)
        x->items[i].size = (int64_t)json_integer_value(size);
    x->items[i].source = "api";
    return 0;
}

static enum MHD_Result bad_request(struct admin_req *req, const char *why)
{
    char text[600];
    snprintf(text, sizeof text, "%s\n", why);
    return admin_reply_text(req->conn, 400, text);
}

enum MHD_Result api_expectations(struct admin_req *req)
{
    char why[512];
    enum MHD_Result bad;
    json_t *root = admin_body_json(req, &bad);
    if (!root)
        return bad;
    json_t *list = json_is_object(root) ? json_object_get(root, "expectations") : root;
    if (!json_is_array(list)) {
        json_decref(root);
        return bad_request(req, "expected a JSON array of {\"url\", \"sha256\", \"size\"} "
                                "objects, or {\"expectations\": [...]}");
    }
    struct expect_job *x = calloc(1, sizeof *x);
    size_t n = json_array_size(list);
    if (!x || !(x->items = calloc(n ? n : 1, sizeof *x->items))
        || !(x->sha = calloc(n ? n : 1, sizeof *x->sha))) {
        if (x)
            free(x->items);
        free(x);
        json_decref(root);
        return admin_reply_text(req->conn, 500, "out of memory\n");
    }
    x->base.run = expect_run;
    x->base.finish = expect_finish;
    x->base.destroy = expect_destroy;
    for (size_t i = 0; i < n; i++, x->n = i)
        if (parse_item(json_array_get(list, i), i, x, why, sizeof why) != 0) {
            x->n = i + 1;           /* item i's key, if any, is freed too */
            json_decref(root);
            expect_destroy(&x->base);
            return bad_request(req, why);
        }
    x->n = n;
    json_decref(root);
    return admin_job_start(req, &x->base);
}
