/* test_image.c: image writer and reader: round trip, slots A/B, damage detection, the
 * writer's modes. */
#include "config.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <sys/wait.h>

#include <xxhash.h>

#include "imgchain.h"
#include "unit.h"

static char *dir;
static uint32_t ver;                    /* the image format version under test */
#define POINT_ID 0x0123456789abcdefull  /* v2: the point id of the images written */

static struct icf_header make_header(void)
{
	struct icf_header h;

	memset(&h, 0, sizeof(h));
	h.version = ver;
	h.header_size = ICF_HEADER_SIZE;
	memcpy(h.chain_id, "0123456789abcdef", ICF_ID_LEN);
	memcpy(h.key_check, "fedcba9876543210", ICF_CHECK_LEN);
	h.block_size = 4096;
	h.cipher = ICF_CIPHER_XCHACHA20POLY1305;
	h.compress = ICF_COMPRESS_ZSTD;
	return h;
}

/* Write image seq 1: blocks 0, 2 data (fake records), 5 zero; disk 6.5 blocks. */
static char *write_image(uint32_t seq)
{
	uint64_t id = ver == ICF_IMAGE_V1 ? 0 : POINT_ID;
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
		e.origin = b == 0 && seq > 1 ? seq - 1 : seq;    /* block 0: copied */
		e.origin_id = ver == ICF_IMAGE_V1 ? 0 : b == 0 && seq > 1 ? 42 : id;
		e.kind = ICF_ENTRY_ZSTD;
		e.rec_hash = XXH3_64bits(rec, sizeof(rec));
		CHECK_EQ(ic_writer_add_entry(w, &e), 0);
	}
	memset(&e, 0, sizeof(e));
	e.pos = 5;
	e.plain_len = 4096;
	e.origin = seq;
	e.origin_id = id;
	CHECK_EQ(ic_writer_add_entry(w, &e), 0);
	e.pos = 4;
	CHECK_EQ(ic_writer_add_entry(w, &e), -EINVAL);    /* out of order */
	memset(&s, 0, sizeof(s));
	s.seq = seq;
	s.kind = ICF_KIND_FULL;
	s.created = 1700000000;
	s.disk_size = 6 * 4096 + 2048;
	strcpy(s.name, "first");
	s.point_id = id;
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
	CHECK_EQ(e.keygen, 0);
	CHECK_EQ(e.origin_id, ver == ICF_IMAGE_V1 ? 0 : POINT_ID);
	CHECK_EQ(img->hdr.version, ver);
	CHECK_EQ(img->slot.point_id, ver == ICF_IMAGE_V1 ? 0 : POINT_ID);
	CHECK_EQ(img->slot.seal_keygen, 0);
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
	CHECK(strstr(ic_last_error(IC_ECORRUPT), "index checksum mismatch") != NULL);
	CHECK_EQ(ic_image_check_index(img), IC_ECORRUPT);    /* cached, same message */
	CHECK(strstr(ic_last_error(IC_ECORRUPT), "index checksum mismatch") != NULL);
	CHECK_EQ(ic_image_entry(img, 0, &e), -EINVAL);    /* a damaged index is never used */
	ic_image_close(img);
	flip(p, idx + 64 + 3);
	CHECK_EQ(truncate(p, (off_t)idx + 10), 0);    /* truncated */
	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), IC_ECORRUPT);
	CHECK(strstr(ic_last_error(IC_ECORRUPT), "truncated") != NULL);
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

static void pwrite_at(const char *p, uint64_t off, const void *b, size_t n)
{
	int fd = open(p, O_RDWR);

	CHECK(pwrite(fd, b, n, (off_t)off) == (ssize_t)n);
	close(fd);
}

