/* fuzz_keyfile.c: the key file decoder on arbitrary bytes. */
#include "config.h"

#include <stdlib.h>

#include "imgchain.h"
#include "fuzz_fixup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct icf_keyfile kf;
	uint8_t again[sizeof(kf)], *buf = malloc(size ? size : 1);

	memcpy(buf, data, size);
	if (size && (data[size - 1] & 1))
		fx_keyfile(buf, size);    /* half the time: reach the field checks */
	if (ic_keyfile_decode(buf, size, &kf, "fuzz") == 0) {
		/* whatever decodes must encode back to the same bytes */
		ic_keyfile_encode(&kf, again);
		if (size != sizeof(again) || memcmp(again, buf, size))
			__builtin_trap();
	}
	free(buf);
	return 0;
}
