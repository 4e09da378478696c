/* prefetch — deployments fetched ahead of time and pinned. See prefetch.h. */
#include "cache/prefetch.h"
#include "cache/peers.h"

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/fill.h"
#include "cache/index.h"
#include "cache/catalog.h"
#include "cache/lookup.h"
#include "cache/stats.h"

struct deployment;

struct pf_file {
    struct deployment *dep;
    char *key, *url, *name;
    char *sha256;                   /* expected, or NULL */
    int64_t size;
    enum prefetch_state state;
    char *error;
    char stored[65];                /* DONE: the blob */
    struct lookup_answer a;         /* FETCHING: how cache/ answers it (a.fill: a reference) */
    struct fill_waiter waiter;
    uint64_t bytes, total;
    struct pf_file *qnext;          /* on the queue while QUEUED */
    void (*done)(void *arg, const char *key, const char *stored_sha);
    void *done_arg;
};

struct deployment {
    struct prefetch *owner;
    char *id;
    int64_t created;
    int pin;
    struct pf_file *files;
    size_t n;
    struct deployment *next;
};

struct prefetch {
    struct prefetch_env env;
    struct deployment *deps;
    struct pf_file *qhead, *qtail;
    unsigned running;
    uv_timer_t pump_timer;          /* starts queued files on the next turn */
};

static void pump_soon(struct prefetch *p);
static void persist(struct deployment *d);
static void enqueue(struct prefetch *p, struct pf_file *f);
static void requeue_file(struct pf_file *f);

static const char *const state_names[] = {
    [PREFETCH_QUEUED] = "queued", [PREFETCH_FETCHING] = "fetching",
    [PREFETCH_DONE] = "done",     [PREFETCH_FAILED] = "failed",
};

const char *prefetch_state_name(enum prefetch_state s)
{
    return state_names[s];
}

/* ---- index writes on the thread pool ------------------------------------- */

enum pf_op { PF_PIN, PF_PUT, PF_DROP };

struct pf_job {
    uv_work_t work;
    struct index *index;
    enum pf_op op;
    char *a, *b;                    /* sha256 / id, body */
    int64_t n;                      /* delta / created */
};

static void job_work(uv_work_t *w)
{
    struct pf_job *j = w->data;
    if (j->op == PF_PIN)
        index_pin(j->index, j->a, (int)j->n);
    else if (j->op == PF_PUT)
        index_deployment_put(j->index, j->a, j->n, j->b);
    else
        index_deployment_drop(j->index, j->a);
}

static void job_after(uv_work_t *w, int status)
{
    struct pf_job *j = w->data;
    (void)status;
    free(j->a);
    free(j->b);
    free(j);
}

/* Takes ownership of a and b. */
static void job_queue(struct prefetch *p, enum pf_op op, char *a, char *b, int64_t n)
{
    struct pf_job *j = calloc(1, sizeof *j);
    if (!j || !a) {
        free(a);
        free(b);
        free(j);
        return;
    }
    *j = (struct pf_job){.index = p->env.index, .op = op, .a = a, .b = b, .n = n};
    j->work.data = j;
    if (uv_queue_work(p->env.loop, &j->work, job_work, job_after) != 0)
        job_after(&j->work, 0);
}

/* ---- files ------------------------------------------------------------------ */

static void enqueue(struct prefetch *p, struct pf_file *f)
{
    f->state = PREFETCH_QUEUED;
    f->qnext = NULL;
    if (p->qtail)
        p->qtail->qnext = f;
    else
        p->qhead = f;
    p->qtail = f;
}

static void dequeue(struct prefetch *p, struct pf_file *f)
{
    struct pf_file **pp = &p->qhead, *prev = NULL;
    while (*pp && *pp != f) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (!*pp)
        return;
    *pp = f->qnext;
    if (p->qtail == f)
        p->qtail = prev;
    f->qnext = NULL;
}

/* The end of a file: stored (sha) or failed (why). */
static void file_end(struct pf_file *f, const char *sha, const char *why)
{
    struct deployment *d = f->dep;
    struct prefetch *p = d->owner;
    if (f->state == PREFETCH_FETCHING) {
        if (f->a.fill)
            fill_unwait(f->a.fill, &f->waiter);
        lookup_answer_free(&f->a);
        p->running--;
    }
    free(f->error);
    f->error = NULL;
    if (sha) {
        f->state = PREFETCH_DONE;
        snprintf(f->stored, sizeof f->stored, "%s", sha);
        if (d->pin)
            job_queue(p, PF_PIN, strdup(sha), NULL, 1);
        log_msg(p->env.log, LOG_INFO, "prefetch", "%s: %s stored%s", d->id, f->url,
                d->pin ? " and pinned" : "");
    } else {
        f->state = PREFETCH_FAILED;
        f->error = strdup(why ? why : "failed");
        log_msg(p->env.log, LOG_WARN, "prefetch", "%s: %s failed: %s", d->id, f->url, f->error);
    }
    persist(d);
    if (f->done)
        f->done(f->done_arg, f->key, sha);
    pump_soon(p);
}

