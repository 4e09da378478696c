/*
 * edgecache — an on-premise cache for over-the-air update payloads.
 *
 * main: configuration, start-up recovery, the loop, an orderly stop on
 * SIGTERM/SIGINT. Start-up order: config -> store (dirs) -> index ->
 * recovery (temp files, orphan rows and blobs) -> upstream -> fills ->
 * listeners. Nothing listens before the store is consistent.
 */
#include <curl/curl.h>
#include <unistd.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/catalog.h"
#include "cache/evict.h"
#include "cache/fill.h"
#include "cache/index.h"
#include "cache/peers.h"
#include "cache/prefetch.h"
#include "cache/upstream.h"
#include "server/admin/api.h"
#include "server/cmd/cmd.h"
#include "server/edge.h"
#include "version.h"

#define TOUCH_FLUSH_MS 5000

extern char **environ;

static void touch_flush_work(uv_work_t *w)
{
    struct edge *e = w->data;
    index_flush_touches(e->index);
}

static void touch_flush_after(uv_work_t *w, int status)
{
    struct edge *e = w->data;
    (void)status;
    e->touch_flush_running = 0;
    free(w);
}

/* Access times are batched in memory and written from the pool. */
static void on_housekeeping(uv_timer_t *t)
{
    struct edge *e = t->data;
    evict_check(e->evictor);
    if (e->touch_flush_running)
        return;
    uv_work_t *w = calloc(1, sizeof *w);
    if (!w)
        return;
    w->data = e;
    e->touch_flush_running = 1;
    if (uv_queue_work(e->loop, w, touch_flush_work, touch_flush_after) != 0) {
        e->touch_flush_running = 0;
        free(w);
    }
}

/* The end of a stop: fills are abandoned (their readers cut), every
 * connection is closed, the handles go. The loop then runs out. */
static void edge_finish_stop(struct edge *e)
{
    if (e->stopping)
        return;
    e->stopping = 1;
    log_msg(&e->log, LOG_INFO, "main", "stopping now: %u answers still in progress",
            e->active_requests);
    uv_timer_stop(&e->grace_timer);
    uv_close((uv_handle_t *)&e->grace_timer, NULL);
    prefetch_close(&e->prefetch);
    forward_stop_all(e);
    http_stop(e);
    admin_stop(e);
    upstream_close(&e->upstream);
    uv_timer_stop(&e->housekeeping);
    uv_close((uv_handle_t *)&e->housekeeping, NULL);
    uv_close((uv_handle_t *)&e->sig_term, NULL);
    uv_close((uv_handle_t *)&e->sig_int, NULL);
    uv_close((uv_handle_t *)&e->sig_hup, NULL);
}

static void on_grace(uv_timer_t *t)
{
    struct edge *e = t->data;
    if (e->active_requests && uv_now(e->loop) < e->grace_deadline) {
        uv_timer_start(t, on_grace, 100, 0);
        return;
    }
    edge_finish_stop(e);
}

void edge_request_done(struct edge *e)
{
    if (e->draining && !e->stopping && e->active_requests == 0)
        uv_timer_start(&e->grace_timer, on_grace, 0, 0);
}

/* SIGTERM or SIGINT: stop accepting, let the answers in progress finish
 * for up to shutdown_grace (each new one on a kept-alive connection says
 * Connection: close), then finish the stop. Background work (prefetches,
 * manifests for the parent) is dropped at once: deployments are kept in
 * the index and queued again at the next start. A second signal stops
 * without waiting. */
static void edge_stop(struct edge *e)
{
    if (e->draining) {
        edge_finish_stop(e);
        return;
    }
    e->draining = 1;
    atomic_store(&e->reconcile.cancel, true);
    log_msg(&e->log, LOG_INFO, "main", "stopping: no new connections; %u answers in progress "
            "may finish within %llu ms (config key: shutdown_grace)", e->active_requests,
            (unsigned long long)e->cfg->shutdown_grace_ms);
    http_quiesce(e);
    prefetch_close(&e->prefetch);
    forward_stop_all(e);
    e->grace_deadline = uv_now(e->loop) + e->cfg->shutdown_grace_ms;
    uv_timer_start(&e->grace_timer, on_grace, e->active_requests ? 100 : 0, 0);
}

static void on_signal(uv_signal_t *s, int signum)
{
    struct edge *e = s->data;
    if (signum == SIGHUP) {
        log_msg(&e->log, LOG_INFO, "main", "SIGHUP: nothing to reopen (edgecache logs to "
                "stderr); ignored");
        return;
    }
    edge_stop(e);
}

