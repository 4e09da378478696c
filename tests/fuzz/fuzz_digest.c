/*
 * fuzz_digest — the digest fields of a response and the encodings
 * (cache/digest.h).
 *
 * Feeds: the input split into fields on '\n' (a missing field is an absent
 * header):
 *   0 Repr-Digest    1 Digest    2 Content-MD5 (or x-ms-blob-content-md5)
 *   3 a hex string   4 a base64 string
 * to digest_from_fields(), digest_md5_from_field(), digest_from_hex() and
 * digest_from_base64(); and the raw input bytes to the encoders and the
 * streaming SHA-256 and MD5.
 *
 * Checks, beyond "no crash, no UB":
 *   - digest_from_fields: 0 or -1; Repr-Digest wins over Digest (with a
 *     usable Repr-Digest, Digest does not matter; without one, the result
 *     is Digest's alone); the same fields give the same digest; a digest
 *     found is what "sha-256=:B64:" (Repr-Digest) and "SHA-256=B64" (Digest)
 *     of its own base64 give back; out is left alone on -1;
 *   - digest_md5_from_field, digest_from_hex, digest_from_base64: a value
 *     decoded is of the promised shape (2n hex digits; 4 * ceil(n / 3)
 *     characters of the base64 alphabet, '=' only as the padding) and
 *     encodes back to the same bytes (hex: to the value in lower case);
 *   - any n bytes (n <= 64): digest_hex / digest_base64 decode back to
 *     them, with the lengths the header gives; digest_is_sha256_hex
 *     exactly for the hex of 32 bytes;
 *   - SHA-256 and MD5 of the input are the same fed at once or in two
 *     pieces, and after digest_final the context starts again.
 *
 * run.sh: -max_len=1024
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cache/digest.h"
#include "fuzz_util.h"

enum { F_REPR, F_DIGEST, F_MD5, F_HEX, F_B64, N_FIELDS };

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* True when s is 4 * ceil(n / 3) characters of the alphabet, '=' only as
 * the padding a length of n bytes needs. */
static int b64_shaped(const char *s, size_t n)
{
    size_t len = strlen(s), pad = (3 - n % 3) % 3;
    if (len != 4 * ((n + 2) / 3))
        return 0;
    for (size_t i = 0; i < len; i++) {
        int is_pad = i >= len - pad;
        if (is_pad ? s[i] != '=' : !strchr(b64_alphabet, s[i]) || s[i] == '\0')
            return 0;
    }
    return 1;
}

static void check_b64_round_trip(const unsigned char *bin, size_t n, const char *what)
{
    char b64[4 * 22 + 1];
    unsigned char back[64];
    digest_base64(bin, n, b64);
    FUZZ_CHECK(b64_shaped(b64, n), "%s: base64 of %zu bytes is '%s'", what, n, b64);
    FUZZ_CHECK(digest_from_base64(b64, back, n) == 0 && memcmp(back, bin, n) == 0,
               "%s: base64 '%s' of %zu bytes does not decode back", what, b64, n);
}

static void check_fields(const char *repr, const char *dig)
{
    unsigned char out[DIGEST_SHA256_LEN], again[DIGEST_SHA256_LEN], alone[DIGEST_SHA256_LEN];
    unsigned char untouched[DIGEST_SHA256_LEN];
    memset(out, 0xa5, sizeof out);
    memset(untouched, 0xa5, sizeof untouched);
    int rc = digest_from_fields(repr, dig, out);
    FUZZ_CHECK(rc == 0 || rc == -1, "digest_from_fields: %d", rc);
    if (rc != 0) {
        FUZZ_CHECK(memcmp(out, untouched, sizeof out) == 0,
                   "digest_from_fields refused but wrote out");
        return;
    }
    FUZZ_CHECK(digest_from_fields(repr, dig, again) == 0 && memcmp(out, again, sizeof out) == 0,
               "digest_from_fields: twice, two digests");
    /* Repr-Digest first */
    if (digest_from_fields(repr, NULL, alone) == 0) {
        FUZZ_CHECK(memcmp(alone, out, sizeof out) == 0, "Repr-Digest '%s' alone differs", repr);
    } else {
        FUZZ_CHECK(digest_from_fields(NULL, dig, alone) == 0 &&
                       memcmp(alone, out, sizeof out) == 0,
                   "Digest '%s' alone differs", dig ? dig : "(null)");
    }
    /* what it found, written in each field's syntax, gives it back */
    char b64[DIGEST_SHA256_B64], field[DIGEST_SHA256_B64 + 16];
    digest_base64(out, sizeof out, b64);
    snprintf(field, sizeof field, "sha-256=:%s:", b64);
    FUZZ_CHECK(digest_from_fields(field, NULL, again) == 0 && memcmp(out, again, sizeof out) == 0,
               "Repr-Digest '%s' does not give its digest back", field);
    snprintf(field, sizeof field, "SHA-256=%s", b64);
    FUZZ_CHECK(digest_from_fields(NULL, field, again) == 0 && memcmp(out, again, sizeof out) == 0,
               "Digest '%s' does not give its digest back", field);
}