static struct lookup_env lookup_env_of(const struct prefetch *p)
{
    return (struct lookup_env){
        .cfg = p->env.cfg, .log = p->env.log, .store = p->env.store,
        .catalog = p->env.catalog, .fills = p->env.fills, .stats = p->env.stats,
    };
}

static struct lookup_request lookup_req_of(const struct pf_file *f)
{
    /* a prefetch is a request without fields */
    return (struct lookup_request){.key = f->key, .origin_url = f->url, .now = (int64_t)time(NULL)};
}

static void file_stored(struct pf_file *f, const struct cat_resp *r)
{
    char sha[65], why[64];
    if (r->status != 200) {
        snprintf(why, sizeof why, "stored as the upstream's %ld", r->status);
        file_end(f, NULL, why);
        return;
    }
    f->bytes = f->total = r->size;
    snprintf(sha, sizeof sha, "%s", r->sha256);
    file_end(f, sha, NULL);
}

static void file_wake(struct fill_waiter *w);

/* What cache/ answered: stored, refused, or a fill to wait on. */
static void file_answered(struct pf_file *f)
{
    char why[600];
    switch (f->a.verdict) {
    case LOOKUP_STORED:
        file_stored(f, f->a.resp);
        return;
    case LOOKUP_REFUSE:
        snprintf(why, sizeof why, "%s", f->a.reason);
        file_end(f, NULL, why);
        return;
    case LOOKUP_FILL:
        f->waiter.wake = file_wake;
        fill_wait(f->a.fill, &f->waiter);
        return;
    }
}

static void file_wake(struct fill_waiter *w)
{
    struct pf_file *f = (struct pf_file *)((char *)w - offsetof(struct pf_file, waiter));
    struct prefetch *p = f->dep->owner;
    struct lookup_env env = lookup_env_of(p);
    struct lookup_request lq = lookup_req_of(f);
    struct fill_info fi;
    char why[600];
    if (!lookup_fill_moved(&env, &lq, &f->a)) {
        file_answered(f);           /* a new decision */
        return;
    }
    fill_info(f->a.fill, &fi);
    f->bytes = fi.received;
    f->total = fi.has_total ? fi.total : 0;
    switch (fi.state) {
    case FILL_DONE:
        if (fi.stored && fi.status == 200) {
            snprintf(why, sizeof why, "%s", fi.sha256_hex);
            file_end(f, why, NULL);
        } else if (fi.status != 200) {
            snprintf(why, sizeof why, "upstream answered %ld", fi.status);
            file_end(f, NULL, why);
        } else {
            file_end(f, NULL, "complete but not stored (disk)");
        }
        return;
    case FILL_FAILED:
        snprintf(why, sizeof why, "%s", fi.error);
        file_end(f, NULL, why);
        return;
    case FILL_REVALIDATED:          /* a stored copy was confirmed */
        if (lookup_use(&env, fi.fresh, &f->a) == 0)
            file_stored(f, f->a.resp);
        else
            requeue_file(f);
        return;
    default:
        fill_wait(f->a.fill, &f->waiter);
    }
}

/* A file whose stored copy went away under it: queued again, so that its
 * lookup finds what is stored now. */
static void requeue_file(struct pf_file *f)
{
    struct prefetch *p = f->dep->owner;
    lookup_answer_free(&f->a);
    p->running--;
    enqueue(p, f);
    pump_soon(p);
}

static int peer_live(void *ctx, const struct peer *peer)
{
    const struct prefetch *p = ctx;
    return fills_upstream_usable(p->env.fills, peer->base);
}

/* A file this node does not keep in the layer (peers.h): its owner (and
 * the next peer_replicas - 1), told of the deployment too, fetch and pin
 * it; here it is done, held by them. */
static int held_by_peers(struct prefetch *p, struct pf_file *f)
{
    if (!p->env.peers
        || peers_self_rank(p->env.peers, f->key, peer_live, p) < p->env.cfg->peer_replicas)
        return 0;
    f->state = PREFETCH_DONE;
    f->stored[0] = '\0';
    log_msg(p->env.log, LOG_INFO, "prefetch", "%s: %s is held by its owner in the layer",
            f->dep->id, f->url);
    persist(f->dep);
    if (f->done)
        f->done(f->done_arg, f->key, NULL);
    pump_soon(p);
    return 1;
}

