/* peers — see peers.h. */
#include "cache/peers.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

enum entry_kind { ENTRY_HTTP, ENTRY_DNS, ENTRY_SRV };

struct entry {
    enum entry_kind kind;
    char host[256];
    unsigned port;
};

/* A resolution runs on a thread of its own, detached: getaddrinfo() may
 * wait for a DNS server for many seconds, and a stop must not wait for it.
 * It works on copies; once the peers are closed it is orphaned and frees
 * itself when it ends. job_mu guards done, orphaned and the hand-over. */
struct resolve_job {
    struct peers *p;                /* while not orphaned */
    struct entry *entries;          /* a copy */
    size_t n_entries;
    struct cfg_listen listen;
    struct peer *found;             /* the list it made */
    size_t n_found;
    int done, orphaned;
};

static pthread_mutex_t job_mu = PTHREAD_MUTEX_INITIALIZER;

struct peers {
    const struct cfg *cfg;
    const struct logger *log;
    uv_loop_t *loop;
    struct entry *entries;
    size_t n_entries;
    int has_dns;
    struct peer *v;                 /* the peers now */
    size_t n;
    uv_timer_t timer;
    uv_async_t async;               /* a resolution ended */
    struct resolve_job *job;        /* in flight, or NULL (under job_mu) */
    int closing;
    int handles_open;
};

static void peers_free(struct peers *p)
{
    free(p->v);
    free(p->entries);
    free(p);
}

static void job_free(struct resolve_job *j)
{
    free(j->found);
    free(j->entries);
    free(j);
}

/* ---- the list ------------------------------------------------------------------ */

static int parse_entry(const char *s, size_t len, struct entry *e, char *err, size_t errlen)
{
    char text[300];
    if (len >= sizeof text) {
        snprintf(err, errlen, "peers: entry too long: %.60s...", s);
        return -1;
    }
    memcpy(text, s, len);
    text[len] = '\0';
    const char *rest;
    if (strncasecmp(text, "dns+srv://", 10) == 0) {
        /* the SRV records give the hosts and ports */
        e->kind = ENTRY_SRV;
        rest = text + 10;
        size_t hl = strcspn(rest, "/");
        if (hl == 0 || hl >= sizeof e->host || strchr(rest, ':')) {
            snprintf(err, errlen, "peers: '%s' needs a name and no port (dns+srv://NAME: the "
                     "SRV records give the ports)", text);
            return -1;
        }
        memcpy(e->host, rest, hl);
        e->host[hl] = '\0';
        for (char *c = e->host; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        e->port = 0;
        return 0;
    }
    if (strncasecmp(text, "http://", 7) == 0) {
        e->kind = ENTRY_HTTP;
        rest = text + 7;
    } else if (strncasecmp(text, "dns://", 6) == 0) {
        e->kind = ENTRY_DNS;
        rest = text + 6;
    } else {
        snprintf(err, errlen, "peers: '%s' is none of http://HOST:PORT, dns://NAME:PORT and "
                 "dns+srv://NAME", text);
        return -1;
    }
    size_t hl;
    const char *colon;
    if (rest[0] == '[') {           /* [v6]:port */
        const char *close = strchr(rest, ']');
        if (!close || close[1] != ':') {
            snprintf(err, errlen, "peers: '%s' has no port", text);
            return -1;
        }
        hl = (size_t)(close - rest - 1);
        memcpy(e->host, rest + 1, hl);
        colon = close + 1;
    } else {
        colon = strrchr(rest, ':');
        if (!colon) {
            snprintf(err, errlen, "peers: '%s' has no port (http://HOST:PORT)", text);
            return -1;
        }
        hl = (size_t)(colon - rest);
        memcpy(e->host, rest, hl);
    }
    e->host[hl] = '\0';
    char *end = NULL;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (hl == 0 || !end || (*end != '\0' && *end != '/') || port == 0 || port > 65535) {
        snprintf(err, errlen, "peers: '%s' needs a host and a port 1..65535", text);
        return -1;
    }
    for (char *c = e->host; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    e->port = (unsigned)port;
    return 0;
}

static int parse_list(const char *list, struct entry **out, size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    size_t cap = 0;
    for (const char *p = list ? list : ""; *p;) {
        p += strspn(p, ", \t\n");
        size_t len = strcspn(p, ", \t\n");
        if (!len)
            break;
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            struct entry *v = realloc(*out, cap * sizeof *v);
            if (!v) {
                snprintf(err, errlen, "out of memory");
                free(*out);
                return -1;
            }
            *out = v;
        }
        if (parse_entry(p, len, &(*out)[*n], err, errlen) != 0) {
            free(*out);
            *out = NULL;
            return -1;
        }
        (*n)++;
        p += len;
    }
    return 0;
}

/* ---- this host --------------------------------------------------------------------- */

/* True when addr (text) is an address of one of this host's interfaces. */
static int is_local_address(const char *addr)
{
    struct ifaddrs *ifs = NULL, *i;
    int found = 0;
    if (getifaddrs(&ifs) != 0)
        return 0;
    for (i = ifs; i && !found; i = i->ifa_next) {
        char text[INET6_ADDRSTRLEN] = "";
        if (!i->ifa_addr)
            continue;
        if (i->ifa_addr->sa_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, text, sizeof text);
        else if (i->ifa_addr->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, text,
                      sizeof text);
        found = text[0] && strcmp(text, addr) == 0;
    }
    freeifaddrs(ifs);
    return found;
}

/* Every address of host (getaddrinfo: blocks; the pool or start-up). */
static size_t resolve_host(const char *host, char (*addrs)[INET6_ADDRSTRLEN], size_t max)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *a;
    size_t n = 0;
    if (getaddrinfo(host, NULL, &hints, &res) != 0)
        return 0;
    for (a = res; a && n < max; a = a->ai_next) {
        char text[INET6_ADDRSTRLEN] = "";
        if (a->ai_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)a->ai_addr)->sin_addr, text, sizeof text);
        else if (a->ai_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)a->ai_addr)->sin6_addr, text,
                      sizeof text);
        else
            continue;
        int dup = 0;
        for (size_t k = 0; k < n && !dup; k++)
            dup = strcmp(addrs[k], text) == 0;
        if (!dup && text[0])
            snprintf(addrs[n++], INET6_ADDRSTRLEN, "%s", text);
    }
    freeaddrinfo(res);
    return n;
}