/* A damaged index is set aside (index.db.damaged-<unix time>, with its
 * -wal and -shm) for whoever wants to look at it. */
static int set_aside(struct edge *e, const char *path)
{
    static const char *const parts[] = {"", "-wal", "-shm"};
    char from[4200], to[4300];
    long long now = (long long)time(NULL);
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        snprintf(from, sizeof from, "%s%s", path, parts[i]);
        snprintf(to, sizeof to, "%s.damaged-%lld%s", path, now, parts[i]);
        if (rename(from, to) != 0 && errno != ENOENT) {
            log_msg(&e->log, LOG_ERROR, "main", "cannot move the damaged index %s aside: %s",
                    from, strerror(errno));
            return -1;
        }
    }
    log_msg(&e->log, LOG_ERROR, "main", "the index %s is damaged: moved to %s.damaged-%lld; "
            "starting a new one and adopting every blob of the store (they are named by "
            "their SHA-256, so they are served by hash; URL mappings, deployments and "
            "expectations are lost and come back as devices and manifests ask again)",
            path, path, now);
    return 0;
}

/* The index, recovery and the catalog; 1 when it failed because the index
 * is damaged (then nothing stays open). */
static int open_index(struct edge *e, const char *path, char *err, size_t errlen)
{
    unsigned temps = 0;
    int rc = index_open(&e->index, path, &e->log, err, errlen);
    if (rc == -2)
        return 1;
    if (rc != 0)
        return -1;
    struct catalog_env cenv = {
        .loop = e->loop, .index = e->index, .log = &e->log, .stats = &e->stats,
    };
    /* tmp/ now; the walk of blobs/ after the listeners start (reconcile_start) */
    if (store_clear_tmp(&e->store, &temps) == 0
        && catalog_open(&e->catalog, &cenv) == 0 && catalog_load(e->catalog) == 0) {
        if (temps)
            log_msg(&e->log, LOG_INFO, "store", "removed %u temp files that fills in flight "
                    "left at the last stop", temps);
        return 0;
    }
    int damaged = index_quick_check(e->index) == 1;
    snprintf(err, errlen, "cannot read the index %s (see the log)", path);
    catalog_close(&e->catalog);
    index_close(&e->index);
    return damaged ? 1 : -1;
}

static int open_storage(struct edge *e, char *err, size_t errlen)
{
    char path[4096];
    if (store_open(&e->store, e->cfg->cache_dir, &e->log, err, errlen) != 0)
        return -1;
    store_index_path(&e->store, path, sizeof path);
    int rc = open_index(e, path, err, errlen);
    if (rc == 1 && set_aside(e, path) == 0)
        rc = open_index(e, path, err, errlen);
    return rc == 0 ? 0 : -1;
}

/* The store's walk and its reconciliation with the index, on the pool
 * while the daemon serves (store_reconcile): start-up does not wait for a
 * stat of every blob. */
static void reconcile_work(uv_work_t *w)
{
    struct edge *e = w->data;
    e->reconcile.rc = store_reconcile(&e->store, e->index, &e->reconcile.cancel,
                                      &e->reconcile.result);
}

static void reconcile_after(uv_work_t *w, int status)
{
    struct edge *e = w->data;
    struct store_reconciled *r = &e->reconcile.result;
    e->reconcile.took_ms = uv_now(e->loop) - e->reconcile.started_ms;
    if (status != 0 || atomic_load(&e->reconcile.cancel)) {
        e->reconcile.state = RECONCILE_CANCELLED;
    } else if (e->reconcile.rc != 0) {
        e->reconcile.state = RECONCILE_FAILED;
        log_msg(&e->log, LOG_ERROR, "store", "reconciling %s with its index failed (see "
                "above); rows without a blob are fetched again when asked for, blobs "
                "without a row wait for the next start", e->cfg->cache_dir);
    } else {
        e->reconcile.state = RECONCILE_DONE;
        /* the catalog learns what changed (a removal the catalog saw a
         * commit after is ignored, by its number) */
        for (size_t i = 0; e->catalog && i < r->n_dropped; i++)
            catalog_blob_removed_at(e->catalog, r->dropped[i].sha256, r->dropped[i].seq);
        for (size_t i = 0; e->catalog && i < r->n_adopted; i++)
            catalog_blob_added(e->catalog, r->adopted[i].sha256, r->adopted[i].size);
        log_msg(&e->log, LOG_INFO, "store", "reconciled with the index in %llu ms while "
                "serving: %zu blobs, %u rows without a blob dropped, %u blobs without a row "
                "adopted", (unsigned long long)e->reconcile.took_ms, r->blobs, r->rows_dropped,
                r->blobs_adopted);
        if (e->evictor && r->n_adopted)
            evict_check(e->evictor);
    }
    store_reconciled_free(r);
}

