/* fuzz_fixup.h: recompute the XXH3 checksums of mutated inputs, so that the
 * fuzzers reach the field checks behind them (checksum rejection itself is covered
 * by the unit tests). */
#ifndef FUZZ_FIXUP_H
#define FUZZ_FIXUP_H

#include <endian.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <xxhash.h>

#include "imgchain_format.h"

static inline uint64_t fx_get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

static inline void fx_put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static inline void fx_slot(uint8_t *b, size_t len, size_t so)
{
	uint8_t *s = b + so;
	uint64_t io = fx_get64(s + 40), n = fx_get64(s + 48);
	uint32_t version;

	memcpy(&version, b + 8, 4);    /* entry hashes are v1's only */
	if (io >= ICF_HEADER_SIZE && io <= len && n <= (len - io) / 64) {
		XXH128_canonical_t c;

		for (uint64_t i = 0; i < n && le32toh(version) == ICF_IMAGE_V1; i++) {
			uint8_t *e = b + io + i * 64;

			fx_put64(e + 56, XXH3_64bits(e, 56));
		}
		XXH128_canonicalFromHash(&c, XXH3_128bits(b + io, n * 64));
		memcpy(s + 80, c.digest, 16);
	}
	fx_put64(s + 504, XXH3_64bits(s, 504));
}

/* An image file: header hash, and for each slot its index entries, index hash and
 * slot hash. */
static inline void fx_image(uint8_t *b, size_t len)
{
	if (len < ICF_HEADER_SIZE)
		return;
	fx_put64(b + 504, XXH3_64bits(b, 504));
	fx_slot(b, len, ICF_SLOT_A_OFF);
	fx_slot(b, len, ICF_SLOT_B_OFF);
}

static inline void fx_keyfile(uint8_t *b, size_t len)
{
	if (len == sizeof(struct icf_keyfile))
		fx_put64(b + len - 8, XXH3_64bits(b, len - 8));
}

#endif
