/*
 * xfer — one device downloading one file, as a Device Update agent does:
 * a plain GET (no redirects followed), the body hashed with SHA-256 as it
 * streams in, then the size and the digest checked against the deployment.
 *
 * With an interruption share set, the first GET is dropped on purpose once
 * that share of its Content-Length has arrived, and the transfer resumes
 * with "Range: bytes=<got>-", which must answer 206 with a Content-Range
 * that starts at <got> and names the same total; the digest covers the
 * concatenation.
 *
 * Life of an xfer: QUEUED -> xfer_start() -> ACTIVE -> xfer_done() (once per
 * finished curl transfer: AGAIN after the deliberate cut, else DOWNLOADED or
 * FAILED) -> xfer_verify() -> OK or FAILED. xfer_cancel() ends it from any
 * state (CANCELLED). The easy handle, the digest context and the output file
 * are owned while ACTIVE and released on every way out; the struct itself
 * belongs to the caller. Thread: the one running the curl multi.
 */
#ifndef DEVSIM_XFER_H
#define DEVSIM_XFER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <curl/curl.h>

#include "deploy.h"

enum xfer_state {
    XFER_QUEUED,       /* waiting for a transfer slot */
    XFER_ACTIVE,       /* its easy handle is in the multi */
    XFER_DOWNLOADED,   /* body complete, not yet verified */
    XFER_OK,           /* verified (or nothing to verify against) */
    XFER_FAILED,       /* see erc and reason */
    XFER_CANCELLED,    /* its device failed on another file first */
};

/* Why an xfer failed: devsim's extendedResultCode. */
enum xfer_erc {
    XFER_ERC_NONE = 0,
    XFER_ERC_SHA256 = 1,      /* digest differs from the deployment's */
    XFER_ERC_SIZE = 2,        /* byte count differs from the deployment's */
    XFER_ERC_HTTP = 3,        /* the GET did not answer 200 */
    XFER_ERC_TRANSPORT = 4,   /* connection, timeout or protocol error */
    XFER_ERC_RESUME = 5,      /* the Range request was not answered as asked */
    XFER_ERC_OUTPUT = 6,      /* the file under --out could not be written */
    XFER_ERC_NO_HASH = 7,     /* the manifest gives no hashes.sha256 */
};

/* Settings shared by every xfer of a run; not owned. */
struct xfer_opts {
    double interrupt_at;      /* percent of the body before the cut; 0: none */
    long timeout;             /* seconds per request; 0: none (a request
                               * still ends after 60 s without a byte) */
    const char *out_dir;      /* keep files under out_dir/device-N/, or NULL */
};

struct xfer {
    const struct deploy_file *file;   /* not owned */
    const struct xfer_opts *opts;     /* not owned */
    unsigned device;                  /* 1-based device number */
    size_t file_index;                /* index in the deployment's files */
    enum xfer_state state;

    CURL *easy;                       /* owned while ACTIVE */
    void *md;                         /* EVP_MD_CTX, owned while ACTIVE */
    FILE *out;                        /* owned while ACTIVE, with --out */
    char *out_path;                   /* owned */

    int attempt;                      /* 0: the GET, 1: the Range resume */
    bool headers_checked;             /* status of this attempt checked */
    bool cut;                         /* the GET was dropped on purpose */
    int64_t got;                      /* body bytes taken, both attempts */
    int64_t total;                    /* Content-Length of the GET, or -1 */
    int64_t cut_at;                   /* byte count to drop the GET at, or -1 */
    int64_t resume_from;              /* first byte asked with Range */
    char content_range[96];           /* of the current attempt's answer */
    char errbuf[CURL_ERROR_SIZE];

    enum xfer_erc erc;
    long http_status;
    int curl_code;
    char reason[512];
};

enum xfer_step {
    XFER_STEP_AGAIN,        /* cut on purpose, resumed with Range */
    XFER_STEP_DOWNLOADED,   /* complete: call xfer_verify() */
    XFER_STEP_FAILED,       /* see erc and reason */
};

/* Prepares a QUEUED xfer (no resources taken). */
void xfer_init(struct xfer *x, const struct deploy_file *file, const struct xfer_opts *opts,
               unsigned device, size_t file_index);

/* Adds the GET to the multi: 0, or -1 with the xfer FAILED. */
int xfer_start(struct xfer *x, CURLM *multi);

/* Called once curl reports the transfer of x done with result. */
enum xfer_step xfer_done(struct xfer *x, CURLM *multi, CURLcode result);

/* Checks size and SHA-256 of a DOWNLOADED xfer: OK or FAILED; releases its
 * resources either way (a file under --out is kept only when OK). */
enum xfer_state xfer_verify(struct xfer *x);

/* Ends x whatever its state, removing it from the multi; a QUEUED or ACTIVE
 * xfer becomes CANCELLED, a finished one keeps its state. */
void xfer_cancel(struct xfer *x, CURLM *multi);

/* Frees what x owns; call when the run ends. */
void xfer_free(struct xfer *x);

#endif
