/*
 * token.c: the admin token's keyed hash (see token.h).
 */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "shm/token.h"

int ks_token_key_new(unsigned char key[KS_TOKEN_KEY_LEN], char *err, size_t errlen)
{
    size_t got = 0;
    while (got < KS_TOKEN_KEY_LEN) {
        ssize_t n = getrandom(key + got, KS_TOKEN_KEY_LEN - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "cannot draw the admin token key: getrandom: %s", strerror(errno));
            return -1;
        }
        got += (size_t)n;
    }
    return 0;
}

void ks_token_mac(const unsigned char key[KS_TOKEN_KEY_LEN], const char *token, size_t len,
                  unsigned char out[KS_TOKEN_MAC_LEN])
{
    unsigned int n = KS_TOKEN_MAC_LEN;
    if (HMAC(EVP_sha256(), key, KS_TOKEN_KEY_LEN, (const unsigned char *)token, len, out, &n) == NULL)
        memset(out, 0, KS_TOKEN_MAC_LEN);   /* matches nothing: see ks_token_matches */
}

bool ks_token_matches(const unsigned char key[KS_TOKEN_KEY_LEN],
                      const unsigned char mac[KS_TOKEN_MAC_LEN], const char *token, size_t len)
{
    static const unsigned char zero[KS_TOKEN_MAC_LEN];
    unsigned char got[KS_TOKEN_MAC_LEN];
    ks_token_mac(key, token, len, got);
    /* a failed hash (all zero) never lets anyone in */
    return CRYPTO_memcmp(got, mac, KS_TOKEN_MAC_LEN) == 0 &&
           CRYPTO_memcmp(got, zero, KS_TOKEN_MAC_LEN) != 0;
}