static void check_md5_field(const char *v)
{
    unsigned char out[DIGEST_MD5_LEN];
    if (!v || digest_md5_from_field(v, out) != 0)
        return;
    FUZZ_CHECK(b64_shaped(v, DIGEST_MD5_LEN), "Content-MD5 '%s' decoded, but is no padded "
               "base64 of 16 bytes", v);
    check_b64_round_trip(out, sizeof out, "Content-MD5");
}

static void check_hex_field(const char *v)
{
    unsigned char bin[64];
    char hex[129];
    size_t n = strlen(v) / 2;
    if (n == 0 || n > sizeof bin || digest_from_hex(v, bin, n) != 0)
        return;
    digest_hex(bin, n, hex);
    FUZZ_CHECK(strlen(v) == 2 * n && strcasecmp(hex, v) == 0,
               "hex '%s' decoded to bytes whose hex is '%s'", v, hex);
    FUZZ_CHECK(digest_is_sha256_hex(hex) == (n == DIGEST_SHA256_LEN),
               "digest_is_sha256_hex('%s') for %zu bytes", hex, n);
}

static void check_b64_field(const char *v)
{
    unsigned char bin[64];
    for (size_t n = 1; n <= sizeof bin; n++) {
        if (digest_from_base64(v, bin, n) != 0)
            continue;
        FUZZ_CHECK(b64_shaped(v, n), "base64 '%s' decoded as %zu bytes, but is not their "
                   "padded base64", v, n);
        check_b64_round_trip(bin, n, "base64 field");
    }
}

static void check_stream(int (*init)(struct digest *), const uint8_t *data, size_t size,
                         size_t cut, size_t len, const char *what)
{
    struct digest a = {0}, b = {0};
    unsigned char one[DIGEST_SHA256_LEN], two[DIGEST_SHA256_LEN], three[DIGEST_SHA256_LEN];
    FUZZ_CHECK(init(&a) == 0 && init(&b) == 0, "%s: init failed", what);
    digest_update(&a, data, size);
    digest_final(&a, one);
    digest_update(&b, data, cut);
    digest_update(&b, data + cut, size - cut);
    digest_final(&b, two);
    FUZZ_CHECK(memcmp(one, two, len) == 0, "%s: two pieces (cut at %zu) differ", what, cut);
    /* the context starts again after final */
    FUZZ_CHECK(init(&a) == 0, "%s: init again failed", what);
    digest_update(&a, data, size);
    digest_final(&a, three);
    FUZZ_CHECK(memcmp(one, three, len) == 0, "%s: a second round differs", what);
    digest_free(&a);
    digest_free(&a);            /* safe twice */
    digest_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_cstr(data, size), *f[N_FIELDS];
    fuzz_split(buf, '\n', f, N_FIELDS);

    check_fields(f[F_REPR], f[F_DIGEST]);
    check_fields(f[F_DIGEST], f[F_REPR]);
    check_md5_field(f[F_MD5]);
    if (f[F_HEX])
        check_hex_field(f[F_HEX]);
    if (f[F_B64]) {
        check_b64_field(f[F_B64]);
        check_md5_field(f[F_B64]);
    }

    /* the raw bytes through the encoders */
    size_t n = size < 64 ? size : 64;
    char hex[129];
    unsigned char back[64];
    digest_hex(data, n, hex);
    FUZZ_CHECK(strlen(hex) == 2 * n, "hex of %zu bytes is %zu characters", n, strlen(hex));
    for (size_t i = 0; i < 2 * n; i++)
        FUZZ_CHECK(strchr("0123456789abcdef", hex[i]) && hex[i], "hex '%s' not lower case", hex);
    FUZZ_CHECK(digest_from_hex(hex, back, n) == 0 && memcmp(back, data, n) == 0,
               "hex '%s' does not decode back", hex);
    FUZZ_CHECK(digest_is_sha256_hex(hex) == (n == DIGEST_SHA256_LEN),
               "digest_is_sha256_hex('%s')", hex);
    if (n > 0)
        check_b64_round_trip(data, n, "raw bytes");

    size_t cut = size ? data[0] % (size + 1) : 0;
    check_stream(digest_init, data, size, cut, DIGEST_SHA256_LEN, "SHA-256");
    check_stream(digest_init_md5, data, size, cut, DIGEST_MD5_LEN, "MD5");
    free(buf);
    return 0;
}