static int self_address(const struct cfg_listen *listen, const char *addr, unsigned port)
{
    if (port != listen->port)
        return 0;
    const char *lh = listen->host;
    int wildcard = !lh[0] || strcmp(lh, "0.0.0.0") == 0 || strcmp(lh, "::") == 0;
    if (!wildcard)
        return strcmp(lh, addr) == 0;
    return is_local_address(addr);
}

static void put_peer(struct peer *p, const char *host, unsigned port, int self)
{
    snprintf(p->host, sizeof p->host, "%s", host);
    p->port = port;
    int v6 = strchr(host, ':') != NULL;
    snprintf(p->id, sizeof p->id, "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", port);
    snprintf(p->base, sizeof p->base, "http://%s", p->id);
    p->self = self;
}

/* Appends a peer (unless its id is there already); v grows. */
static struct peer *add_peer(struct peer *v, size_t *n, size_t *cap, const char *host,
                             unsigned port, int self)
{
    if (!v)
        return NULL;
    if (*n == *cap) {
        struct peer *nv = realloc(v, 2 * *cap * sizeof *v);
        if (!nv)
            return v;
        v = nv;
        *cap *= 2;
    }
    put_peer(&v[*n], host, port, self);
    for (size_t d = 0; d < *n; d++)
        if (strcmp(v[d].id, v[*n].id) == 0)
            return v;
    (*n)++;
    return v;
}

/* The targets of name's SRV records (res_nquery: blocks). */
struct srv_target {
    char name[NS_MAXDNAME];
    unsigned port;
};

static size_t resolve_srv(const char *name, struct srv_target *out, size_t max)
{
    unsigned char answer[8192];
    struct __res_state rs;
    ns_msg msg;
    size_t n = 0;
    memset(&rs, 0, sizeof rs);
    if (res_ninit(&rs) != 0)
        return 0;
    int len = res_nquery(&rs, name, ns_c_in, ns_t_srv, answer, sizeof answer);
    if (len > 0 && ns_initparse(answer, len, &msg) == 0) {
        int count = ns_msg_count(msg, ns_s_an);
        for (int i = 0; i < count && n < max; i++) {
            ns_rr rr;
            if (ns_parserr(&msg, ns_s_an, i, &rr) != 0 || ns_rr_type(rr) != ns_t_srv
                || ns_rr_rdlen(rr) < 7)
                continue;
            const unsigned char *rd = ns_rr_rdata(rr);
            unsigned port = (unsigned)rd[4] << 8 | rd[5];
            if (port == 0 || dn_expand(ns_msg_base(msg), ns_msg_end(msg), rd + 6, out[n].name,
                                       sizeof out[n].name) < 0)
                continue;
            out[n++].port = port;
        }
    }
    res_nclose(&rs);
    return n;
}

/* True when host is an address, not a name: it needs no DNS. */
static int is_literal(const char *host)
{
    unsigned char a[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, a) == 1 || inet_pton(AF_INET6, host, a) == 1;
}

/* An entry that only DNS can turn into addresses. */
static int needs_dns(const struct entry *e)
{
    return e->kind != ENTRY_HTTP || !is_literal(e->host);
}

