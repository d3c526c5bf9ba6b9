/* fuzz_record.c: the block record decoder (bounds, AEAD, zstd) on arbitrary
 * entries and records, under a fixed key. */
#include "config.h"

#include <string.h>

#include <sodium.h>

#include "imgchain.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct ic_key *key;
static struct ic_codec *codec;
static uint8_t *out;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t chain_id[16] = "fuzz-chain-id-01";
	struct icf_entry e;
	uint32_t version;

	if (!key) {
		uint8_t master[32] = { 1 };

		key = ic_key_from_master(master, chain_id);
		codec = ic_codec_new(65536, 1);
		out = malloc(65536);
	}
	if (size < 16)
		return 0;
	memset(&e, 0, sizeof(e));
	memcpy(&e.stored_len, data, 4);
	memcpy(&e.plain_len, data + 4, 4);
	memcpy(&e.kind, data + 8, 2);
	memcpy(&e.origin, data + 10, 4);
	e.pos = data[14];
	/* byte 15: bit 0 the format (v1, v2), the rest v2's point id (0 is refused) */
	version = data[15] & 1 ? ICF_IMAGE_V2 : ICF_IMAGE_V1;
	e.origin_id = version == ICF_IMAGE_V2 ? data[15] >> 1 : 0;
	/* the record is what follows; the decoder must never read past stored_len,
	 * so only offer records that are really that long */
	if (e.stored_len > size - 16)
		e.stored_len = (uint32_t)(size - 16);
	if (ic_codec_decode(codec, key, chain_id, version, &e, data + 16, out) == 0 && e.plain_len > 65536)
		__builtin_trap();
	return 0;
}
