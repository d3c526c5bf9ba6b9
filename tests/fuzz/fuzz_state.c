/* fuzz_state.c: the key holder's state file decoder (FORMAT.md "State file") on arbitrary
 * bytes.  Whatever decodes as version 2 must encode back to the same bytes; a version 1
 * file must encode to a version 2 file that decodes to the same state. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "ic_state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ic_state st, again;
	static char out[IC_STATE_MAX_BYTES];
	size_t n;

	if (ic_state_decode((const char *)data, size, &st, "fuzz") != 0)
		return 0;
	if (st.npoints > IC_STATE_POINTS || (st.have_keygen && st.keygen > ICF_KEY_GEN_MAX))
		__builtin_trap();
	n = ic_state_encode(&st, out);
	if (n > IC_STATE_MAX_BYTES)
		__builtin_trap();
	if (size >= 16 && !memcmp(data, "imgchain-state 2", 16)) {
		if (n != size || memcmp(out, data, size))
			__builtin_trap();
	} else if (ic_state_decode(out, n, &again, "again") != 0 ||
		   memcmp(&again, &st, sizeof(st))) {
		__builtin_trap();
	}
	return 0;
}
