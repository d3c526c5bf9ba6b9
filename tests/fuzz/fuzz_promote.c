/* fuzz_promote.c: the promote state decoder (FORMAT.md 18) on arbitrary bytes.  What it
 * accepts must encode back to the same bytes (the format has one spelling). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "ic_promote.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ic_promote_state st;
	char out[IC_PROMOTE_DEST_MAX + 256];
	int n;

	if (ic_promote_state_decode((const char *)data, size, &st))
		return 0;
	n = ic_promote_state_encode(&st, out, sizeof(out));
	if (n < 0 || (size_t)n != size || memcmp(out, data, size))
		__builtin_trap();
	return 0;
}
