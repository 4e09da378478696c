/*
 * Deployments on the control plane:
 *   POST /api/v1/prefetch              a list of URLs (or a manifest: api_rewrite.c)
 *   DELETE /api/v1/deployments/{id}    unpin and forget a deployment
 * and the "deployments" part of /status.
 *
 * A prefetched URL must be on the allow-list (422 naming it otherwise): the
 * control plane is no way around it.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/digest.h"
#include "cache/prefetch.h"
#include "cache/route.h"
#include "server/admin/api.h"

int api_url_allowed(const struct cfg *cfg, const char *url, char *why, size_t whylen)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    int ok = 0;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK
        && curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK
        && curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK
        && curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
        ok = route_allow_match(cfg, scheme, host, (unsigned)atoi(port)) != NULL;
        if (!ok)
            snprintf(why, whylen, "%.300s: origin %s://%s:%s is not on the allow-list "
                     "(config key: allow)", url, scheme, host, port);
    } else {
        snprintf(why, whylen, "%.300s is not an http or https URL", url);
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return ok;
}

/* A deployment id for a list of keys: stable for the same list. */
static void list_id(struct prefetch_item *items, size_t n, char out[40])
{
    struct digest d = {0};
    unsigned char bin[DIGEST_SHA256_LEN];
    char hex[DIGEST_SHA256_HEX];
    digest_init(&d);
    for (size_t i = 0; i < n; i++)
        digest_update(&d, items[i].key, strlen(items[i].key) + 1);
    digest_final(&d, bin);
    digest_free(&d);
    digest_hex(bin, sizeof bin, hex);
    snprintf(out, 40, "urls-%.16s", hex);
}

static enum MHD_Result answer_json(struct admin_req *req, unsigned status, json_t *o)
{
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text)
        return admin_reply_text(req->conn, 500, "out of memory\n");
    return admin_reply_json(req->conn, status, text);
}

static enum MHD_Result fail(struct admin_req *req, unsigned status, const char *why)
{
    char text[700];
    snprintf(text, sizeof text, "%s\n", why);
    return admin_reply_text(req->conn, status, text);
}

/* POST /api/v1/prefetch with ["url", ...] or {"urls": [...]}. */
enum MHD_Result api_prefetch_urls(struct admin_req *req, json_t *list)
{
    struct edge *e = req->e;
    size_t n = json_array_size(list);
    char why[512], id[40];
    struct prefetch_item *items = calloc(n ? n : 1, sizeof *items);
    if (!items)
        return fail(req, 500, "out of memory");
    enum MHD_Result ret;
    size_t i = 0;
    for (; i < n; i++) {
        const char *url = json_string_value(json_array_get(list, i));
        if (!url) {
            snprintf(why, sizeof why, "item %zu is not a URL string", i);
            ret = fail(req, 400, why);
            goto out;
        }
        if (!api_url_allowed(e->cfg, url, why, sizeof why)) {
            ret = fail(req, 422, why);
            goto out;
        }
        items[i] = (struct prefetch_item){.key = route_key_for_url(url), .url = url, .size = -1};
        if (!items[i].key) {
            ret = fail(req, 500, "out of memory");
            goto out;
        }
    }
    if (n == 0) {
        ret = fail(req, 422, "no URL to prefetch");
        goto out;
    }
    list_id(items, n, id);
    if (prefetch_add(e->prefetch, id, items, n, 1) != 0) {
        ret = fail(req, 500, "out of memory");
        goto out;
    }
    if (!forward_from_peer(req->conn)) {
        forward_to_peers(e, "/api/v1/prefetch", req->body, req->len);
        forward_to_parent(e, "/api/v1/prefetch", req->body, req->len);
    }
    ret = answer_json(req, 202, json_pack("{s:s, s:I}", "deployment", id, "files", (json_int_t)n));
out:
    for (size_t k = 0; k < n && k <= i; k++)
        free((char *)items[k].key);
    free(items);
    return ret;
}

enum MHD_Result api_deployment_delete(struct admin_req *req, const char *id)
{
    if (!id[0] || prefetch_remove(req->e->prefetch, id) != 0) {
        char why[300];
        snprintf(why, sizeof why, "no deployment '%.200s' (see /status)", id);
        return fail(req, 404, why);
    }
    return answer_json(req, 200, json_pack("{s:s, s:b}", "deployment", id, "removed", 1));
}

static void deployment_json(void *ctx, const char *id, int64_t created, int pinned,
                            const struct prefetch_file_info *files, size_t n)
{
    json_t *list = json_array(), *o;
    size_t done = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        const struct prefetch_file_info *f = &files[i];
        o = json_pack("{s:s, s:s, s:s, s:I}", "name", f->name, "url", f->url, "state",
                      prefetch_state_name(f->state), "bytes", (json_int_t)f->bytes);
        json_object_set_new(o, "total", f->total ? json_integer((json_int_t)f->total) : json_null());
        if (f->error)
            json_object_set_new(o, "error", json_string(f->error));
        if (f->sha256)
            json_object_set_new(o, "sha256", json_string(f->sha256));
        json_array_append_new(list, o);
        done += f->state == PREFETCH_DONE;
        failed += f->state == PREFETCH_FAILED;
    }
    o = json_pack("{s:s, s:I, s:b, s:I, s:I, s:I, s:o}", "id", id, "created", (json_int_t)created,
                  "pinned", pinned, "files_total", (json_int_t)n, "files_done", (json_int_t)done,
                  "files_failed", (json_int_t)failed, "files", list);
    json_array_append_new(ctx, o);
}

json_t *api_deployments_json(struct edge *e)
{
    json_t *list = json_array();
    if (e->prefetch)
        prefetch_foreach(e->prefetch, deployment_json, list);
    return list;
}

/* POST /api/v1/prefetch: a list of URLs here; a manifest goes to the rewrite
 * code (which registers its hashes first). */
enum MHD_Result api_prefetch(struct admin_req *req)
{
    enum MHD_Result bad;
    json_t *root = admin_body_json(req, &bad);
    if (!root)
        return bad;
    json_t *list = json_is_object(root) ? json_object_get(root, "urls") : root;
    enum MHD_Result ret;
    if (json_is_array(list) && json_is_string(json_array_get(list, 0)))
        ret = api_prefetch_urls(req, list);
    else
        ret = api_manifest(req, 1, 0);
    json_decref(root);
    return ret;
}