/* Rewrite entry i of image p (v2 encoding, index and slot checksums fixed) with f applied. */
static void edit_entry(const char *p, uint64_t i, void (*f)(struct icf_entry *))
{
	struct ic_image *img;
	struct icf_entry e;
	uint8_t raw[64], sbuf[ICF_SLOT_SIZE], *idx;
	struct icf_slot s;
	XXH128_canonical_t c;
	size_t len;

	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), 0);
	CHECK_EQ(ic_image_check_index(img), 0);    /* the index is read into private memory */
	s = img->slot;
	len = s.index_count * 64;
	idx = malloc(len);
	memcpy(idx, img->index, len);
	CHECK_EQ(ic_entry_decode(idx + i * 64, &e, img->hdr.version), 0);
	f(&e);
	ic_entry_encode(&e, raw, img->hdr.version);
	memcpy(idx + i * 64, raw, 64);
	XXH128_canonicalFromHash(&c, XXH3_128bits(idx, len));
	memcpy(s.index_hash, c.digest, ICF_INDEX_HASH_LEN);
	ic_slot_encode(&s, sbuf);
	pwrite_at(p, s.index_offset + i * 64, raw, 64);
	pwrite_at(p, img->slot_index ? ICF_SLOT_B_OFF : ICF_SLOT_A_OFF, sbuf, sizeof(sbuf));
	ic_image_close(img);
	free(idx);
}

static void other_point_id(struct icf_entry *e) { e->origin_id = POINT_ID + 1; }
static void no_point_id(struct icf_entry *e) { e->origin_id = 0; }
static void keygen_over(struct icf_entry *e) { e->keygen = ICF_KEY_GEN_MAX + 1; }

/* Entry i of p: open and index fine (1) or the entry out of bounds (0). */
static void expect_entry(const char *p, uint64_t i, int good)
{
	struct ic_image *img;
	struct icf_entry e;

	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), 0);
	CHECK_EQ(ic_image_check_index(img), good ? 0 : IC_ECORRUPT);
	if (good)    /* a damaged index is never used: the check's message stays */
		CHECK_EQ(ic_image_entry(img, i, &e), 0);
	ic_image_close(img);
}

/* v2's keyless rules: a point's own entries (origin = its seq) carry its point id, every
 * entry a non-zero one, key generations the reader knows; the slot a non-zero point id.
 * v1 slots keep the reserved bytes zero. */
