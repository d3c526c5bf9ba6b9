/* fuzz_vmdk.c: VMDK synthesis on arbitrary disk sizes, grains and read ranges. */
#include "config.h"

#include "imgchain.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool zero_grain(void *arg, uint64_t g)
{
	return (g * 2654435761u) & 4;
}

static int read_disk(void *arg, void *buf, size_t len, uint64_t off)
{
	memset(buf, (int)(off & 0xff), len);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ic_vmdk_ident id;
	struct ic_vmdk_sparse s;
	struct ic_vmdk_source src = { zero_grain, read_disk, NULL };
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
	if (ic_vmdk_sparse_init(&s, disk, grain, "disk-sparse.vmdk", &id) == 0) {
		len %= sizeof(buf);
		if (s.file_size)
			off %= s.file_size + 4096;
		ic_vmdk_sparse_read(&s, buf, len, off, &src);
	}
	return 0;
}
