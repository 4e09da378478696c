/*
 * relay — methods other than GET and HEAD on the route-prefix and
 * forward-proxy shapes (DESIGN.md §5): passed to the origin uncached, the
 * request body streamed up and the answer streamed back, with backpressure
 * both ways (a full buffer pauses the other side: the MHD connection is
 * suspended, or the curl transfer paused; nothing polls). A successful
 * unsafe method (POST, PUT, DELETE, PATCH) forgets what is stored for the
 * URL (RFC 9111 §4.4).
 *
 * A relay is shared by three holders, each with one reference: the client
 * request (until MHD completes it), the upstream transfer (until it ends or
 * is cancelled) and the answer's content reader (until MHD frees the
 * answer). The last to let go frees it. Thread: loop thread.
 */
#ifndef EDGECACHE_RELAY_H
#define EDGECACHE_RELAY_H

#include <microhttpd.h>
#include "server/edge.h"

struct relay;
struct worker;
struct route_target;

/* Starts relaying method to rt's origin URL. Returns the relay with the
 * request's reference, or NULL with a reason. */
struct relay *relay_start(struct edge *e, struct worker *w, struct MHD_Connection *conn,
                          const char *method, const struct route_target *rt, char *reason,
                          size_t reasonlen);
/* Every later call of the access handler for the request. */
enum MHD_Result relay_continue(struct relay *r, const char *upload, size_t *upload_size);
/* The request is complete (or its client gone): drops its reference. */
void relay_release(struct relay **r);
/* Shutdown: cancels every relay's upstream transfer. */
void relay_stop_all(struct edge *e);

#endif