static void reconcile_start(struct edge *e)
{
    e->reconcile.work.data = e;
    e->reconcile.state = RECONCILE_RUNNING;
    e->reconcile.started_ms = uv_now(e->loop);
    atomic_store(&e->reconcile.cancel, false);
    if (uv_queue_work(e->loop, &e->reconcile.work, reconcile_work, reconcile_after) != 0)
        e->reconcile.state = RECONCILE_FAILED;
}

/* workers = N (0: as many as this process may use CPUs). With more than
 * one, the edge's lock is set up and held by this thread from here on
 * (server/edge.h), released only while the main loop waits. */
static void on_main_wake(uv_async_t *a)
{
    (void)a;                        /* the loop turn it causes is the point */
}

static int open_workers(struct edge *e, char *err, size_t errlen)
{
    unsigned n = (unsigned)e->cfg->workers;
    if (n == 0)
        n = uv_available_parallelism();
    if (n == 0)
        n = 1;
    e->workers = calloc(n, sizeof *e->workers);
    if (!e->workers) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    e->n_workers = n;
    worker_set_current(&e->workers[0]);     /* worker 0 is this thread's loop */
    if (n == 1)
        return 0;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&e->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (uv_async_init(e->loop, &e->main_wake, on_main_wake) != 0) {
        pthread_mutex_destroy(&e->lock);
        snprintf(err, errlen, "cannot set up the main loop's wake-up");
        return -1;
    }
    uv_unref((uv_handle_t *)&e->main_wake);
    e->threaded = 1;
    pthread_mutex_lock(&e->lock);
    return 0;
}

/* Runs the main loop. With worker threads, one turn at a time with the
 * lock held, and the wait for events without it; a worker that changed a
 * main-loop handle wakes it (main_wake), and it looks again at least every
 * MAIN_WAIT_MAX_MS whatever happens. */
#define MAIN_WAIT_MAX_MS 50

static void run_main_loop(struct edge *e)
{
    if (!e->threaded) {
        uv_run(e->loop, UV_RUN_DEFAULT);
        return;
    }
    while (uv_run(e->loop, UV_RUN_NOWAIT)) {
        int timeout = uv_backend_timeout(e->loop);
        if (timeout < 0 || timeout > MAIN_WAIT_MAX_MS)
            timeout = MAIN_WAIT_MAX_MS;
        struct pollfd p = {.fd = uv_backend_fd(e->loop), .events = POLLIN};
        pthread_mutex_unlock(&e->lock);
        poll(&p, 1, timeout);
        pthread_mutex_lock(&e->lock);
    }
}

/* Where an operator on this machine opens the dashboard: the control
 * plane's address (a wildcard one reached on loopback). */
static void log_dashboard(struct edge *e)
{
    const char *host = e->cfg->admin_listen.host;
    bool v6 = strchr(host, ':') != NULL;
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0 || host[0] == '\0')
        host = "127.0.0.1", v6 = false;
    else if (strcmp(host, "::") == 0)
        host = "::1";
    log_msg(&e->log, LOG_INFO, "main", "dashboard: http://%s%s%s:%u/%s", v6 ? "[" : "", host,
            v6 ? "]" : "", e->cfg->admin_listen.port,
            e->cfg->admin_token[0] ? " (it asks for the control-plane token)" : "");
}

