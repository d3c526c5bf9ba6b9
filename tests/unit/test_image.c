/* test_image.c: image writer and reader: round trip, slots A/B, damage detection. */
#include "config.h"

#include <fcntl.h>
#include <unistd.h>

#include <xxhash.h>

#include "imgchain.h"
#include "unit.h"

static char *dir;

static struct icf_header make_header(void)
{
	struct icf_header h;

	memset(&h, 0, sizeof(h));
	h.version = ICF_VERSION;
	h.header_size = ICF_HEADER_SIZE;
	memcpy(h.chain_id, "0123456789abcdef", 16);
	memcpy(h.key_check, "fedcba9876543210", 16);
	h.block_size = 4096;
	h.cipher = ICF_CIPHER_XCHACHA20POLY1305;
	h.compress = ICF_COMPRESS_ZSTD;
	return h;
}

/* Write image seq 1: blocks 0, 2 data (fake records), 5 zero; disk 6.5 blocks. */
static char *write_image(uint32_t seq)
{
	struct icf_header h = make_header();
	struct ic_writer *w;
	struct icf_slot s;
	struct icf_entry e;
	uint8_t rec[100];
	char name[32];

	CHECK_EQ(ic_writer_new(dir, &h, seq, &w), 0);
	for (int b = 0; b < 3; b++) {
		uint64_t off;

		if (b == 1)
			continue;
		memset(rec, 'a' + b, sizeof(rec));
		CHECK_EQ(ic_writer_append(w, rec, sizeof(rec), &off), 0);
		memset(&e, 0, sizeof(e));
		e.pos = (uint64_t)b;
		e.offset = off;
		e.stored_len = sizeof(rec);
		e.plain_len = 4096;
		e.origin = seq;
		e.kind = ICF_ENTRY_ZSTD;
		e.rec_hash = XXH3_64bits(rec, sizeof(rec));
		CHECK_EQ(ic_writer_add_entry(w, &e), 0);
	}
	memset(&e, 0, sizeof(e));
	e.pos = 5;
	e.plain_len = 4096;
	e.origin = seq;
	CHECK_EQ(ic_writer_add_entry(w, &e), 0);
	e.pos = 4;
	CHECK_EQ(ic_writer_add_entry(w, &e), -EINVAL);    /* out of order */
	memset(&s, 0, sizeof(s));
	s.seq = seq;
	s.kind = ICF_KIND_FULL;
	s.created = 1700000000;
	s.disk_size = 6 * 4096 + 2048;
	strcpy(s.name, "first");
	CHECK_EQ(ic_writer_commit(w, &s), 0);
	ic_image_filename(seq, name, sizeof(name));
	return ic_path_join(dir, name);
}

static void test_roundtrip(void)
{
	char *p = write_image(1);
	struct ic_image *img;
	struct icf_entry e;
	uint8_t rec[100];

	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), 0);
	CHECK_EQ(img->slot.seq, 1);
	CHECK_EQ(img->slot.index_count, 3);
	CHECK_EQ(img->slot.n_data, 2);
	CHECK_EQ(img->slot.n_zero, 1);
	CHECK_EQ(img->slot.data_bytes, 200);
	CHECK(strcmp(img->slot.name, "first") == 0);
	CHECK_EQ(ic_image_check_index(img), 0);
	CHECK_EQ(ic_image_find(img, 2, -1), 1);
	CHECK_EQ(ic_image_find(img, 1, -1), -1);
	CHECK_EQ(ic_image_find(img, 5, 0), 2);
	CHECK_EQ(ic_image_entry(img, 1, &e), 0);
	CHECK_EQ(e.pos, 2);
	CHECK_EQ(ic_image_read_record(img, &e, rec), 0);
	CHECK_EQ(rec[0], 'c');
	ic_image_close(img);
	unlink(p);
	free(p);
}

static void flip(const char *p, uint64_t off)
{
	int fd = open(p, O_RDWR);
	uint8_t b;

	CHECK(pread(fd, &b, 1, (off_t)off) == 1);
	b ^= 4;
	CHECK(pwrite(fd, &b, 1, (off_t)off) == 1);
	close(fd);
}

