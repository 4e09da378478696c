/*
 * status — the calls an operator and a monitor read (DESIGN.md §7):
 * GET /healthz (no token: 200 while serving, 503 once stopping), /status
 * (JSON), /metrics (Prometheus text) and / (the dashboard, compiled in
 * from server/admin/dashboard.html, which reads /status itself).
 *
 * /status also carries "history": the counters bytes_sent_cache,
 * bytes_sent_fill and upstream_bytes sampled every HISTORY_INTERVAL_S
 * seconds, the last HISTORY_SAMPLES of them (an hour), oldest first:
 *   "history": {"interval_s": 10, "samples":
 *               [{"t": <unix>, "cache": n, "fill": n, "upstream": n}, ...]}
 * Each sample holds the counters' TOTALS at time t (since the daemon
 * started), not deltas: the bytes of an interval are the difference of two
 * samples, and the first sample is the baseline. Sampling starts with the
 * control plane (a first sample at once, status_history_start) and stops
 * with it (status_history_stop). "now" (top level) is the daemon's clock, for
 * times relative to it (down_since, the chart's last interval).
 *
 * Thread: loop thread only.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/evict.h"
#include "cache/fill.h"
#include "cache/peers.h"
#include "server/admin/api.h"
#include "server/edge.h"
#include "version.h"

/* server/admin/dashboard.html, compiled in by CMake. */
extern const unsigned char edgecache_dashboard[];
extern const size_t edgecache_dashboard_len;

#define HISTORY_INTERVAL_S 10
#define HISTORY_SAMPLES 360

struct history_sample {
    int64_t t;
    uint64_t cache, fill, upstream;
};

/* One daemon per process: the ring lives here rather than in struct edge. */
static struct {
    uv_timer_t timer;
    struct edge *e;
    int running;                    /* the timer is initialised and not closed */
    int stopped;                    /* status_history_stop ran: never again */
    size_t next, count;             /* ring position and fill */
    struct history_sample ring[HISTORY_SAMPLES];
} history;

static void history_sample(uv_timer_t *t)
{
    const struct stats *s = &((struct edge *)t->data)->stats;
    history.ring[history.next] = (struct history_sample){
        .t = (int64_t)time(NULL), .cache = s->bytes_sent_cache, .fill = s->bytes_sent_fill,
        .upstream = s->upstream_bytes};
    history.next = (history.next + 1) % HISTORY_SAMPLES;
    if (history.count < HISTORY_SAMPLES)
        history.count++;
}

void status_history_start(struct edge *e)
{
    if (history.running || history.stopped || !e->loop)
        return;
    if (uv_timer_init(e->loop, &history.timer) != 0)
        return;
    history.timer.data = e;
    history.e = e;
    history.running = 1;
    /* it never keeps the loop alive by itself */
    uv_unref((uv_handle_t *)&history.timer);
    history_sample(&history.timer);
    uv_timer_start(&history.timer, history_sample, HISTORY_INTERVAL_S * 1000,
                   HISTORY_INTERVAL_S * 1000);
}

void status_history_stop(struct edge *e)
{
    history.stopped = 1;
    if (!history.running || history.e != e)
        return;
    uv_timer_stop(&history.timer);
    uv_close((uv_handle_t *)&history.timer, NULL);
    history.running = 0;
}

static json_t *history_json(void)
{
    json_t *samples = json_array();
    size_t first = (history.next + HISTORY_SAMPLES - history.count) % HISTORY_SAMPLES;
    for (size_t i = 0; i < history.count; i++) {
        const struct history_sample *h = &history.ring[(first + i) % HISTORY_SAMPLES];
        json_array_append_new(samples, json_pack("{s:I, s:I, s:I, s:I}", "t", (json_int_t)h->t,
                                                 "cache", (json_int_t)h->cache, "fill",
                                                 (json_int_t)h->fill, "upstream",
                                                 (json_int_t)h->upstream));
    }
    return json_pack("{s:i, s:o}", "interval_s", HISTORY_INTERVAL_S, "samples", samples);
}

