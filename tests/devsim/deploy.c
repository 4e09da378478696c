/*
 * deploy — finds the deployment in a JSON document and lists its files.
 * See deploy.h for the shapes recognised.
 */
#include "deploy.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* Deeper than any real twin; bounds the recursion of the searches. */
#define DEPLOY_MAX_DEPTH 64

static json_t *find_adu_service(json_t *node, int depth);
static json_t *find_firmware(json_t *root);
static int parse_adu(json_t *service, struct deploy *d, char *err, size_t errlen);
static int parse_firmware(json_t *fw, struct deploy *d, char *err, size_t errlen);

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static const char *skip_bom(const char *text, size_t *len)
{
    if (*len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        *len -= 3;
        return text + 3;
    }
    return text;
}

static json_t *load_json(const char *text, size_t len, const char *what,
                         char *err, size_t errlen)
{
    json_error_t je;
    text = skip_bom(text, &len);
    json_t *root = json_loadb(text, len, 0, &je);
    if (!root)
        fail(err, errlen, "%s is not valid JSON: line %d column %d: %s",
             what, je.line, je.column, je.text);
    return root;
}

int deploy_parse(const char *text, size_t len, struct deploy *d,
                 char *err, size_t errlen)
{
    memset(d, 0, sizeof *d);
    json_t *root = load_json(text, len, "the document", err, errlen);
    if (!root)
        return -1;
    int rc;
    json_t *service = find_adu_service(root, 0);
    json_t *fw = service ? NULL : find_firmware(root);
    if (service)
        rc = parse_adu(service, d, err, errlen);
    else if (fw)
        rc = parse_firmware(fw, d, err, errlen);
    else
        rc = fail(err, errlen, "no recognisable deployment: expected an ADU service "
                  "object (\"updateManifest\" and \"fileUrls\") or a firmware twin "
                  "(\"firmware\" with \"fwPackageURI\")");
    json_decref(root);
    if (rc != 0)
        deploy_free(d);
    return rc;
}

void deploy_free(struct deploy *d)
{
    for (size_t i = 0; i < d->n_files; i++) {
        struct deploy_file *f = &d->files[i];
        free(f->id);
        free(f->name);
        free(f->url);
        free(f->sha256);
        free(f->note);
    }
    for (size_t i = 0; i < d->n_skipped; i++)
        free(d->skipped[i]);
    free(d->files);
    free(d->skipped);
    free(d->workflow_id);
    free(d->update_id);
    free(d->fw_version);
    memset(d, 0, sizeof *d);
}

/* ---------------------------------------------------------------- search */

static int is_adu_service(json_t *o)
{
    json_t *m = json_object_get(o, "updateManifest");
    return (json_is_string(m) || json_is_object(m))
        && json_is_object(json_object_get(o, "fileUrls"));
}

/* Depth first, in document order: the first object that is a service. */
static json_t *find_adu_service(json_t *node, int depth)
{
    if (depth > DEPLOY_MAX_DEPTH)
        return NULL;
    if (json_is_object(node)) {
        if (is_adu_service(node))
            return node;
        const char *key;
        json_t *v;
        json_object_foreach(node, key, v) {
            json_t *hit = find_adu_service(v, depth + 1);
            if (hit)
                return hit;
        }
    } else if (json_is_array(node)) {
        size_t i;
        json_t *v;
        json_array_foreach(node, i, v) {
            json_t *hit = find_adu_service(v, depth + 1);
            if (hit)
                return hit;
        }
    }
    return NULL;
}

static int is_firmware(json_t *o)
{
    return json_is_object(o) && json_is_string(json_object_get(o, "fwPackageURI"));
}

static json_t *find_firmware_any(json_t *node, int depth)
{
    if (depth > DEPLOY_MAX_DEPTH)
        return NULL;
    const char *key;
    json_t *v;
    size_t i;
    if (json_is_object(node)) {
        json_t *fw = json_object_get(node, "firmware");
        if (is_firmware(fw))
            return fw;
        json_object_foreach(node, key, v) {
            json_t *hit = find_firmware_any(v, depth + 1);
            if (hit)
                return hit;
        }
    } else if (json_is_array(node)) {
        json_array_foreach(node, i, v) {
            json_t *hit = find_firmware_any(v, depth + 1);
            if (hit)
                return hit;
        }
    }
    return NULL;
}

/* The desired properties first: a twin's reported side has a "firmware"
 * object too. */
