/* ic_vhd.c: the fixed VHD of a disk (the disk, zeros to a whole MiB, the footer). */
#include <errno.h>
#include <string.h>

#include "ic_vhd.h"

#define VHD_EPOCH 946684800         /* 2000-01-01T00:00:00Z, the footer's time origin */
#define VHD_FEATURES 0x2u           /* "reserved", always set */
#define VHD_VERSION 0x00010000u
#define VHD_TYPE_FIXED 2u
#define CHS_MAX_SECTORS (65535ull * 16 * 255)

/* An n-byte big-endian field at p. */
static void put_be(uint8_t *p, uint64_t v, unsigned n)
{
	while (n--) {
		p[n] = (uint8_t)v;
		v >>= 8;
	}
}

/* The specification's appendix, step by step (sectors per track 17, 31, then 63). */
void ic_vhd_chs(uint64_t sectors, uint16_t *cyl, uint8_t *heads, uint8_t *spt)
{
	uint64_t cth, h, s;

	if (sectors > CHS_MAX_SECTORS)
		sectors = CHS_MAX_SECTORS;
	if (sectors >= 65535ull * 16 * 63) {
		s = 255;
		h = 16;
		cth = sectors / s;
	} else {
		s = 17;
		cth = sectors / s;
		h = (cth + 1023) / 1024;
		if (h < 4)
			h = 4;
		if (cth >= h * 1024 || h > 16) {
			s = 31;
			h = 16;
			cth = sectors / s;
		}
		if (cth >= h * 1024) {
			s = 63;
			h = 16;
			cth = sectors / s;
		}
	}
	*cyl = (uint16_t)(cth / h);
	*heads = (uint8_t)h;
	*spt = (uint8_t)s;
}

int ic_vhd_init(struct ic_vhd *h, uint64_t disk_size, int64_t created, const uint8_t uuid[16])
{
	uint8_t *f = h->footer;
	uint32_t sum = 0;
	uint16_t cyl;
	uint8_t heads, spt;
	/* seconds since 2000 in 32 bits: a time before or far after is clamped (without
	 * computing created - VHD_EPOCH, which overflows for the most negative times) */
	int64_t t = created < VHD_EPOCH ? 0 : created - VHD_EPOCH;

	memset(h, 0, sizeof(*h));
	if (disk_size == 0)
		return -EINVAL;
	if (disk_size > IC_VHD_MAX_SIZE)
		return -EFBIG;
	h->disk_size = disk_size;
	h->cur_size = (disk_size + IC_VHD_ALIGN - 1) / IC_VHD_ALIGN * IC_VHD_ALIGN;
	if (h->cur_size > IC_VHD_MAX_SIZE)
		return -EFBIG;
	h->file_size = h->cur_size + IC_VHD_FOOTER;
	memcpy(f, "conectix", 8);
	put_be(f + 8, VHD_FEATURES, 4);
	put_be(f + 12, VHD_VERSION, 4);
	put_be(f + 16, UINT64_MAX, 8);  /* data offset: none (fixed) */
	put_be(f + 24, t < 0 ? 0 : t > UINT32_MAX ? UINT32_MAX : (uint32_t)t, 4);
	/* "win ": the creators for which readers (qemu up to 8.x) take the size from the
	 * footer's current size rather than from CHS, which cannot express a MiB multiple */
	memcpy(f + 28, "win ", 4);
	put_be(f + 32, 0x00010000u, 4); /* creator version */
	memcpy(f + 36, "Wi2k", 4);      /* creator host OS */
	put_be(f + 40, h->cur_size, 8); /* original size */
	put_be(f + 48, h->cur_size, 8); /* current size */
	ic_vhd_chs(h->cur_size / 512, &cyl, &heads, &spt);
	put_be(f + 56, cyl, 2);
	f[58] = heads;
	f[59] = spt;
	put_be(f + 60, VHD_TYPE_FIXED, 4);
	memcpy(f + 68, uuid, 16);
	f[84] = 0;                      /* saved state */
	for (unsigned i = 0; i < IC_VHD_FOOTER; i++)
		sum += f[i];
	put_be(f + 64, ~sum, 4);
	return 0;
}

int ic_vhd_read(const struct ic_vhd *h, void *buf, size_t len, uint64_t off,
		ic_vhd_read_fn read_disk, void *arg)
{
	uint8_t *p = buf;

	while (len) {
		size_t n;
		int ret;

		if (off < h->disk_size) {
			n = h->disk_size - off < len ? (size_t)(h->disk_size - off) : len;
			ret = read_disk(arg, p, n, off);
			if (ret)
				return ret;
		} else if (off < h->cur_size) {
			n = h->cur_size - off < len ? (size_t)(h->cur_size - off) : len;
			memset(p, 0, n);
		} else if (off < h->file_size) {
			n = h->file_size - off < len ? (size_t)(h->file_size - off) : len;
			memcpy(p, h->footer + (off - h->cur_size), n);
		} else {
			n = len;
			memset(p, 0, n);
		}
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}
