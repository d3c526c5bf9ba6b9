/* fuzz_owner.c: the overlay owner record and release request decoder (FORMAT.md 10.7) on
 * arbitrary bytes, both kinds.  Whatever decodes must encode back to exactly the input
 * (the text is canonical), and decode again to the same fields. */
#include "config.h"

#include <stdbool.h>
#include <string.h>

#include "ic_owner.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ic_owner_rec r, again;
	static char out[IC_OWNER_MAX];
	int line, n;

	for (int req = 0; req < 2; req++) {
		if (ic_owner_decode(data, size, req, &r, &line))
			continue;
		n = ic_owner_encode(&r, req, out, sizeof(out));
		if (n < 0 || (size_t)n != size || memcmp(out, data, size))
			__builtin_trap();
		if (ic_owner_decode(out, (size_t)n, req, &again, &line) ||
		    memcmp(&again, &r, sizeof(r)))
			__builtin_trap();
	}
	return 0;
}
