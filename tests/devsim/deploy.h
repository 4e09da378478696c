/*
 * deploy — what a simulated device is told to download: the files of one
 * deployment document, each with its URL and what the device checks it
 * against.
 *
 * Two document shapes are recognised, anywhere in the JSON:
 *  - Device Update for IoT Hub: an object holding "updateManifest" (a JSON
 *    string, parsed here; `files` is a map fileId -> {fileName, sizeInBytes,
 *    hashes.sha256} in manifest v4/v5, or an array of {filename, ...} in the
 *    2.0 format) and "fileUrls" (fileId -> URL). This covers the twin shape
 *    properties.desired.deviceUpdate.service and a bare service object.
 *    Every file of `files` with a fileUrls entry is downloaded; relatedFiles
 *    (delta sources, which come from the device itself) are not.
 *  - A firmware twin: an object "firmware" holding fwPackageURI, with an
 *    optional fwPackageCheckValue (checked only when it is a SHA-256: 64 hex
 *    or 44 base64 characters), fwVersion and fwSize. properties.desired is
 *    looked at first, then the rest of the document.
 * When a document holds both, the ADU deployment wins.
 *
 * A struct deploy owns every string it points to; deploy_free() releases
 * them and leaves the struct empty (safe to call twice). Thread: any; a
 * deploy is read-only once parsed.
 */
#ifndef DEVSIM_DEPLOY_H
#define DEVSIM_DEPLOY_H

#include <stddef.h>
#include <stdint.h>

enum deploy_kind {
    DEPLOY_ADU,        /* deviceUpdate.service: updateManifest + fileUrls */
    DEPLOY_FIRMWARE,   /* firmware twin: fwPackageURI */
};

/* How the expected SHA-256 is written, and so how it is compared. */
enum deploy_hash_form {
    DEPLOY_HASH_NONE,  /* nothing to check against (see note) */
    DEPLOY_HASH_B64,   /* standard padded base64, compared as a string */
    DEPLOY_HASH_HEX,   /* 64 hex characters, compared ignoring case */
};

struct deploy_file {
    char *id;          /* ADU fileId, or "firmware" */
    char *name;        /* fileName as the document gives it (never NULL) */
    char *url;
    int64_t size;      /* expected size in bytes, -1 when not given */
    enum deploy_hash_form form;
    char *sha256;      /* expected digest as written; NULL for HASH_NONE */
    char *note;        /* why a firmware file is not checked, or NULL; a
                        * file with neither digest nor note (an ADU file
                        * without hashes.sha256) fails verification */
};

struct deploy {
    enum deploy_kind kind;
    char *workflow_id;         /* ADU workflow.id, or NULL */
    char *update_id;           /* ADU "provider/name/version", or NULL */
    char *fw_version;          /* firmware fwVersion, or NULL */
    size_t n_files;
    struct deploy_file *files;
    size_t n_skipped;          /* fileUrls entries with no file in the
                                * manifest (the files of a detached
                                * manifest): not downloaded */
    char **skipped;            /* their fileIds */
};

/* Parses a document of len bytes (a UTF-8 byte-order mark is skipped).
 * Returns 0 with *d filled, or -1 with a message naming the problem in err
 * (d is then empty). */
int deploy_parse(const char *text, size_t len, struct deploy *d,
                 char *err, size_t errlen);

void deploy_free(struct deploy *d);

#endif
