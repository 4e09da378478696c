/*
 * api — the control plane's calls, one handler each (DESIGN.md §7). The
 * route table in server/admin/serve.c dispatches to them; they use the
 * plumbing of server/admin/admin.h below them.
 *
 *   GET  /healthz, /status, /metrics, /      status.c
 *   POST /api/v1/expectations                 api_expect.c
 *   POST /api/v1/rewrite[?prefetch=1]         api_rewrite.c
 *   POST /api/v1/prefetch, DELETE /api/v1/deployments/{id}   api_prefetch.c
 *   GET  /api/v1/objects, DELETE /api/v1/objects/{sha256}    api_objects.c
 *   POST /api/v1/import (multipart, streamed) api_import.c
 *   (manifests handed to the parent)          forward.c
 *
 * Thread: loop thread.
 */
#ifndef EDGECACHE_ADMIN_API_H
#define EDGECACHE_ADMIN_API_H

#include "server/admin/admin.h"

/* GET /healthz, /status, /metrics and the dashboard (server/admin/status.c). */
enum MHD_Result api_healthz(struct admin_req *req);
enum MHD_Result api_status(struct admin_req *req);
enum MHD_Result api_metrics(struct admin_req *req);
enum MHD_Result api_dashboard(struct admin_req *req);
/* Starts (admin_start) and stops (admin_stop) the sampling of /status's
 * "history". */
void status_history_start(struct edge *e);
void status_history_stop(struct edge *e);

/* POST /api/v1/expectations (server/admin/api_expect.c). */
enum MHD_Result api_expectations(struct admin_req *req);

/* Manifests (server/admin/api_rewrite.c): rewrite and register; prefetch and pin
 * every file when prefetch is set; answer the rewritten document when
 * answer_doc is set, else a summary (202). */
enum MHD_Result api_manifest(struct admin_req *req, int prefetch, int answer_doc);

/* The object list and purge (server/admin/api_objects.c). */
enum MHD_Result api_objects_list(struct admin_req *req);
enum MHD_Result api_objects_delete(struct admin_req *req, const char *sha256);

/* Sideloading (server/admin/api_import.c): api_import_begin() runs when
 * the request's header is in (it answers 400 or 413 itself, or makes the
 * body stream into the store's temp files), api_import() once the body is
 * complete. */
enum MHD_Result api_import_begin(struct admin_req *req);
enum MHD_Result api_import(struct admin_req *req);

/* Deployments (server/admin/api_prefetch.c). */
enum MHD_Result api_prefetch(struct admin_req *req);
enum MHD_Result api_prefetch_urls(struct admin_req *req, struct json_t *list);
enum MHD_Result api_deployment_delete(struct admin_req *req, const char *id);
struct json_t *api_deployments_json(struct edge *e);
/* 1 when url's origin is on the allow-list; else 0 and why names it. */
int api_url_allowed(const struct cfg *cfg, const char *url, char *why, size_t whylen);

/* Hands an accepted body to the parent's control plane (server/admin/forward.c):
 * call is the path and query there, e.g. "/api/v1/rewrite?prefetch=1".
 * Returns at once; nothing happens without parent_admin_url. */
void forward_to_parent(struct edge *e, const char *call, const char *body, size_t len);
/* The same to every other peer of the layer (cache/peers.h), marked as a
 * peer's so that it goes no further. */
void forward_to_peers(struct edge *e, const char *call, const char *body, size_t len);
/* True when the request came from a peer (it is not handed on again). */
int forward_from_peer(struct MHD_Connection *c);
/* Abandons every forward in flight (shutdown). */
void forward_stop_all(struct edge *e);

#endif
