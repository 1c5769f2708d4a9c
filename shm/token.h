/*
 * token.h: the admin token as the route table carries it.
 *
 * The route table lives in the state file, which the status group may
 * read (keystoned(8)), so it must not hold server.admin_token: whoever
 * reads status would take the write token.  The table holds a keyed hash
 * of it instead, HMAC-SHA256 under a key the master draws from the
 * kernel at start, before it forks any worker.  The key is in the
 * master's memory and, inherited by fork, in every worker's; it is never
 * written anywhere, so the hash in the file can be neither reversed nor
 * checked against guesses.  A reload publishes the new token's hash with
 * the rest of the table, under the table's own generation and sequence
 * counter (shm.h): a worker sees the old token or the new one, never a
 * mix, with nothing more to synchronize.  A worker checks a presented
 * token by hashing it under the same key and comparing the two hashes in
 * constant time.  The key lasts as long as the master: a restart draws a
 * new one.
 */
#ifndef KS_TOKEN_H
#define KS_TOKEN_H

#include <stdbool.h>
#include <stddef.h>

#define KS_TOKEN_KEY_LEN 32
#define KS_TOKEN_MAC_LEN 32

/* Draw a fresh key; 0, or -1 with err. */
int ks_token_key_new(unsigned char key[KS_TOKEN_KEY_LEN], char *err, size_t errlen);
/* The keyed hash of token[0..len). */
void ks_token_mac(const unsigned char key[KS_TOKEN_KEY_LEN], const char *token, size_t len,
                  unsigned char out[KS_TOKEN_MAC_LEN]);
/* Does token[0..len) hash to mac under key?  Constant time in the token's
 * content (the hashes are compared, not the tokens). */
bool ks_token_matches(const unsigned char key[KS_TOKEN_KEY_LEN],
                      const unsigned char mac[KS_TOKEN_MAC_LEN], const char *token, size_t len);

#endif