/* Damage anywhere that matters is detected, with IC_ECORRUPT. */
static void test_damage(void)
{
	char *p = write_image(2);
	struct ic_image *img;
	struct icf_entry e;
	uint8_t rec[100];
	uint64_t idx;

	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), 0);
	idx = img->slot.index_offset;
	ic_image_close(img);

	flip(p, 20);    /* fixed header */
	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), IC_ECORRUPT);
	flip(p, 20);
	flip(p, ICF_SLOT_A_OFF + 8);    /* the only slot */
	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), IC_ECORRUPT);
	flip(p, ICF_SLOT_A_OFF + 8);
	flip(p, ICF_HEADER_SIZE + 10);    /* a record: found by its checksum */
	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), 0);
	CHECK_EQ(ic_image_entry(img, 0, &e), -EINVAL);    /* the index is not read yet */
	CHECK_EQ(ic_image_check_index(img), 0);
	CHECK_EQ(ic_image_entry(img, 0, &e), 0);
	CHECK_EQ(ic_image_read_record(img, &e, rec), IC_ECORRUPT);
	ic_image_close(img);
	flip(p, ICF_HEADER_SIZE + 10);
	flip(p, idx + 64 + 3);    /* an index entry */
	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), 0);
	CHECK_EQ(ic_image_check_index(img), IC_ECORRUPT);
	CHECK(strstr(ic_last_error(0), "index checksum mismatch") != NULL);
	CHECK_EQ(ic_image_check_index(img), IC_ECORRUPT);    /* cached, same message */
	CHECK(strstr(ic_last_error(0), "index checksum mismatch") != NULL);
	CHECK_EQ(ic_image_entry(img, 0, &e), -EINVAL);    /* a damaged index is never used */
	ic_image_close(img);
	flip(p, idx + 64 + 3);
	CHECK_EQ(truncate(p, (off_t)idx + 10), 0);    /* truncated */
	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), IC_ECORRUPT);
	CHECK(strstr(ic_last_error(0), "truncated") != NULL);
	unlink(p);
	free(p);
}

/* A slot switch is atomic: the newer valid slot wins; a torn one is ignored. */
static void test_slots(void)
{
	char *p = write_image(3);
	struct ic_image *img;
	struct icf_slot s;

	CHECK_EQ(ic_image_open(p, O_RDWR, &img), 0);
	s = img->slot;
	s.seq = 9;
	s.parent_seq = 0;
	s.kind = ICF_KIND_SYNTHETIC_FULL;
	strcpy(s.name, "renamed");
	CHECK_EQ(ic_image_switch_slot(img, &s), 0);
	ic_image_close(img);
	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), 0);
	CHECK_EQ(img->slot.seq, 9);
	CHECK_EQ(img->slot_index, 1);
	CHECK_EQ(img->slot.generation, 2);
	ic_image_close(img);
	flip(p, ICF_SLOT_B_OFF + 200);    /* the new slot torn: back to the old one */
	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), 0);
	CHECK_EQ(img->slot.seq, 3);
	CHECK(strcmp(img->slot.name, "first") == 0);
	ic_image_close(img);
	unlink(p);
	free(p);
}

static void test_abort(void)
{
	struct icf_header h = make_header();
	struct ic_writer *w;
	uint64_t off;
	char *p;

	CHECK_EQ(ic_writer_new(dir, &h, 4, &w), 0);
	CHECK_EQ(ic_writer_append(w, "xyz", 3, &off), 0);
	CHECK_EQ(off, ICF_HEADER_SIZE);
	ic_writer_abort(w);
	p = ic_path_join(dir, "00000004.img");
	CHECK(access(p, F_OK) != 0);
	free(p);
	CHECK_EQ(ic_chain_cleanup_tmp(dir), 0);
}

int main(void)
{
	dir = unit_tmpdir();
	RUN(test_roundtrip);
	RUN(test_damage);
	RUN(test_slots);
	RUN(test_abort);
	unit_rmtree(dir);
	UNIT_EXIT();
}