static void test_v2_rules(void)
{
	struct ic_image *img;
	struct icf_slot s;
	uint8_t sbuf[ICF_SLOT_SIZE];
	char *p;

	ver = ICF_IMAGE_V2;
	p = write_image(5);
	expect_entry(p, 0, 1);       /* block 0: origin 4, another point's id: fine */
	edit_entry(p, 1, other_point_id);    /* block 2: its own record, another point id */
	expect_entry(p, 1, 0);
	CHECK(strstr(ic_last_error(IC_ECORRUPT), "index entry 1 (block 2): fields out of bounds"));
	unlink(p);
	free(p);
	p = write_image(5);
	edit_entry(p, 0, no_point_id);
	expect_entry(p, 0, 0);
	unlink(p);
	free(p);
	p = write_image(5);
	edit_entry(p, 2, keygen_over);    /* beyond any key file; a zero entry too */
	expect_entry(p, 2, 0);
	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), 0);
	s = img->slot;
	ic_image_close(img);
	s.point_id = 0;
	ic_slot_encode(&s, sbuf);
	pwrite_at(p, ICF_SLOT_A_OFF, sbuf, sizeof(sbuf));
	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), IC_ECORRUPT);
	CHECK(strstr(ic_last_error(IC_ECORRUPT), "bad slot: point id 0"));
	s.point_id = POINT_ID;
	s.seal_keygen = ICF_KEY_GEN_MAX + 1;
	ic_slot_encode(&s, sbuf);
	pwrite_at(p, ICF_SLOT_A_OFF, sbuf, sizeof(sbuf));
	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), IC_ECORRUPT);
	CHECK_EQ(ic_slot_validate(&s, ICF_IMAGE_V2, p), IC_ECORRUPT);
	s.seal_keygen = 0;
	CHECK_EQ(ic_slot_validate(&s, ICF_IMAGE_V2, p), 0);
	CHECK_EQ(ic_slot_validate(&s, ICF_IMAGE_V1, p), IC_ECORRUPT);    /* v1: reserved */
	CHECK_EQ(ic_slot_validate(&s, 0, p), 0);                         /* version unknown */
	/* flags (FORMAT.md 3.2): post-snapshot in v2 only; an unknown bit is refused */
	s.flags = ICF_SLOT_POST_SNAPSHOT;
	CHECK_EQ(ic_slot_validate(&s, ICF_IMAGE_V2, p), 0);
	ic_slot_encode(&s, sbuf);
	pwrite_at(p, ICF_SLOT_A_OFF, sbuf, sizeof(sbuf));
	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), 0);
	CHECK_EQ(img->slot.flags, ICF_SLOT_POST_SNAPSHOT);
	ic_image_close(img);
	CHECK_EQ(ic_slot_validate(&s, ICF_IMAGE_V1, p), IC_ECORRUPT);
	s.flags = 4;
	CHECK_EQ(ic_slot_validate(&s, ICF_IMAGE_V2, p), IC_ECORRUPT);
	CHECK(strstr(ic_last_error(IC_ECORRUPT), "unknown flags"));
	s.flags = ICF_SLOT_POST_SNAPSHOT | ICF_SLOT_FOLDED;
	s.fold_session_id = 1;
	CHECK_EQ(ic_slot_validate(&s, ICF_IMAGE_V2, p), IC_ECORRUPT);
	CHECK(strstr(ic_last_error(IC_ECORRUPT), "folded and post-snapshot"));
	s.fold_session_id = 0;
	s.flags = 0;
	unlink(p);
	free(p);
	/* v1: the same bytes are reserved, the slot with a point id is refused */
	ver = ICF_IMAGE_V1;
	p = write_image(5);
	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), 0);
	s = img->slot;
	ic_image_close(img);
	s.point_id = 7;
	ic_slot_encode(&s, sbuf);
	pwrite_at(p, ICF_SLOT_A_OFF, sbuf, sizeof(sbuf));
	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), IC_ECORRUPT);
	CHECK(strstr(ic_last_error(IC_ECORRUPT), "reserved fields are not zero"));
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

/* Build the slot of a copy of src (seq, name and identity) for the writer to complete. */
static void copy_slot(const struct ic_image *src, struct icf_slot *s)
{
	memset(s, 0, sizeof(*s));
	s->seq = src->slot.seq;
	s->kind = ICF_KIND_FULL;
	s->created = src->slot.created;
	s->disk_size = src->slot.disk_size;
	strcpy(s->name, src->slot.name);
	s->point_id = src->slot.point_id;
}

/* Copy src's entries with the writer w (records moved, checked), index after them. */
static void copy_all(struct ic_image *src, struct ic_writer *w, bool check)
{
	struct icf_entry e[3];
	uint8_t buf[4096];
	uint64_t at;

	for (uint64_t i = 0; i < 3; i++)
		CHECK_EQ(ic_image_entry(src, i, &e[i]), 0);
	CHECK_EQ(ic_writer_add_entry(w, &e[0]), -EINVAL);    /* index not placed */
	CHECK_EQ(ic_writer_copy(w, src, e, 2, check, buf, sizeof(buf), &at), 0);
	CHECK_EQ(ic_writer_place_index(w, at + 200), 0);
	e[0].offset = at;
	e[1].offset = at + 100;
	for (int i = 0; i < 3; i++)
		CHECK_EQ(ic_writer_add_entry(w, &e[i]), 0);
}

/* The writer's other modes: a new image at a path of the caller's, and records appended
 * to an image in place (its slot switched by the caller); the index follows the records. */
/* Records of every size across the writer's 4 MiB buffer (one larger than it, ZSTD
 * records of 4 MiB blocks up to the codec's bound): each reads back whole, wherever the
 * flushes split it (whole buffers go to the file with O_DIRECT, the rest buffered). */
