/* fuzz_journal.c: the consolidation journal decoder (FORMAT.md "Journal") on arbitrary bytes.
 * Half the time the "sum" line is fixed so that the line parser is reached. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "ic_cons_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct journal j;
	char *buf = malloc(size + 40);
	size_t n = size;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	if (size && (data[size - 1] & 1)) {
		/* the input's last byte chose a fixed checksum: append the sum line */
		n = size - 1;
		buf[n] = '\0';
		n += (size_t)snprintf(buf + n, 40, "sum %016llx\n",
				      (unsigned long long)XXH3_64bits(buf, n));
	}
	if (ic_cons_journal_decode(buf, n, &j, "fuzz") == 0 &&
	    (j.phase < J_IDLE || j.phase > J_COMMIT))
		__builtin_trap();
	ic_cons_journal_destroy(&j);
	free(buf);
	return 0;
}