static int compare_peers(const void *a, const void *b)
{
    return strcmp(((const struct peer *)a)->id, ((const struct peer *)b)->id);
}

/* The peers the entries name now (blocks on DNS; with_dns 0: every entry
 * that needs DNS is left for the resolving thread). malloc'd. */
static struct peer *build(const struct cfg_listen *listen, const struct entry *ents,
                          size_t n_ents, int with_dns, size_t *n_out)
{
    size_t cap = 16, n = 0;
    struct peer *v = malloc(cap * sizeof *v);
    if (!v)
        return NULL;
    for (size_t i = 0; i < n_ents; i++) {
        char addrs[32][INET6_ADDRSTRLEN];
        if (!with_dns && needs_dns(&ents[i]))
            continue;
        if (ents[i].kind == ENTRY_SRV) {
            struct srv_target t[32];
            size_t nt = resolve_srv(ents[i].host, t, 32);
            for (size_t k = 0; k < nt; k++) {
                size_t na = resolve_host(t[k].name, addrs, 32);
                for (size_t a = 0; a < na; a++)
                    v = add_peer(v, &n, &cap, addrs[a], t[k].port,
                                 self_address(listen, addrs[a], t[k].port));
            }
            continue;
        }
        size_t na = resolve_host(ents[i].host, addrs, 32);
        size_t want = ents[i].kind == ENTRY_DNS ? na : 1;
        for (size_t k = 0; k < want; k++) {
            if (n == cap) {
                struct peer *nv = realloc(v, 2 * cap * sizeof *v);
                if (!nv)
                    break;
                v = nv;
                cap *= 2;
            }
            if (ents[i].kind == ENTRY_DNS) {
                put_peer(&v[n], addrs[k], ents[i].port,
                         self_address(listen, addrs[k], ents[i].port));
            } else {
                /* the name as written is the id (every node's list is the
                 * same text); self if any of its addresses is ours */
                int self = 0;
                for (size_t a = 0; a < na && !self; a++)
                    self = self_address(listen, addrs[a], ents[i].port);
                put_peer(&v[n], ents[i].host, ents[i].port, self);
            }
            int dup = 0;
            for (size_t d = 0; d < n && !dup; d++)
                dup = strcmp(v[d].id, v[n].id) == 0;
            if (!dup)
                n++;
        }
    }
    qsort(v, n, sizeof *v, compare_peers);
    *n_out = n;
    return v;
}

/* ---- re-resolution ---------------------------------------------------------------- */

static void *resolve_thread(void *arg)
{
    struct resolve_job *j = arg;
    struct peer *found = build(&j->listen, j->entries, j->n_entries, 1, &j->n_found);
    pthread_mutex_lock(&job_mu);
    j->found = found;
    j->done = 1;
    if (j->orphaned) {
        pthread_mutex_unlock(&job_mu);
        job_free(j);
        return NULL;
    }
    uv_async_send(&j->p->async);    /* the handle stays open while not orphaned */
    pthread_mutex_unlock(&job_mu);
    return NULL;
}

static int same_list(const struct peer *a, size_t na, const struct peer *b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i].id, b[i].id) != 0 || a[i].self != b[i].self)
            return 0;
    return 1;
}

static void on_resolved(uv_async_t *a)
{
    struct peers *p = a->data;
    pthread_mutex_lock(&job_mu);
    struct resolve_job *j = p->job && p->job->done ? p->job : NULL;
    if (j)
        p->job = NULL;
    pthread_mutex_unlock(&job_mu);
    if (!j)
        return;
    if (j->found && j->n_found > 0 && !same_list(p->v, p->n, j->found, j->n_found)) {
        size_t selves = 0;
        for (size_t i = 0; i < j->n_found; i++)
            selves += j->found[i].self;
        log_msg(p->log, selves ? LOG_INFO : LOG_WARN, "peers", "the layer has %zu peers "
                "(was %zu)%s", j->n_found, p->n, selves ? "" : "; none of them is this node");
        free(p->v);
        p->v = j->found;
        p->n = j->n_found;
        j->found = NULL;
    }
    job_free(j);
}

static void on_timer(uv_timer_t *t)
{
    struct peers *p = t->data;
    pthread_mutex_lock(&job_mu);
    int busy = p->job != NULL;
    pthread_mutex_unlock(&job_mu);
    if (busy || p->closing)
        return;
    struct resolve_job *j = calloc(1, sizeof *j);
    if (!j || !(j->entries = malloc(p->n_entries * sizeof *j->entries))) {
        free(j);
        return;
    }
    memcpy(j->entries, p->entries, p->n_entries * sizeof *j->entries);
    j->n_entries = p->n_entries;
    j->listen = p->cfg->listen;
    j->p = p;
    pthread_attr_t attr;
    pthread_t tid;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&job_mu);
    p->job = j;
    if (pthread_create(&tid, &attr, resolve_thread, j) != 0) {
        p->job = NULL;
        pthread_mutex_unlock(&job_mu);
        job_free(j);
    } else {
        pthread_mutex_unlock(&job_mu);
    }
    pthread_attr_destroy(&attr);
}

