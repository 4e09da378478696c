/*
 * forward — a child hands the manifests it accepts to its parent's control
 * plane (DESIGN.md §4, manifest chaining): POST <parent_admin_url>/api/v1/
 * rewrite[?prefetch=1] with the same body, so the parent registers the
 * digests, and prefetches and pins when asked. Best effort and never on the
 * child's answer path (a list of URLs goes to the parent's /api/v1/prefetch
 * the same way): a forward runs on the loop's curl multi handle and is
 * retried after 1, 2, 4 and 8 s before it is given up (and counted).
 *
 * A forward owns a copy of the body, its easy handle and its retry timer;
 * it frees itself when it ends. Thread: loop thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/peers.h"
#include "cache/upstream.h"
#include "server/admin/api.h"
#include "version.h"

#define FORWARD_ATTEMPTS 5

struct forward {
    struct upstream_xfer xfer;      /* first: the completion finds the forward */
    struct edge *e;
    char *body;
    size_t len;
    char url[600];
    struct curl_slist *headers;
    unsigned attempt;
    uv_timer_t retry;
    long status;
    char error[CURL_ERROR_SIZE];
    struct forward *next, *prev;    /* the edge's forwards in flight */
};

static void forward_closed(uv_handle_t *h)
{
    struct forward *f = h->data;
    curl_easy_cleanup(f->xfer.easy);
    curl_slist_free_all(f->headers);
    free(f->body);
    free(f);
}

static void forward_end(struct forward *f)
{
    struct edge *e = f->e;
    if (f->prev)
        f->prev->next = f->next;
    else
        e->forwards = f->next;
    if (f->next)
        f->next->prev = f->prev;
    uv_timer_stop(&f->retry);
    uv_close((uv_handle_t *)&f->retry, forward_closed);
}

void forward_stop_all(struct edge *e)
{
    while (e->forwards) {
        struct forward *f = e->forwards;
        if (e->upstream)
            upstream_cancel(e->upstream, &f->xfer);
        forward_end(f);
    }
}

static void forward_try(uv_timer_t *t);

/* The parent's answer (its own rewrite) is not needed. */
static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p, (void)arg;
    return size * n;
}

static void forward_done(struct upstream_xfer *x, CURLcode result)
{
    struct forward *f = (struct forward *)x;
    struct edge *e = f->e;
    f->status = 0;
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &f->status);
    if (result == CURLE_OK && f->status >= 200 && f->status < 300) {
        e->stats.parent_forwards_ok++;
        log_msg(&e->log, LOG_INFO, "forward", "the parent accepted the manifest (%s: %ld)",
                f->url, f->status);
        forward_end(f);
        return;
    }
    /* 4xx: the parent refuses this manifest; asking again changes nothing */
    if (++f->attempt >= FORWARD_ATTEMPTS || e->stopping
        || (result == CURLE_OK && f->status >= 400 && f->status < 500)) {
        e->stats.parent_forwards_failed++;
        log_msg(&e->log, LOG_WARN, "forward", "gave up handing the manifest to the parent "
                "(%s): %s", f->url, result == CURLE_OK ? "it refused it"
                            : f->error[0] ? f->error : curl_easy_strerror(result));
        forward_end(f);
        return;
    }
    uv_timer_start(&f->retry, forward_try, 1000u << (f->attempt - 1), 0);
}

static void forward_try(uv_timer_t *t)
{
    struct forward *f = t->data;
    f->error[0] = '\0';
    if (f->e->stopping || !f->e->upstream || upstream_start(f->e->upstream, &f->xfer) != 0) {
        f->e->stats.parent_forwards_failed++;
        forward_end(f);
    }
}

/* POST body to base + call, with the token (may be empty); `peer` marks
 * it as a peer's (PEER_FIELD), so that the peer does not hand it on. */
static void forward_post(struct edge *e, const char *base, const char *call, const char *token,
                         int peer, const char *body, size_t len)
{
    const struct cfg *cfg = e->cfg;
    char auth[600];
    if (!body)
        return;
    struct forward *f = calloc(1, sizeof *f);
    if (!f || !(f->body = malloc(len ? len : 1)) || !(f->xfer.easy = upstream_easy(cfg->connect_timeout_ms, f->error))) {
        if (f)
            free(f->body);
        free(f);
        return;
    }
    memcpy(f->body, body, len);
    f->len = len;
    f->e = e;
    size_t n = strlen(base);
    while (n && base[n - 1] == '/')
        n--;
    snprintf(f->url, sizeof f->url, "%.*s%s", (int)n, base, call);
    f->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (token && token[0]) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        f->headers = curl_slist_append(f->headers, auth);
    }
    if (peer)
        f->headers = curl_slist_append(f->headers, PEER_FIELD ": 1");
    CURL *c = f->xfer.easy;
    f->xfer.done = forward_done;
    curl_easy_setopt(c, CURLOPT_URL, f->url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, f->body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)f->len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, f->headers);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    uv_timer_init(e->loop, &f->retry);
    f->retry.data = f;
    f->next = e->forwards;
    if (e->forwards)
        e->forwards->prev = f;
    e->forwards = f;
    uv_timer_start(&f->retry, forward_try, 0, 0);
}

void forward_to_parent(struct edge *e, const char *call, const char *body, size_t len)
{
    const struct cfg *cfg = e->cfg;
    if (!cfg->parent_admin_url || !cfg->parent_admin_url[0])
        return;
    forward_post(e, cfg->parent_admin_url, call, cfg->parent_admin_token, 0, body, len);
}

/* Every other peer's control plane: on this node's admin port, with its
 * token (a layer shares both). */
void forward_to_peers(struct edge *e, const char *call, const char *body, size_t len)
{
    for (size_t i = 0; i < peers_count(e->peers); i++) {
        const struct peer *p = peers_at(e->peers, i);
        char base[320];
        if (p->self)
            continue;
        int v6 = strchr(p->host, ':') != NULL;
        snprintf(base, sizeof base, "http://%s%s%s:%u", v6 ? "[" : "", p->host, v6 ? "]" : "",
                 e->cfg->admin_listen.port);
        forward_post(e, base, call, e->cfg->admin_token, 1, body, len);
    }
}

int forward_from_peer(struct MHD_Connection *c)
{
    return c && MHD_lookup_connection_value(c, MHD_HEADER_KIND, PEER_FIELD) != NULL;
}
