/* fuzz_vmdk.c: VMDK synthesis on arbitrary disk sizes, grains, allocations and read ranges
 * (the compact sparse file: rank and select over the allocation map). */
#include "config.h"

#include <string.h>

#include "imgchain.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Grains whose map a fuzz input may build: 128 KiB of bitmap. */
#define MAX_GRAINS (1u << 20)

static int read_disk(void *arg, void *buf, size_t len, uint64_t off)
{
	memset(buf, (int)(off & 0xff), len);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ic_vmdk_ident id;
	struct ic_vmdk_sparse s;
	struct ic_vmdk_source src = { read_disk, NULL };
	struct ic_rank alloc;
	uint64_t disk, off;
	uint32_t grain, len;
	static uint8_t buf[1 << 20];
	char desc[2048];

	if (size < 24)
		return 0;
	memcpy(&disk, data, 8);
	memcpy(&grain, data + 8, 4);
	memcpy(&off, data + 12, 8);
	memcpy(&len, data + 20, 4);
	ic_vmdk_ident_derive(data, size, &id);
	ic_vmdk_flat_descriptor(desc, sizeof(desc), disk, "disk-flat.vmdk", &id);
	if (ic_vmdk_sparse_init(&s, disk, grain, "disk-sparse.vmdk", &id) == 0 &&
	    s.n_grains <= MAX_GRAINS && ic_rank_init(&alloc, s.n_grains) == 0) {
		/* runs of stored grains from the input's bytes */
		for (size_t i = 24, g = 0; i + 1 < size && g < s.n_grains; i += 2) {
			if (data[i] & 1)
				ic_rank_set_range(&alloc, g, g + data[i + 1] + 1ull);
			g += data[i + 1] + 1ull;
		}
		ic_rank_seal(&alloc);
		if (ic_vmdk_sparse_set_alloc(&s, &alloc) == 0) {
			len %= sizeof(buf);
			off %= s.file_size + 4096;
			ic_vmdk_sparse_read(&s, buf, len, off, &src);
		}
		ic_rank_free(&alloc);
	}
	return 0;
}
