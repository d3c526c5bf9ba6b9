/* ic_cdp_int.h: what the journal's writer and reader share (FORMAT.md 15.2). */
#ifndef IC_CDP_INT_H
#define IC_CDP_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <sodium.h>

#include "imgchain_cdp.h"
#include "imgchain_format.h"
#include "ic_keys.h"

#include "ic_array.h"

#include "ic_codec.h"
#include "ic_journal.h"       /* sessions, keys, ids and MACs shared with the readers */

/* An encoder's codecs: zstd, and records stored uncompressed (a block the probe finds
 * incompressible, ic_cdp_probe) */
struct ic_cdp_codec {
	struct ic_codec *z, *raw;
};

/* The writer (ic_cdp_write.c; ic_cdp_range.c encodes ranges with workers). */
struct ic_cdp_writer {
	char *chain_dir, *cdp_dir, *path;
	const struct ic_key *key;
	struct ic_cdp_codec codec;
	uint8_t *frame;             /* head + record */
	struct icf_cdp_header h;
	uint8_t kcdp[32], mac[32];
	crypto_generichash_state hk;
	uint64_t k, frames, off, nblocks;
	uint64_t off0;              /* the end of checkpoint 0 */
	uint32_t version;           /* the journal version written (the options') */
	ic_cdp_acc *terms, acc;     /* the map seal (FORMAT.md 15.5): each block's term, their sum */
	struct timespec last;
	int fd;
	int failed;                 /* sticky: the first failure */
	/* ic_cdp_put_range's workers (ic_cdp_range.c): a codec each, frames of a chunk */
	unsigned nthreads;
	int level;
	unsigned raw_bits;          /* ic_cdp_probe's threshold, 1/1000 bit a byte; 0: off */
	struct ic_cdp_codec *codecs;
	/* deferred captures (ic_cdp_mark_dirty): a bit a block, and the blocks whose bit was
	 * set (a block journalled since, bit clear, is skipped) */
	uint64_t *dirty_bits, ndirty;
	IC_ARRAY(uint64_t) dirty;
	uint8_t *dirty_buf;         /* ic_cdp_put_dirty's reads, kept from flush to flush */
	uint8_t *slots;
	uint32_t *lens;
};

/* A record frame (head + record) of block pos = buf[len] for the current interval into
 * frame[sizeof(struct icf_cdp_rec) + ic_codec_bound()], with codec (thread-safe for
 * distinct codecs while w does not change): its bytes, 0 when all zero and skip_zero. */
int ic_cdp_encode_frame(const struct ic_cdp_writer *w, const struct ic_cdp_codec *codec,
			uint64_t pos, const void *buf, uint32_t len, bool skip_zero, uint8_t *frame);
/* Append a frame encode_frame made (in position order within a request). */
int ic_cdp_append_frame(struct ic_cdp_writer *w, const uint8_t *frame);
/* The length of block pos in the session's geometry. */
uint32_t ic_cdp_block_len(const struct ic_cdp_writer *w, uint64_t pos);
void ic_cdp_range_free(struct ic_cdp_writer *w);
/* A new session: no block dirty (its capture journals them all). */
int ic_cdp_dirty_reset(struct ic_cdp_writer *w);
void ic_cdp_dirty_free(struct ic_cdp_writer *w);
/* Block pos journalled: no longer dirty. */
static inline void ic_cdp_dirty_clear(struct ic_cdp_writer *w, uint64_t pos)
{
	if (w->dirty_bits && (w->dirty_bits[pos / 64] >> (pos % 64) & 1)) {
		w->dirty_bits[pos / 64] &= ~(1ull << (pos % 64));
		w->ndirty--;
	}
}
/* Whether buf[len] looks incompressible: the byte entropy of a sample (4 KiB spread over
 * the block) is at least bits_milli / 1000 bits a byte. */
bool ic_cdp_probe(const uint8_t *buf, uint32_t len, unsigned bits_milli);
/* Both codecs of an encoder (NULL members on failure: ic_cdp_codec_free). */
int ic_cdp_codec_new(const struct ic_cdp_writer *w, struct ic_cdp_codec *cc);
void ic_cdp_codec_free(struct ic_cdp_codec *cc);

#endif
