/* digest — see digest.h. */
#include "cache/digest.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

int digest_init(struct digest *d)
{
    if (!d->ctx)
        d->ctx = EVP_MD_CTX_new();
    if (!d->ctx)
        return -1;
    return EVP_DigestInit_ex(d->ctx, EVP_sha256(), NULL) == 1 ? 0 : -1;
}

int digest_init_md5(struct digest *d)
{
    if (!d->ctx)
        d->ctx = EVP_MD_CTX_new();
    if (!d->ctx)
        return -1;
    return EVP_DigestInit_ex(d->ctx, EVP_md5(), NULL) == 1 ? 0 : -1;
}

void digest_update(struct digest *d, const void *buf, size_t len)
{
    EVP_DigestUpdate(d->ctx, buf, len);
}

void digest_final(struct digest *d, unsigned char *out)
{
    unsigned int n = 0;
    EVP_DigestFinal_ex(d->ctx, out, &n);
}

void digest_free(struct digest *d)
{
    EVP_MD_CTX_free(d->ctx);
    d->ctx = NULL;
}

void digest_hex(const unsigned char *bin, size_t n, char *out)
{
    static const char hexdigits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdigits[bin[i] >> 4];
        out[2 * i + 1] = hexdigits[bin[i] & 15];
    }
    out[2 * n] = '\0';
}

void digest_base64(const unsigned char *bin, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, bin, (int)n);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int digest_from_hex(const char *hex, unsigned char *bin, size_t n)
{
    if (strlen(hex) != 2 * n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        bin[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

int digest_from_base64(const char *b64, unsigned char *bin, size_t n)
{
    size_t len = strlen(b64);
    size_t want = 4 * ((n + 2) / 3);
    unsigned char tmp[96];
    if (len != want || len / 4 * 3 > sizeof tmp)
        return -1;
    /* Only the alphabet, with '=' only as the padding the length implies:
     * EVP_DecodeBlock would read a '=' inside as zero bits. */
    size_t pad_want = want - (4 * n + 2) / 3;
    for (size_t i = 0; i < len; i++) {
        char c = b64[i];
        bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                     (c >= '0' && c <= '9') || c == '+' || c == '/';
        if (i < len - pad_want ? !alpha : c != '=')
            return -1;
    }
    /* EVP_DecodeBlock returns whole groups of 3, padding included. */
    int got = EVP_DecodeBlock(tmp, (const unsigned char *)b64, (int)len);
    if (got < 0 || (size_t)got < n)
        return -1;
    size_t pad = (size_t)got - n;
    if (pad > 2 || pad != (size_t)((b64[len - 1] == '=') + (b64[len - 2] == '=')))
        return -1;
    memcpy(bin, tmp, n);
    return 0;
}

int digest_is_sha256_hex(const char *s)
{
    size_t i = 0;
    for (; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return i == 64;
}

/* The base64 value of `label` in a digest field: "sha-256=:B64:" in
 * Repr-Digest (colons), "SHA-256=B64" in Digest (up to ',' or ';'). */
static int digest_field(const char *field, const char *label, int colons, unsigned char *out,
                        size_t outlen)
{
    char b64[100];
    size_t ll = strlen(label);
    for (const char *p = field; p && *p; p = strchr(p, ',')) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        if (strncasecmp(p, label, ll) != 0 || p[ll] != '=')
            continue;
        const char *v = p + ll + 1;
        if (colons && *v++ != ':')
            return -1;
        size_t n = strcspn(v, colons ? ":" : ",; \t");
        if (n >= sizeof b64 || (colons && v[n] != ':'))
            return -1;
        memcpy(b64, v, n);
        b64[n] = '\0';
        return digest_from_base64(b64, out, outlen);
    }
    return -1;
}

int digest_from_fields(const char *repr_digest, const char *digest, unsigned char *out)
{
    if (repr_digest && digest_field(repr_digest, "sha-256", 1, out, DIGEST_SHA256_LEN) == 0)
        return 0;
    if (digest && digest_field(digest, "sha-256", 0, out, DIGEST_SHA256_LEN) == 0)
        return 0;
    return -1;
}

int digest_md5_from_field(const char *value, unsigned char *out)
{
    return value ? digest_from_base64(value, out, DIGEST_MD5_LEN) : -1;
}
