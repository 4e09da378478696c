/*
 * digest — SHA-256 computed as bytes stream in (OpenSSL EVP), and the
 * encodings edgecache speaks: lower-case hex (blob names, ETags) and
 * standard padded base64 (Repr-Digest, ADU manifests).
 *
 * A struct digest owns its EVP context; digest_free() releases it and is
 * safe to call twice. Thread: any, one digest per thread at a time.
 */
#ifndef EDGECACHE_DIGEST_H
#define EDGECACHE_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#define DIGEST_SHA256_LEN 32
#define DIGEST_SHA256_HEX 65    /* 64 characters and the NUL */
#define DIGEST_SHA256_B64 45    /* 44 characters and the NUL */
#define DIGEST_MD5_LEN 16

struct digest {
    void *ctx;                  /* EVP_MD_CTX */
};

int digest_init(struct digest *d);                  /* SHA-256: 0, or -1 */
int digest_init_md5(struct digest *d);              /* MD5 (Content-MD5): 0, or -1 */
void digest_update(struct digest *d, const void *buf, size_t len);
/* Writes the digest (32 bytes for SHA-256, 16 for MD5); the digest can be
 * initialised again. */
void digest_final(struct digest *d, unsigned char *out);
void digest_free(struct digest *d);

/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void digest_hex(const unsigned char *bin, size_t n, char *out);
/* Standard padded base64 into out (4 * ceil(n / 3) + 1 bytes). */
void digest_base64(const unsigned char *bin, size_t n, char *out);
/* Decodes hex (any case) of exactly 2n characters; 0 or -1. */
int digest_from_hex(const char *hex, unsigned char *bin, size_t n);
/* Decodes padded base64 of exactly n bytes; 0 or -1. */
int digest_from_base64(const char *b64, unsigned char *bin, size_t n);
/* True when s is exactly 64 lower-case hex characters. */
int digest_is_sha256_hex(const char *s);

/* The SHA-256 a response's digest fields declare: Repr-Digest
 * ("sha-256=:BASE64:", RFC 9530 Structured Field byte sequence, among
 * other algorithms) or, failing that, the obsolete Digest ("SHA-256=BASE64",
 * RFC 3230). Either may be NULL. 0 and out (32 bytes) set, or -1 when
 * neither names a well-formed SHA-256. */
int digest_from_fields(const char *repr_digest, const char *digest, unsigned char *out);
/* The MD5 of Content-MD5 or x-ms-blob-content-md5 (base64): 0 and out (16
 * bytes), or -1. */
int digest_md5_from_field(const char *value, unsigned char *out);

#endif