static void test_append_spans(void)
{
	static const uint32_t lens[] = { 1000, (3u << 20) + 17, 4u << 20, 41, (1u << 20) - 3,
					 0, 4096 * 3, (4u << 20) + 300, 5000 };
	uint64_t id = ver == ICF_IMAGE_V1 ? 0 : POINT_ID;
	struct icf_header h = make_header();
	size_t n = sizeof(lens) / sizeof(lens[0]);
	uint32_t bound = ic_codec_bound(ICF_BLOCK_MAX);
	uint8_t *rec = malloc(bound), *back = malloc(bound);
	struct ic_writer *w;
	struct ic_image *img;
	struct icf_slot s;
	struct icf_entry e;
	char name[32], *p;

	CHECK(rec && back);
	h.block_size = ICF_BLOCK_MAX;
	CHECK_EQ(ic_writer_new(dir, &h, 7, &w), 0);
	for (size_t b = 0; b < n; b++) {
		uint32_t len = lens[b] ? lens[b] : bound;    /* 0: the largest record */
		uint64_t off;

		for (uint32_t k = 0; k < len; k++)
			rec[k] = (uint8_t)(k * 7 + b);
		CHECK_EQ(ic_writer_append(w, rec, len, &off), 0);
		memset(&e, 0, sizeof(e));
		e.pos = b;
		e.offset = off;
		e.stored_len = len;
		e.plain_len = ICF_BLOCK_MAX;
		e.origin = 7;
		e.origin_id = id;
		e.kind = ICF_ENTRY_ZSTD;
		e.rec_hash = XXH3_64bits(rec, len);
		CHECK_EQ(ic_writer_add_entry(w, &e), 0);
	}
	memset(&s, 0, sizeof(s));
	s.seq = 7;
	s.kind = ICF_KIND_FULL;
	s.created = 1700000000;
	s.disk_size = (uint64_t)n * ICF_BLOCK_MAX;
	strcpy(s.name, "spans");
	s.point_id = id;
	CHECK_EQ(ic_writer_commit(w, &s), 0);
	ic_image_filename(7, name, sizeof(name));
	p = ic_path_join(dir, name);
	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), 0);
	CHECK_EQ(ic_image_check_index(img), 0);
	for (size_t b = 0; b < n; b++) {
		uint32_t len = lens[b] ? lens[b] : bound;

		CHECK_EQ(ic_image_entry(img, b, &e), 0);
		CHECK_EQ(e.stored_len, len);
		CHECK_EQ(ic_image_read_record(img, &e, back), 0);
		for (uint32_t k = 0; k < len; k++)
			rec[k] = (uint8_t)(k * 7 + b);
		CHECK(memcmp(rec, back, len) == 0);
	}
	ic_image_close(img);
	unlink(p);
	free(p);
	free(rec);
	free(back);
}

