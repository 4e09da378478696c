/*
 * sim — N simulated devices taking one deployment at once, on one thread:
 * every device's downloads are easy handles in one curl multi, at most
 * `concurrency` of them in flight, started in device order.
 *
 * A device starts when its first transfer does, succeeds when every file
 * verified, and fails at its first bad file (its other transfers are then
 * cancelled). Each state change is one JSON object on one line of `out`:
 *   ADU:      {"device":3,"t":0.012,"state":"DownloadStarted","workflow":…}
 *             … DownloadSucceeded, InstallStarted, InstallSucceeded,
 *             ApplyStarted, then {"state":"Idle","resultCode":700}
 *             or {"state":"Failed","resultCode":0,"extendedResultCode":E,
 *                 "file":"<fileName>","reason":"…"}
 *   firmware: {"fwUpdateStatus":"downloading"} → "verifying" → "applying" →
 *             "current" with "currentFwVersion",
 *             or {"fwUpdateStatus":"error","fwUpdateSubstatus":"<reason>"}
 * ("t" is seconds since the run started; E is enum xfer_erc.) The run ends
 * with one summary line:
 *   {"summary":true,"devices":N,"succeeded":k,"failed":f,"bytes":B,
 *    "seconds":S,"resumes":R,"files":[{"name":…,"ok":k,"failed":f,
 *    "cancelled":c}]}
 * where bytes counts the body bytes devices took (a resumed file's bytes
 * once each, a failed or cancelled file's up to where it stopped), resumes
 * the Range requests made, and cancelled the files not fetched because
 * their device had already failed.
 *
 * Owns nothing after sim_run() returns. Thread: the caller's, which blocks.
 */
#ifndef DEVSIM_SIM_H
#define DEVSIM_SIM_H

#include <stdbool.h>
#include <stdio.h>

#include "deploy.h"

struct sim_opts {
    unsigned devices;          /* >= 1 */
    unsigned concurrency;      /* transfers at once across devices; 0: all */
    double interrupt_at;       /* percent (0, 100) before the deliberate cut; 0: none */
    long timeout;              /* seconds per request; 0: none (see xfer_opts) */
    bool quiet;                /* the summary line only */
    const char *out_dir;       /* keep verified files here, or NULL */
};

struct sim_result {
    unsigned succeeded;
    unsigned failed;
};

/* Runs the simulation to its end. Returns 0 with *res filled, or -1 when
 * the run could not be set up or the curl multi failed (message in err). */
int sim_run(const struct deploy *d, const struct sim_opts *o, FILE *out,
            struct sim_result *res, char *err, size_t errlen);

#endif