static json_t *find_firmware(json_t *root)
{
    json_t *desired = json_object_get(json_object_get(root, "properties"), "desired");
    json_t *fw = json_object_get(desired, "firmware");
    return is_firmware(fw) ? fw : find_firmware_any(root, 0);
}

/* ----------------------------------------------------------------- files */

static struct deploy_file *add_file(struct deploy *d)
{
    struct deploy_file *grown = realloc(d->files, (d->n_files + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    d->files = grown;
    struct deploy_file *f = &d->files[d->n_files++];
    memset(f, 0, sizeof *f);
    f->size = -1;
    return f;
}

static int64_t size_of(json_t *v)
{
    if (json_is_integer(v) && json_integer_value(v) >= 0)
        return json_integer_value(v);
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        long long n = strtoll(s, &end, 10);
        if (*s && !*end && n >= 0)
            return n;
    }
    return -1;
}

/* The last path segment of a URL, without query or fragment. */
static char *url_basename(const char *url)
{
    size_t end = strcspn(url, "?#");
    size_t start = end;
    while (start > 0 && url[start - 1] != '/')
        start--;
    return strndup(url + start, end - start);
}

/* ------------------------------------------------------------------- ADU */

static const char *adu_file_name(json_t *entry)
{
    const char *name = json_string_value(json_object_get(entry, "fileName"));
    return name ? name : json_string_value(json_object_get(entry, "filename"));
}

static int add_adu_file(struct deploy *d, const char *id, json_t *entry, const char *url)
{
    struct deploy_file *f = add_file(d);
    if (!f)
        return -1;
    const char *name = adu_file_name(entry);
    const char *sha = json_string_value(json_object_get(json_object_get(entry, "hashes"),
                                                        "sha256"));
    f->id = strdup(id);
    f->url = strdup(url);
    f->name = name ? strdup(name) : url_basename(url);
    f->size = size_of(json_object_get(entry, "sizeInBytes"));
    f->form = sha ? DEPLOY_HASH_B64 : DEPLOY_HASH_NONE;
    f->sha256 = dup_or_null(sha);
    return f->id && f->url && f->name && (!sha || f->sha256) ? 0 : -1;
}

/* manifest v4/v5: files is a map fileId -> entry. */
static int adu_files_map(struct deploy *d, json_t *files, json_t *urls)
{
    const char *id;
    json_t *entry;
    json_object_foreach(files, id, entry) {
        const char *url = json_string_value(json_object_get(urls, id));
        if (url && json_is_object(entry) && add_adu_file(d, id, entry, url) != 0)
            return -1;
    }
    return 0;
}

/* The fileUrls key for an entry of a 2.0 manifest's files array: its own
 * fileId when it has one, else the URL whose last segment is its filename. */
static const char *adu_array_id(json_t *entry, json_t *urls)
{
    const char *id = json_string_value(json_object_get(entry, "fileId"));
    if (id && json_object_get(urls, id))
        return id;
    const char *name = adu_file_name(entry);
    const char *key;
    json_t *v;
    json_object_foreach(urls, key, v) {
        if (!name || !json_is_string(v))
            continue;
        char *base = url_basename(json_string_value(v));
        int same = base && strcmp(base, name) == 0;
        free(base);
        if (same)
            return key;
    }
    return NULL;
}

static int adu_files_array(struct deploy *d, json_t *files, json_t *urls)
{
    size_t i;
    json_t *entry;
    json_array_foreach(files, i, entry) {
        const char *id = json_is_object(entry) ? adu_array_id(entry, urls) : NULL;
        const char *url = id ? json_string_value(json_object_get(urls, id)) : NULL;
        if (url && add_adu_file(d, id, entry, url) != 0)
            return -1;
    }
    return 0;
}

static int has_file_id(const struct deploy *d, const char *id)
{
    for (size_t i = 0; i < d->n_files; i++)
        if (strcmp(d->files[i].id, id) == 0)
            return 1;
    return 0;
}

static int adu_note_skipped(struct deploy *d, json_t *urls)
{
    const char *id;
    json_t *v;
    json_object_foreach(urls, id, v) {
        if (has_file_id(d, id))
            continue;
        char **grown = realloc(d->skipped, (d->n_skipped + 1) * sizeof *grown);
        if (!grown)
            return -1;
        d->skipped = grown;
        if (!(d->skipped[d->n_skipped] = strdup(id)))
            return -1;
        d->n_skipped++;
    }
    return 0;
}

static char *adu_update_id(json_t *manifest)
{
    json_t *u = json_object_get(manifest, "updateId");
    const char *p = json_string_value(json_object_get(u, "provider"));
    const char *n = json_string_value(json_object_get(u, "name"));
    const char *v = json_string_value(json_object_get(u, "version"));
    char *out = NULL;
    if (p && n && v && asprintf(&out, "%s/%s/%s", p, n, v) < 0)
        out = NULL;
    return out;
}

static json_t *adu_manifest(json_t *service, char *err, size_t errlen)
{
    json_t *m = json_object_get(service, "updateManifest");
    if (json_is_object(m))
        return json_incref(m);
    const char *s = json_string_value(m);
    return load_json(s, strlen(s), "updateManifest", err, errlen);
}

static int adu_collect(json_t *manifest, json_t *urls, struct deploy *d,
                       char *err, size_t errlen)
{
    json_t *files = json_object_get(manifest, "files");
    int rc;
    if (json_is_object(files))
        rc = adu_files_map(d, files, urls);
    else if (json_is_array(files))
        rc = adu_files_array(d, files, urls);
    else
        return fail(err, errlen, "updateManifest has no \"files\" map or array");
    if (rc != 0 || adu_note_skipped(d, urls) != 0)
        return fail(err, errlen, "out of memory");
    if (d->n_files == 0)
        return fail(err, errlen, "no file of updateManifest.files has a fileUrls entry");
    return 0;
}

static int parse_adu(json_t *service, struct deploy *d, char *err, size_t errlen)
{
    json_t *manifest = adu_manifest(service, err, errlen);
    if (!manifest)
        return -1;
    d->kind = DEPLOY_ADU;
    d->workflow_id = dup_or_null(json_string_value(
        json_object_get(json_object_get(service, "workflow"), "id")));
    d->update_id = adu_update_id(manifest);
    int rc = adu_collect(manifest, json_object_get(service, "fileUrls"), d, err, errlen);
    json_decref(manifest);
    return rc;
}

/* -------------------------------------------------------------- firmware */

static int all_of(const char *s, size_t n, const char *set)
{
    return strspn(s, set) == n;
}

#define HEX_DIGITS "0123456789abcdefABCDEF"
#define B64_DIGITS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

/* 64 hex, or 43 base64 characters and one '=' (32 bytes). */
static enum deploy_hash_form check_value_form(const char *s)
{
    size_t n = strlen(s);
    if (n == 64 && all_of(s, 64, HEX_DIGITS))
        return DEPLOY_HASH_HEX;
    if (n == 44 && all_of(s, 43, B64_DIGITS) && s[43] == '=')
        return DEPLOY_HASH_B64;
    return DEPLOY_HASH_NONE;
}

static char *check_value_note(const char *value)
{
    char *note = NULL;
    int rc = value
        ? asprintf(&note, "fwPackageCheckValue \"%.80s\" is not a SHA-256 (64 hex or 44 "
                   "base64 characters): not checked", value)
        : asprintf(&note, "no fwPackageCheckValue: not checked");
    return rc < 0 ? NULL : note;
}

static int parse_firmware(json_t *fw, struct deploy *d, char *err, size_t errlen)
{
    const char *uri = json_string_value(json_object_get(fw, "fwPackageURI"));
    const char *check = json_string_value(json_object_get(fw, "fwPackageCheckValue"));
    if (!*uri)
        return fail(err, errlen, "firmware.fwPackageURI is empty");
    d->kind = DEPLOY_FIRMWARE;
    d->fw_version = dup_or_null(json_string_value(json_object_get(fw, "fwVersion")));
    struct deploy_file *f = add_file(d);
    if (!f)
        return fail(err, errlen, "out of memory");
    f->id = strdup("firmware");
    f->url = strdup(uri);
    f->name = url_basename(uri);
    f->size = size_of(json_object_get(fw, "fwSize"));
    f->form = check ? check_value_form(check) : DEPLOY_HASH_NONE;
    if (f->form != DEPLOY_HASH_NONE)
        f->sha256 = strdup(check);
    else
        f->note = check_value_note(check);
    if (!f->id || !f->url || !f->name || (!f->sha256 && !f->note))
        return fail(err, errlen, "out of memory");
    return 0;
}
