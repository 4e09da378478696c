/*
 * upstream — the libcurl multi handle driven by the libuv loop.
 *
 * Owns the CURLM handle, one uv_timer_t for curl's timeout, and one
 * uv_poll_t per socket curl asks to watch (struct upstream_sock, freed in
 * its close callback). curl's socket and timer callbacks only (re)arm libuv
 * handles; curl is called back (curl_multi_socket_action) only from libuv
 * callbacks, never from inside one of curl's own callbacks.
 *
 * A transfer is an easy handle its owner set up (URL, write and header
 * callbacks) plus a struct upstream_xfer the owner embeds, which names the
 * completion callback. The completion callback runs on the loop thread,
 * after the easy handle was removed from the multi handle; the owner then
 * cleans the easy handle up (or reuses it). upstream_cancel() removes a
 * transfer without calling its completion callback.
 *
 * Thread: loop thread only.
 */
#ifndef EDGECACHE_UPSTREAM_H
#define EDGECACHE_UPSTREAM_H

#include <curl/curl.h>
#include <uv.h>
#include "config/log.h"

struct upstream;
struct upstream_xfer;

typedef void (*upstream_done_cb)(struct upstream_xfer *x, CURLcode result);

struct upstream_xfer {
    CURL *easy;                 /* owned by the xfer's owner */
    upstream_done_cb done;
    int active;                 /* 1 while added to the multi handle */
};

/* A new easy handle with what every upstream request of edgecache shares:
 * http and https only, no signals, the User-Agent, the connect timeout and
 * an error buffer (CURL_ERROR_SIZE bytes, owned by the caller). NULL when
 * out of memory. */
CURL *upstream_easy(uint64_t connect_timeout_ms, char *errbuf);

int upstream_open(struct upstream **out, uv_loop_t *loop, const struct logger *log);
/* Cancels what is still running (no completion callbacks), closes the
 * libuv handles and frees when they are closed; sets *u to NULL. */
void upstream_close(struct upstream **u);

/* Adds x->easy; x->done will be called once, unless cancelled. Returns 0,
 * or -1 (and x->done will not be called). */
int upstream_start(struct upstream *u, struct upstream_xfer *x);
void upstream_cancel(struct upstream *u, struct upstream_xfer *x);

/* Pause (CURLPAUSE_RECV) and resume a transfer's body. */
void upstream_pause(struct upstream *u, struct upstream_xfer *x, int paused);

#endif
