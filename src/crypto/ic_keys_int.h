/* ic_keys_int.h: what ic_keys.c (keys, generations) and ic_keyfile.c (the key file, its
 * slots) share (internal to src/crypto). */
#ifndef IC_KEYS_INT_H
#define IC_KEYS_INT_H

#include <stdint.h>
#include <stddef.h>

#include "ic_keys.h"

/* sodium_init(), once: 0 or -EIO with a message. */
int ic_sodium_ready(void);
/* masters[G * ICF_KEY_LEN] holds the newest master key of kf (G its newest generation): unwrap every
 * older one from it, build the key, compare generation 0 with the key file's key check. */
int ic_keyfile_finish_unlock(const struct ic_keyfile *kf, uint8_t *masters, struct ic_key **out);
/* 0 if key holds exactly the generations of kf (it was unlocked from it), else IC_EKEY;
 * sodium_init() first (-EIO). */
int ic_key_matches(const struct ic_keyfile *kf, const struct ic_key *key);
/* Wrap master into slot n of kf under pass (kf's version and generation fixed). */
int ic_slot_fill(struct ic_keyfile *kf, unsigned n, const uint8_t *master, const char *pass,
		 size_t passlen, uint64_t opslimit, uint64_t memlimit);

#endif
