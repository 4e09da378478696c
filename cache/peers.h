/*
 * peers — the other edgecache nodes of this layer (config key: peers),
 * which together act as one cache.
 *
 * Each key has an owner: the live peer with the highest rendezvous
 * (highest-random-weight) score for it, a hash of the peer's id and the
 * key, so that adding or removing a node moves only that node's share of
 * the keys. A miss on a node that does not own its key is asked of the
 * owner in DO shape (like a parent, fill_http.c aim), and passed on, not
 * stored: the owner fills from the parent or origin and keeps the one copy.
 * A request a peer forwarded carries PEER_FIELD and is never forwarded
 * again within the layer (the loop guard), whatever this node thinks of
 * the key's owner.
 *
 * The list: entries "http://host:port" (a peer's data plane, this node's
 * own among them), "dns://name:port" (every A/AAAA record of name is a
 * peer on that port: a Kubernetes headless Service gives one per pod) or
 * "dns+srv://name" (every address of every SRV target, on its port).
 * Addresses are taken as they are; names are resolved at start and again
 * every PEERS_RESOLVE_MS on a thread of their own (neither start-up nor a
 * stop waits for a DNS server). This node is the entry whose port is its
 * data plane's and whose address is one of this host's. A peer is down while its upstream health (fill.c) says so;
 * its keys then go to the next-ranked live peer.
 *
 * Thread: the main loop (resolution on a detached thread, on copies).
 */
#ifndef EDGECACHE_PEERS_H
#define EDGECACHE_PEERS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/cfg.h"
#include "config/log.h"

#define PEER_FIELD "Edgecache-Peer"     /* "1" on a request a peer forwarded */
#define PEERS_RESOLVE_MS 10000

struct peer {
    char host[260];                 /* its name or address */
    unsigned port;
    char id[300];                   /* "host:port": what the score hashes */
    char base[320];                 /* "http://host:port" */
    int self;
};

struct peers;

/* Parses cfg->peers (a comma- or space-separated list); resolves it once.
 * 0, or -1 with err (a bad entry). *out is NULL when the list is empty. */
int peers_open(struct peers **out, const struct cfg *cfg, uv_loop_t *loop,
               const struct logger *log, char *err, size_t errlen);
void peers_close(struct peers **p);

/* The peers, ordered best first for key (at most max; returns how many). */
size_t peers_rank(const struct peers *p, const char *key, const struct peer **out,
                  size_t max);
/* Every peer, in the order of the list (for /status). */
size_t peers_count(const struct peers *p);
const struct peer *peers_at(const struct peers *p, size_t i);
/* This node's rank for key among the peers (0: the owner), counting only
 * those for which live() is true (self always is). */
size_t peers_self_rank(const struct peers *p, const char *key,
                       int (*live)(void *ctx, const struct peer *), void *ctx);
/* The rendezvous score of peer id for key. */
uint64_t peers_score(const char *id, const char *key);

#endif