int peers_open(struct peers **out, const struct cfg *cfg, uv_loop_t *loop,
               const struct logger *log, char *err, size_t errlen)
{
    *out = NULL;
    struct entry *ents;
    size_t n_ents;
    if (parse_list(cfg->peers, &ents, &n_ents, err, errlen) != 0)
        return -1;
    if (n_ents == 0)
        return 0;
    struct peers *p = calloc(1, sizeof *p);
    if (!p) {
        free(ents);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->cfg = cfg;
    p->log = log;
    p->loop = loop;
    p->entries = ents;
    p->n_entries = n_ents;
    for (size_t i = 0; i < n_ents; i++)
        p->has_dns |= needs_dns(&ents[i]);
    /* names (dns://) are resolved on the pool, at once and then every
     * PEERS_RESOLVE_MS: start-up never waits for DNS */
    p->v = build(&cfg->listen, ents, n_ents, 0, &p->n);
    if (!p->v) {
        peers_free(p);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t selves = 0;
    for (size_t i = 0; i < p->n; i++)
        selves += p->v[i].self;
    if (!p->has_dns)
        log_msg(log, selves ? LOG_INFO : LOG_WARN, "peers", "%zu peers%s", p->n,
                selves ? "" : "; none of them is this node (its data plane's port on one of "
                              "this host's addresses): it asks every key of them, and stores "
                              "nothing it got from one (config key: peers)");
    /* neither handle keeps the loop alive: a stop does not wait for them */
    uv_timer_init(loop, &p->timer);
    uv_async_init(loop, &p->async, on_resolved);
    p->timer.data = p->async.data = p;
    p->handles_open = 2;
    uv_unref((uv_handle_t *)&p->timer);
    uv_unref((uv_handle_t *)&p->async);
    if (p->has_dns)
        uv_timer_start(&p->timer, on_timer, 0, PEERS_RESOLVE_MS);
    *out = p;
    return 0;
}

static void handle_closed(uv_handle_t *h)
{
    struct peers *p = h->data;
    if (--p->handles_open == 0)
        peers_free(p);
}

void peers_close(struct peers **pp)
{
    struct peers *p = *pp;
    if (!p)
        return;
    *pp = NULL;
    p->closing = 1;
    pthread_mutex_lock(&job_mu);
    struct resolve_job *j = p->job;
    p->job = NULL;
    if (j && j->done)
        job_free(j);                /* ended, not yet handed over */
    else if (j)
        j->orphaned = 1;            /* it frees itself when getaddrinfo returns */
    pthread_mutex_unlock(&job_mu);
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, handle_closed);
    uv_close((uv_handle_t *)&p->async, handle_closed);
}

/* ---- rendezvous ---------------------------------------------------------------------- */

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

uint64_t peers_score(const char *id, const char *key)
{
    uint64_t h = 1469598103934665603ULL;
    for (const char *c = id; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;      /* between the two */
    for (const char *c = key; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    return mix(h);
}

size_t peers_rank(const struct peers *p, const char *key, const struct peer **out, size_t max)
{
    const struct peer *all[64];
    uint64_t scores[64];
    size_t n = 0;
    if (!p)
        return 0;
    for (size_t i = 0; i < p->n && i < 64; i++) {
        uint64_t s = peers_score(p->v[i].id, key);
        size_t k = n++;
        while (k > 0 && scores[k - 1] < s) {    /* insertion, best first */
            scores[k] = scores[k - 1];
            all[k] = all[k - 1];
            k--;
        }
        scores[k] = s;
        all[k] = &p->v[i];
    }
    if (n > max)
        n = max;
    memcpy(out, all, n * sizeof *out);
    return n;
}

size_t peers_count(const struct peers *p)
{
    return p ? p->n : 0;
}

const struct peer *peers_at(const struct peers *p, size_t i)
{
    return p && i < p->n ? &p->v[i] : NULL;
}

size_t peers_self_rank(const struct peers *p, const char *key,
                       int (*live)(void *ctx, const struct peer *), void *ctx)
{
    const struct peer *order[64];
    size_t n = peers_rank(p, key, order, 64), rank = 0;
    for (size_t i = 0; i < n; i++) {
        if (order[i]->self)
            return rank;
        if (!live || live(ctx, order[i]))
            rank++;
    }
    return rank;
}