static json_t *counters_json(const struct stats *s)
{
    json_t *o = json_object();
#define STATS_JSON(field, family, labels, type, help) \
    json_object_set_new(o, #field, json_integer((json_int_t)s->field));
    STATS_ENTRIES(STATS_JSON)
#undef STATS_JSON
    return o;
}

static void fill_json(void *ctx, const struct fill_info *fi)
{
    json_t *o = json_object();
    json_object_set_new(o, "url", json_string(fi->origin_url));
    json_object_set_new(o, "key", json_string(fi->key));
    json_object_set_new(o, "state", json_string(fill_state_name(fi->state)));
    json_object_set_new(o, "bytes", json_integer((json_int_t)fi->received));
    json_object_set_new(o, "total", fi->has_total ? json_integer((json_int_t)fi->total) : json_null());
    json_object_set_new(o, "readers", json_integer(fi->readers));
    if (fi->status)
        json_object_set_new(o, "status", json_integer(fi->status));
    if (fi->n_redirects > 1) {      /* the URLs it was sent to, in order */
        json_t *hops = json_array();
        for (unsigned i = 0; i < fi->n_redirects; i++)
            json_array_append_new(hops, json_string(fi->redirects[i]));
        json_object_set_new(o, "redirects", hops);
    }
    json_array_append_new(ctx, o);
}

static void upstream_json(void *ctx, const struct fills_upstream *u)
{
    json_t *o = json_pack("{s:s, s:b, s:I}", "target", u->target, "up", u->up, "failures",
                          (json_int_t)u->failures);
    json_object_set_new(o, "last_success", u->last_ok ? json_integer(u->last_ok) : json_null());
    json_object_set_new(o, "last_failure", u->last_fail ? json_integer(u->last_fail) : json_null());
    json_object_set_new(o, "down_since", u->down_since ? json_integer(u->down_since) : json_null());
    json_object_set_new(o, "error", u->last_error[0] ? json_string(u->last_error) : json_null());
    json_array_append_new(ctx, o);
}

static void upstream_up_metric(void *ctx, const struct fills_upstream *u)
{
    fprintf(ctx, "edgecache_upstream_up{upstream=\"%s\"} %d\n", u->target, u->up);
}

static void upstream_ok_metric(void *ctx, const struct fills_upstream *u)
{
    fprintf(ctx, "edgecache_upstream_last_success_timestamp_seconds{upstream=\"%s\"} %lld\n",
            u->target, (long long)u->last_ok);
}

/* The layer's peers (cache/peers.h): each one's state as its upstream
 * health says, and its share of the key space (rendezvous hashing spreads
 * keys evenly over the live ones). */
struct peer_health {
    const char *target;
    const struct fills_upstream *found;
    int up;
    int64_t down_since;
    char error[200];
};

static void find_peer_health(void *ctx, const struct fills_upstream *u)
{
    struct peer_health *h = ctx;
    if (strcmp(u->target, h->target) == 0) {
        h->found = u;
        h->up = u->up;
        h->down_since = u->down_since;
        snprintf(h->error, sizeof h->error, "%s", u->last_error ? u->last_error : "");
    }
}

static json_t *peers_json(struct edge *e)
{
    json_t *list = json_array();
    size_t n = peers_count(e->peers), live = 0;
    struct peer_health hs[64];
    for (size_t i = 0; i < n && i < 64; i++) {
        const struct peer *p = peers_at(e->peers, i);
        hs[i] = (struct peer_health){.target = p->base, .up = 1};
        if (!p->self && e->fills)
            fills_foreach_upstream(e->fills, find_peer_health, &hs[i]);
        live += p->self || hs[i].up;
    }
    for (size_t i = 0; i < n && i < 64; i++) {
        const struct peer *p = peers_at(e->peers, i);
        int up = p->self || hs[i].up;
        json_t *o = json_pack("{s:s, s:b, s:s, s:f}", "peer", p->id, "self", p->self,
                              "state", p->self ? "self" : up ? "up" : "down", "share",
                              up && live ? 1.0 / (double)live : 0.0);
        if (o && !up) {
            json_object_set_new(o, "down_since", json_integer((json_int_t)hs[i].down_since));
            json_object_set_new(o, "error", json_string(hs[i].error));
        }
        json_array_append_new(list, o);
    }
    return list;
}

enum MHD_Result api_status(struct admin_req *req)
{
    struct edge *e = req->e;
    struct MHD_Connection *c = req->conn;
    json_t *root = json_object();
    json_t *fills = json_array();
    if (e->fills)
        fills_foreach(e->fills, fill_json, fills);
    json_object_set_new(root, "version", json_string(EDGECACHE_VERSION));
    json_object_set_new(root, "node_id", json_string(e->cfg->node_id));
    json_object_set_new(root, "now", json_integer((json_int_t)time(NULL)));
    json_object_set_new(root, "uptime_s", json_integer((json_int_t)(time(NULL) - e->started)));
    json_object_set_new(root, "cache_dir", json_string(e->cfg->cache_dir));
    json_object_set_new(root, "objects", json_integer((json_int_t)e->stats.objects));
    json_object_set_new(root, "stored_bytes", json_integer((json_int_t)e->stats.stored_bytes));
    /* the store's walk after start (objects and stored_bytes may still
     * grow by adopted blobs while it runs) */
    static const char *const reconcile_states[] = {"not started", "running", "done", "failed",
                                                   "cancelled"};
    json_t *rec = json_object();
    json_object_set_new(rec, "state", json_string(reconcile_states[e->reconcile.state]));
    json_object_set_new(rec, "ms", json_integer((json_int_t)(
        e->reconcile.state == RECONCILE_RUNNING ? uv_now(e->loop) - e->reconcile.started_ms
                                                : e->reconcile.took_ms)));
    json_object_set_new(root, "store_reconcile", rec);
    /* the data plane's event loops (config key: workers); counters above
     * are the whole process's */
    json_t *workers = json_array();
    for (unsigned i = 0; i < e->n_workers; i++) {
        json_t *w = json_object();
        json_object_set_new(w, "requests", json_integer((json_int_t)e->workers[i].requests));
        json_object_set_new(w, "connections",
                            json_integer((json_int_t)e->workers[i].connections));
        json_array_append_new(workers, w);
    }
    json_object_set_new(root, "workers", workers);
    json_object_set_new(root, "budget_bytes",
                        e->evictor ? json_integer((json_int_t)evict_budget(e->evictor)) : json_null());
    uint64_t hits = e->stats.req_hit;
    uint64_t served = hits + e->stats.req_miss + e->stats.req_collapsed;
    json_object_set_new(root, "hit_ratio", json_real(served ? (double)hits / (double)served : 0.0));
    json_object_set_new(root, "counters", counters_json(&e->stats));
    json_object_set_new(root, "fills", fills);
    json_t *ups = json_array();
    if (e->fills)
        fills_foreach_upstream(e->fills, upstream_json, ups);
    json_object_set_new(root, "upstreams", ups);
    json_object_set_new(root, "peers", peers_json(e));
    json_object_set_new(root, "parent", e->cfg->parent && e->cfg->parent[0]
                                            ? json_string(e->cfg->parent) : json_null());
    json_object_set_new(root, "deployments", api_deployments_json(e));
    json_object_set_new(root, "history", history_json());
    char *raw = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    char *text = raw ? log_redact_dup(raw) : NULL;  /* no SAS sig nor presign secret */
    free(raw);
    if (!text)
        return MHD_NO;
    return admin_reply(c, MHD_HTTP_OK, "application/json", text, strlen(text), MHD_RESPMEM_MUST_FREE);
}

enum MHD_Result api_metrics(struct admin_req *req)
{
    struct edge *e = req->e;
    struct MHD_Connection *c = req->conn;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (!out)
        return MHD_NO;
    stats_print_prometheus(&e->stats, out);
    if (e->fills) {                 /* one family after the other */
        fputs("# HELP edgecache_upstream_up Whether each upstream asked so far answers (1) "
              "or not (0)\n# TYPE edgecache_upstream_up gauge\n", out);
        fills_foreach_upstream(e->fills, upstream_up_metric, out);
        fputs("# HELP edgecache_upstream_last_success_timestamp_seconds When it last "
              "answered (0: never)\n"
              "# TYPE edgecache_upstream_last_success_timestamp_seconds gauge\n", out);
        fills_foreach_upstream(e->fills, upstream_ok_metric, out);
    }
    fclose(out);
    return admin_reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4", text, len, MHD_RESPMEM_MUST_FREE);
}


enum MHD_Result api_healthz(struct admin_req *req)
{
    return req->e->draining ? admin_reply_text(req->conn, MHD_HTTP_SERVICE_UNAVAILABLE, "stopping\n")
                            : admin_reply_text(req->conn, MHD_HTTP_OK, "ok\n");
}

/* The page asks /status itself, with the token it is given. */
enum MHD_Result api_dashboard(struct admin_req *req)
{
    return admin_reply(req->conn, MHD_HTTP_OK, "text/html; charset=utf-8",
                       (char *)edgecache_dashboard, edgecache_dashboard_len,
                       MHD_RESPMEM_PERSISTENT);
}