static void file_start(struct prefetch *p, struct pf_file *f)
{
    if (held_by_peers(p, f))
        return;
    struct lookup_env env = lookup_env_of(p);
    struct lookup_request lq = lookup_req_of(f);
    f->state = PREFETCH_FETCHING;
    p->running++;
    lookup_request(&env, &lq, &f->a);
    file_answered(f);
}

static void pump(uv_timer_t *t)
{
    struct prefetch *p = t->data;
    while (p->qhead && p->running < p->env.cfg->prefetch_concurrency) {
        struct pf_file *f = p->qhead;
        dequeue(p, f);
        file_start(p, f);
    }
}

static void pump_soon(struct prefetch *p)
{
    uv_timer_start(&p->pump_timer, pump, 0, 0);
}

/* ---- deployments ---------------------------------------------------------- */

static void file_free(struct prefetch *p, struct pf_file *f)
{
    if (f->done && (f->state == PREFETCH_QUEUED || f->state == PREFETCH_FETCHING))
        f->done(f->done_arg, f->key, NULL);     /* it will never end: say so */
    if (f->state == PREFETCH_QUEUED)
        dequeue(p, f);
    if (f->state == PREFETCH_FETCHING) {
        if (f->a.fill)
            fill_unwait(f->a.fill, &f->waiter);
        lookup_answer_free(&f->a);
        p->running--;
    }
    free(f->key);
    free(f->url);
    free(f->name);
    free(f->sha256);
    free(f->error);
}

static void deployment_free(struct prefetch *p, struct deployment *d)
{
    for (size_t i = 0; i < d->n; i++)
        file_free(p, &d->files[i]);
    free(d->files);
    free(d->id);
    free(d);
}

static struct deployment *unlink_deployment(struct prefetch *p, const char *id)
{
    for (struct deployment **pp = &p->deps; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->id, id) == 0) {
            struct deployment *d = *pp;
            *pp = d->next;
            return d;
        }
    return NULL;
}

/* The deployment's row: its files, and which blob each ended as. */
static void persist(struct deployment *d)
{
    json_t *files = json_array();
    for (size_t i = 0; i < d->n; i++) {
        struct pf_file *f = &d->files[i];
        json_t *o = json_pack("{s:s, s:s, s:s, s:I}", "key", f->key, "url", f->url, "name",
                              f->name, "size", (json_int_t)f->size);
        if (o && f->sha256)
            json_object_set_new(o, "sha256", json_string(f->sha256));
        if (o && f->state == PREFETCH_DONE)
            json_object_set_new(o, "stored", json_string(f->stored));
        json_array_append_new(files, o);
    }
    json_t *root = json_pack("{s:b, s:o}", "pin", d->pin, "files", files);
    char *body = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (body)
        job_queue(d->owner, PF_PUT, strdup(d->id), body, d->created);
}

static int file_init(struct pf_file *f, struct deployment *d, const struct prefetch_item *it)
{
    f->dep = d;
    f->key = strdup(it->key);
    f->url = strdup(it->url);
    f->name = strdup(it->name ? it->name : it->url);
    f->sha256 = it->sha256 ? strdup(it->sha256) : NULL;
    f->size = it->size;
    f->done = it->done;
    f->done_arg = it->done_arg;
    f->waiter.wake = file_wake;
    f->a.fd = f->a.backup_fd = -1;
    return f->key && f->url && f->name && (!it->sha256 || f->sha256) ? 0 : -1;
}

static struct deployment *deployment_new(struct prefetch *p, const char *id, int64_t created,
                                         const struct prefetch_item *items, size_t n, int pin)
{
    struct deployment *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->owner = p;
    d->id = strdup(id);
    d->created = created;
    d->pin = pin;
    d->files = calloc(n ? n : 1, sizeof *d->files);
    int ok = d->id && d->files;
    for (size_t i = 0; ok && i < n; i++, d->n = i)
        ok = file_init(&d->files[i], d, &items[i]) == 0;
    if (!ok) {                      /* d->n covers the file that failed */
        deployment_free(p, d);
        return NULL;
    }
    return d;
}

static void unpin_all(struct prefetch *p, const struct deployment *d)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->pin && d->files[i].state == PREFETCH_DONE && d->files[i].stored[0])
            job_queue(p, PF_PIN, strdup(d->files[i].stored), NULL, -1);
}

int prefetch_add(struct prefetch *p, const char *id, const struct prefetch_item *items,
                 size_t n, int pin)
{
    struct deployment *d = deployment_new(p, id, (int64_t)time(NULL), items, n, pin);
    if (!d)
        return -1;
    struct deployment *old = unlink_deployment(p, id);
    if (old) {                      /* the same deployment again: start over */
        unpin_all(p, old);
        deployment_free(p, old);
    }
    d->next = p->deps;
    p->deps = d;
    for (size_t i = 0; i < d->n; i++)
        enqueue(p, &d->files[i]);
    persist(d);
    log_msg(p->env.log, LOG_INFO, "prefetch", "deployment %s: %zu file%s queued%s", id, n,
            n == 1 ? "" : "s", pin ? ", pinned when stored" : "");
    pump_soon(p);
    return 0;
}

