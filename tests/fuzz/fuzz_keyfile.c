/* fuzz_keyfile.c: the key file decoder (versions 1 and 2) on arbitrary bytes. */
#include "config.h"

#include <stdlib.h>

#include "imgchain.h"
#include "fuzz_fixup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ic_keyfile kf;
	static uint8_t again[sizeof(struct icf_keyfile) + ICF_KEY_GEN_MAX * sizeof(struct icf_key_gen)];
	uint8_t *buf = malloc(size ? size : 1);
	size_t n;

	memcpy(buf, data, size);
	/* half the time: a valid file hash, to reach the field checks (both versions) */
	if (size >= 8 && (data[size - 1] & 1))
		fx_put64(buf + size - 8, XXH3_64bits(buf, size - 8));
	if (ic_keyfile_decode(buf, size, &kf, "fuzz") == 0) {
		/* whatever decodes must encode back to the same bytes */
		n = ic_keyfile_encode(&kf, again);
		if (n != size || n != ic_keyfile_size(&kf) || memcmp(again, buf, size))
			__builtin_trap();
	}
	free(buf);
	return 0;
}
