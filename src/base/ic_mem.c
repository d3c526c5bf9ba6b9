/* ic_mem.c: small memory facts shared by every layer. */
#include "config.h"

#include <stdint.h>
#include <string.h>

#include "ic_mem.h"

int ic_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint64_t acc = 0;
	size_t i = 0;

	for (; i + 64 <= len; i += 64) {
		uint64_t w[8];

		memcpy(w, p + i, 64);
		acc |= w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
		if (acc)
			return 0;
	}
	for (; i < len; i++)
		acc |= p[i];
	return acc == 0;
}
