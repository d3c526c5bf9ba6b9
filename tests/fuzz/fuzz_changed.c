/* fuzz_changed.c: the changed-blocks file parser on arbitrary text. */
#include "config.h"

#include <stdio.h>
#include <unistd.h>

#include "imgchain.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64];
	static uint8_t map[1024];
	FILE *f;

	if (!path[0])
		snprintf(path, sizeof(path), "/tmp/fuzz-changed-%d", (int)getpid());
	f = fopen(path, "w");
	if (!f)
		return 0;
	fwrite(data, 1, size, f);
	fclose(f);
	/* 1024 blocks of 4 KiB: the parser must keep every mark inside the map */
	memset(map, 0, sizeof(map));
	ic_parse_changed_blocks(path, 1024 * 4096 - 100, 4096, map);
	return 0;
}
