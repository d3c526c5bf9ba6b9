/* fuzz_chain.c: a chain directory of arbitrary image files: scanning, tree,
 * index checks, views, seals and block reads must give clean errors only.
 * The input is split at "\n--8<--\n" into up to four files 00000001.img... */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <sodium.h>

#include "imgchain.h"
#include "fuzz_fixup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char sep[] = "\n--8<--\n";

static int read_all(void *arg, const struct ic_block_ref *ref)
{
	(void)arg;
	(void)ref;
	return 0;
}

static void exercise(struct ic_chain *c, struct ic_key *key)
{
	struct ic_codec *codec = ic_codec_new(c->block_size ? c->block_size : 4096, 1);
	uint8_t *buf = malloc(ICF_BLOCK_MAX), *rec = malloc(ic_codec_bound(ICF_BLOCK_MAX));

	for (size_t i = 0; i < c->npoints; i++) {
		struct ic_view *v;

		/* without the owner map: no per-block memory, so any disk size */
		if (!ic_view_open_nomap(c, &c->points[i], &v)) {
			ic_view_check_map(v);
			ic_view_check_seal(v, key);
			for (uint64_t p = 0; p < v->nblocks && p < 64; p++)
				ic_view_read_block(v, codec, key, p, buf, rec);
			ic_view_free(v);
		}
		/* the seal first, then the map */
		if (!ic_view_open_sealed(c, &c->points[i], key, &v))
			ic_view_free(v);
		if (c->points[i].img->slot.disk_size > (64u << 20) || ic_view_open(c, &c->points[i], &v))
			continue;
		ic_view_walk(v, read_all, NULL);
		ic_view_check_seal(v, key);
		for (uint64_t p = 0; p < v->nblocks && p < 64; p++)
			ic_view_read_block(v, codec, key, p, buf, rec);
		ic_view_free(v);
	}
	free(buf);
	free(rec);
	ic_codec_free(codec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ic_key *key;
	char dir[] = "/tmp/fuzz-chain-XXXXXX";
	struct ic_chain *c;
	size_t start = 0;
	int n = 0;

	if (!key) {
		uint8_t master[32] = { 2 };
		uint8_t id[16] = { 0 };

		if (sodium_init() < 0)
			abort();
		key = ic_key_from_master(master, id);
	}
	if (!mkdtemp(dir))
		return 0;
	while (start <= size && n < 4) {
		const uint8_t *end = memmem(data + start, size - start, sep, sizeof(sep) - 1);
		size_t len = end ? (size_t)(end - (data + start)) : size - start;
		char path[64];
		int fd;

		snprintf(path, sizeof(path), "%s/%08d.img", dir, ++n);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd >= 0) {
			uint8_t *b = malloc(len ? len : 1);

			memcpy(b, data + start, len);
			fx_image(b, len);
			if (write(fd, b, len) < 0)
				(void)0;
			free(b);
			close(fd);
		}
		if (!end)
			break;
		start += len + sizeof(sep) - 1;
	}
	if (ic_chain_open(dir, &c) == 0) {
		exercise(c, key);
		ic_chain_free(c);
	}
	for (int i = 1; i <= n; i++) {
		char path[64];

		snprintf(path, sizeof(path), "%s/%08d.img", dir, i);
		unlink(path);
	}
	rmdir(dir);
	return 0;
}