static void test_writer_modes(void)
{
	char *p = write_image(1), *q = ic_path_join(dir, ".tmp-copy.img");
	struct ic_image *src, *img;
	struct ic_writer *w;
	struct icf_slot s;
	struct icf_entry e;
	uint8_t rec[100];
	uint64_t end;

	CHECK_EQ(ic_image_open(p, O_RDONLY, &src), 0);
	CHECK_EQ(ic_image_check_index(src), 0);
	CHECK_EQ(ic_writer_create(q, &src->hdr, &w), 0);
	CHECK_EQ(ic_writer_offset(w), ICF_HEADER_SIZE);
	copy_all(src, w, true);
	copy_slot(src, &s);
	CHECK_EQ(ic_writer_finish(w, &s), 0);
	CHECK_EQ(ic_image_open(q, O_RDWR, &img), 0);
	CHECK_EQ(img->slot.index_offset, ICF_HEADER_SIZE + 200);
	CHECK_EQ(img->slot.n_data, 2);
	CHECK_EQ(img->slot.data_bytes, 200);
	CHECK_EQ(ic_image_check_index(img), 0);
	CHECK_EQ(ic_image_entry(img, 1, &e), 0);
	CHECK_EQ(ic_image_read_record(img, &e, rec), 0);
	CHECK_EQ(rec[0], 'c');

	/* in place: appended after data_end, found once the slot is switched */
	end = img->slot.data_end;
	CHECK_EQ(ic_writer_in_place(img, &w), 0);
	CHECK_EQ(ic_writer_offset(w), end);
	copy_all(src, w, false);
	copy_slot(src, &s);
	CHECK_EQ(ic_writer_finish(w, &s), 0);
	CHECK_EQ(s.index_offset, end + 200);
	CHECK_EQ(img->slot.data_end, end);    /* not switched yet */
	CHECK_EQ(ic_image_switch_slot(img, &s), 0);
	ic_image_close(img);
	CHECK_EQ(ic_image_open(q, O_RDONLY, &img), 0);
	CHECK_EQ(img->slot.index_offset, end + 200);
	CHECK_EQ(img->slot.generation, 2);
	CHECK_EQ(ic_image_check_index(img), 0);
	CHECK_EQ(ic_image_entry(img, 0, &e), 0);
	CHECK_EQ(e.offset, end);
	CHECK_EQ(ic_image_read_record(img, &e, rec), 0);
	CHECK_EQ(rec[0], 'a');
	ic_image_close(img);

	/* an index placed elsewhere than right after the records is refused at finish */
	unlink(q);
	CHECK_EQ(ic_writer_create(q, &src->hdr, &w), 0);
	CHECK_EQ(ic_writer_place_index(w, ICF_HEADER_SIZE + 64), 0);
	copy_slot(src, &s);
	CHECK_EQ(ic_writer_finish(w, &s), -EINVAL);
	ic_image_close(src);
	unlink(q);
	unlink(p);
	free(q);
	free(p);
}

/* A reader that cannot announce itself (its lock on byte 0 refused: a conflicting lock
 * held elsewhere, a file system without record locks) must not read: a consolidation
 * would not see it and could reclaim the records it reads.  The open fails, naming the
 * file and the lock (issue 11 point 4). */
static void test_reader_lock(void)
{
	char *p = write_image(7);
	struct ic_image *img = NULL;
	int pipefd[2], wfd, ret;
	pid_t pid;
	char c;

	CHECK_EQ(pipe(pipefd), 0);
	pid = fork();
	if (pid == 0) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0,
				    .l_len = 1 };

		wfd = open(p, O_RDWR);
		if (wfd < 0 || fcntl(wfd, F_SETLK, &fl) < 0)
			_exit(1);
		if (write(pipefd[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	CHECK(pid > 0);
	CHECK_EQ(read(pipefd[0], &c, 1), 1);
	ret = ic_image_open(p, O_RDONLY, &img);
	CHECK(ret == -EAGAIN || ret == -EACCES);
	CHECK(img == NULL);
	CHECK(strstr(ic_last_error(ret), p) != NULL);
	CHECK(strstr(ic_last_error(ret), "reader lock") != NULL);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	/* the lock free again: the same open works */
	CHECK_EQ(ic_image_open(p, O_RDONLY, &img), 0);
	ic_image_close(img);
	close(pipefd[0]);
	close(pipefd[1]);
	unlink(p);
	free(p);
}

int main(void)
{
	dir = unit_tmpdir();
	for (ver = ICF_IMAGE_V1; ver <= ICF_IMAGE_V2; ver++) {
		RUN(test_roundtrip);
		RUN(test_damage);
		RUN(test_slots);
		RUN(test_abort);
		RUN(test_writer_modes);
		RUN(test_append_spans);
	}
	RUN(test_v2_rules);
	RUN(test_reader_lock);
	unit_rmtree(dir);
	UNIT_EXIT();
}