int prefetch_remove(struct prefetch *p, const char *id)
{
    struct deployment *d = unlink_deployment(p, id);
    if (!d)
        return -1;
    unpin_all(p, d);
    job_queue(p, PF_DROP, strdup(id), NULL, 0);
    log_msg(p->env.log, LOG_INFO, "prefetch", "deployment %s retired: unpinned", id);
    deployment_free(p, d);
    pump_soon(p);
    return 0;
}

void prefetch_foreach(struct prefetch *p, prefetch_deployment_cb cb, void *ctx)
{
    for (struct deployment *d = p->deps; d; d = d->next) {
        struct prefetch_file_info *fi = calloc(d->n ? d->n : 1, sizeof *fi);
        if (!fi)
            return;
        for (size_t i = 0; i < d->n; i++) {
            struct pf_file *f = &d->files[i];
            if (f->state == PREFETCH_FETCHING && f->a.fill) {     /* live progress */
                struct fill_info info;
                fill_info(f->a.fill, &info);
                f->bytes = info.received;
                f->total = info.has_total ? info.total : 0;
            }
            fi[i] = (struct prefetch_file_info){
                .name = f->name, .url = f->url, .state = f->state, .bytes = f->bytes,
                .total = f->total, .error = f->error,
                .sha256 = f->state == PREFETCH_DONE ? f->stored : NULL,
            };
        }
        cb(ctx, d->id, d->created, d->pin, fi, d->n);
        free(fi);
    }
}

int prefetch_open(struct prefetch **out, const struct prefetch_env *env)
{
    struct prefetch *p = calloc(1, sizeof *p);
    if (!p)
        return -1;
    p->env = *env;
    uv_timer_init(env->loop, &p->pump_timer);
    p->pump_timer.data = p;
    *out = p;
    return 0;
}

static void closed(uv_handle_t *h)
{
    free(h->data);
}

void prefetch_close(struct prefetch **pp)
{
    struct prefetch *p = *pp;
    if (!p)
        return;
    *pp = NULL;
    while (p->deps) {
        struct deployment *d = p->deps;
        p->deps = d->next;
        deployment_free(p, d);
    }
    uv_timer_stop(&p->pump_timer);
    uv_close((uv_handle_t *)&p->pump_timer, closed);
}

/* ---- start-up: deployments kept in the index ---------------------------------- */

static int restore_one(void *ctx, const char *id, int64_t created, const char *body)
{
    struct prefetch *p = ctx;
    json_error_t jerr;
    json_t *root = json_loads(body ? body : "", 0, &jerr);
    json_t *files = json_object_get(root, "files");
    size_t n = json_array_size(files);
    struct prefetch_item *items = calloc(n ? n : 1, sizeof *items);
    if (!root || !items) {
        log_msg(p->env.log, LOG_WARN, "prefetch", "deployment %s: unreadable row, skipped", id);
        json_decref(root);
        free(items);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(files, i);
        items[i] = (struct prefetch_item){
            .key = json_string_value(json_object_get(o, "key")),
            .url = json_string_value(json_object_get(o, "url")),
            .name = json_string_value(json_object_get(o, "name")),
            .sha256 = json_string_value(json_object_get(o, "sha256")),
            .size = json_is_integer(json_object_get(o, "size"))
                        ? (int64_t)json_integer_value(json_object_get(o, "size")) : -1,
        };
        if (!items[i].key || !items[i].url)
            n = i;                  /* a damaged entry ends the list */
    }
    struct deployment *d = deployment_new(p, id, created, items, n,
                                          json_is_true(json_object_get(root, "pin")));
    for (size_t i = 0; d && i < n; i++) {
        const char *stored = json_string_value(json_object_get(json_array_get(files, i), "stored"));
        if (stored) {
            d->files[i].state = PREFETCH_DONE;
            snprintf(d->files[i].stored, sizeof d->files[i].stored, "%s", stored);
        } else {
            enqueue(p, &d->files[i]);
        }
    }
    if (d) {
        d->next = p->deps;
        p->deps = d;
    }
    json_decref(root);
    free(items);
    return 0;
}

int prefetch_restore(struct prefetch *p)
{
    int rc = index_deployment_foreach(p->env.index, restore_one, p);
    if (p->qhead)
        pump_soon(p);
    return rc < 0 ? -1 : 0;
}