static int edge_start(struct edge *e, char *err, size_t errlen)
{
    e->started = (int64_t)time(NULL);
    if (open_storage(e, err, errlen) != 0)
        return -1;
    if (upstream_open(&e->upstream, e->loop, &e->log) != 0) {
        snprintf(err, errlen, "cannot set up the upstream client");
        return -1;
    }
    struct evict_env venv = {
        .loop = e->loop, .cfg = e->cfg, .log = &e->log, .store = &e->store,
        .index = e->index, .catalog = e->catalog, .stats = &e->stats,
    };
    if (evict_open(&e->evictor, &venv, err, errlen) != 0)
        return -1;
    e->stats.budget_bytes = evict_budget(e->evictor);
    if (peers_open(&e->peers, e->cfg, e->loop, &e->log, err, errlen) != 0)
        return -1;
    struct fills_env env = {
        .loop = e->loop, .cfg = e->cfg, .log = &e->log, .store = &e->store,
        .index = e->index, .catalog = e->catalog, .upstream = e->upstream,
        .stats = &e->stats, .evictor = e->evictor, .peers = e->peers,
    };
    if (fills_open(&e->fills, &env) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    struct prefetch_env penv = {
        .loop = e->loop, .cfg = e->cfg, .log = &e->log, .store = &e->store,
        .index = e->index, .catalog = e->catalog, .fills = e->fills, .stats = &e->stats,
        .peers = e->peers,
    };
    if (prefetch_open(&e->prefetch, &penv) != 0 || prefetch_restore(e->prefetch) != 0) {
        snprintf(err, errlen, "cannot restore the deployments kept in the index");
        return -1;
    }
    if (open_workers(e, err, errlen) != 0 || http_start(e, err, errlen) != 0
        || admin_start(e, err, errlen) != 0)
        return -1;
    uv_timer_init(e->loop, &e->housekeeping);
    e->housekeeping.data = e;
    uv_timer_start(&e->housekeeping, on_housekeeping, TOUCH_FLUSH_MS, TOUCH_FLUSH_MS);
    uv_timer_init(e->loop, &e->grace_timer);
    e->grace_timer.data = e;
    uv_signal_init(e->loop, &e->sig_term);
    uv_signal_init(e->loop, &e->sig_int);
    uv_signal_init(e->loop, &e->sig_hup);
    e->sig_term.data = e->sig_int.data = e->sig_hup.data = e;
    uv_signal_start(&e->sig_term, on_signal, SIGTERM);
    uv_signal_start(&e->sig_int, on_signal, SIGINT);
    uv_signal_start(&e->sig_hup, on_signal, SIGHUP);
    log_msg(&e->log, LOG_INFO, "main",
            "edgecache %s serving on %s:%u, control plane on %s:%u, cache %s (%llu objects, %llu bytes)",
            EDGECACHE_VERSION, e->cfg->listen.host, e->cfg->listen.port, e->cfg->admin_listen.host,
            e->cfg->admin_listen.port, e->cfg->cache_dir, (unsigned long long)e->stats.objects,
            (unsigned long long)e->stats.stored_bytes);
    log_dashboard(e);
    reconcile_start(e);
    return http_run(e, err, errlen);
}

/* After the loop: what a failed start left open is stopped, the loop runs
 * until every close callback and every piece of pool work has finished
 * (a commit in flight completes and may still call the evictor), and only
 * then are the evictor, the index and the store freed. */
static void edge_teardown(struct edge *e)
{
    prefetch_close(&e->prefetch);
    if (e->workers || e->admin_daemon || e->upstream) {
        http_stop(e);
        admin_stop(e);
        upstream_close(&e->upstream);
    }
    http_join(e);                   /* no worker thread runs past this */
    if (e->threaded && !uv_is_closing((uv_handle_t *)&e->main_wake))
        uv_close((uv_handle_t *)&e->main_wake, NULL);
    fills_close(&e->fills);
    peers_close(&e->peers);
    uv_run(e->loop, UV_RUN_DEFAULT);
    evict_close(&e->evictor);
    uv_run(e->loop, UV_RUN_DEFAULT);
    catalog_close(&e->catalog);     /* writes what it still holds back */
    index_close(&e->index);
    store_close(&e->store);
    free(e->workers);
    e->workers = NULL;
}

int main(int argc, char **argv)
{
    struct cfg cfg;
    char err[1024] = "";
    if (argc > 1 && strcmp(argv[1], "verify") == 0)
        return cmd_verify(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "rewrite") == 0)
        return cmd_rewrite(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "import") == 0)
        return cmd_import(argc - 1, argv + 1);
    if (argc > 1 && strcmp(argv[1], "health") == 0)
        return cmd_health(argc - 1, argv + 1);
    enum cfg_result cr = cfg_load(&cfg, argc, argv, environ, stdout, err, sizeof err);
    if (cr == CFG_EXIT)
        return 0;
    if (cr == CFG_ERROR) {
        fprintf(stderr, "edgecache: %s\n", err);
        cfg_free(&cfg);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    struct edge e;
    memset(&e, 0, sizeof e);
    e.cfg = &cfg;
    e.loop = uv_default_loop();
    log_init(&e.log, cfg.log_level, cfg.log_format);

    int rc = 0;
    if (edge_start(&e, err, sizeof err) != 0) {
        log_msg(&e.log, LOG_ERROR, "main", "%s", err);
        rc = 1;
    } else {
        run_main_loop(&e);
    }
    edge_teardown(&e);
    if (e.threaded) {
        pthread_mutex_unlock(&e.lock);
        pthread_mutex_destroy(&e.lock);
    }
    uv_loop_close(e.loop);
    curl_global_cleanup();
    cfg_free(&cfg);
    return rc;
}
