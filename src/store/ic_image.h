/* ic_image.h: one image file (a restore point): header, A/B slots, index, records.
 * Reading needs no key.  See FORMAT.md "Image file". */
#ifndef IC_IMAGE_H
#define IC_IMAGE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "imgchain_format.h"

struct ic_image {
	char *path;
	int fd;
	struct icf_header hdr;      /* host order, validated */
	struct icf_slot slot;       /* current slot, host order, validated */
	int slot_index;             /* 0 = A, 1 = B */
	uint64_t file_size;
	/* The index: index_count * 64 bytes read once into private memory by
	 * ic_image_check_index and checked there; every later use (seal, lookups) reads
	 * this copy, never the file again (FORMAT.md 3.3; SECURITY.md, live tampering). */
	uint8_t *index;             /* NULL until checked */
	pthread_mutex_t index_mu;   /* serialises the loading */
	int index_state;            /* 0 not read, 1 good, <0 error (cached) */
	struct ic_error *index_err; /* a cached error (code and message) */
};

/* Open and validate header and slots (not the index; that is ic_image_check_index).
 * IC_ECORRUPT with a message naming path on any damage ("truncated", "bad checksum"...).
 * flags: O_RDONLY or O_RDWR. */
int ic_image_open(const char *path, int flags, struct ic_image **out);
void ic_image_close(struct ic_image *img);

/* Read the index into private memory and verify it: its XXH3-128, every entry's hash
 * and bounds, ascending positions, no more entries than the disk has blocks.  Read in
 * chunks of 1 MiB, each checked before the next is read (a damaged or sparse index
 * fails at its first bad chunk).  Once: the result (and the message of a damage) is
 * cached.  Thread-safe.  Memory: the index's size (64 bytes per entry). */
int ic_image_check_index(struct ic_image *img);

/* Images whose bytes are fetched on demand (a chain in a bucket mounted: ic_s3_remote.c):
 * while set, ic_image_read_record asks fill to make [off, off + len) of the file fd
 * present (0, or an error: the read fails with it) and calls done after its read;
 * prefetch starts fetching a range without waiting (readahead).  Set once by the
 * process that serves, before it serves. */
struct ic_image_remote {
	int (*fill)(void *arg, int fd, uint64_t off, uint64_t len);
	void (*done)(void *arg, int fd, uint64_t off, uint64_t len);
	void (*prefetch)(void *arg, int fd, uint64_t off, uint64_t len);
	void *arg;
};
extern const struct ic_image_remote *ic_image_remote;

/* Decode entry i of the checked private index into host order, checking its entry hash
 * and bounds (-EINVAL before ic_image_check_index succeeded). */
int ic_image_entry(const struct ic_image *img, uint64_t i, struct icf_entry *e);
/* Position of entry i without any check (for searches over a checked index). */
uint64_t ic_image_entry_pos(const struct ic_image *img, uint64_t i);
/* Index of the entry for pos, or -1.  hint: an index near the answer, or -1. */
int64_t ic_image_find(const struct ic_image *img, uint64_t pos, int64_t hint);
/* Read the record of data entry e into buf[e->stored_len] and check its rec_hash. */
int ic_image_read_record(const struct ic_image *img, const struct icf_entry *e, void *buf);

/* Encoding and decoding of the format structs (host order <-> little-endian bytes).
 * Decoders validate and return IC_ECORRUPT naming what, with path in the message. */
int ic_header_decode(const void *buf, struct icf_header *h, const char *path);
void ic_header_encode(const struct icf_header *h, void *buf);
/* version: the image's format version (its rules for point_id and seal_keygen), or 0
 * when not known (checked again with ic_slot_validate before the slot is used). */
int ic_slot_decode(const void *buf, struct icf_slot *s, uint32_t version, const char *path);
void ic_slot_encode(const struct icf_slot *s, void *buf);
/* Entries of format version: v1 computes/checks entry_hash (host origin_id 0, keygen
 * from flags); v2 stores keygen and origin_id.  Decode fails (IC_ECORRUPT, no message)
 * only on a v1 entry_hash mismatch: bounds are the caller's. */
void ic_entry_encode(const struct icf_entry *e, void *buf, uint32_t version);
int ic_entry_decode(const void *buf, struct icf_entry *e, uint32_t version);

/* Write slot s into the non-current slot of img (opened O_RDWR) with generation + 1,
 * then fsync.  On success img->slot becomes s. */
int ic_image_switch_slot(struct ic_image *img, struct icf_slot *s);

/* The one writer of image files (ic_writer.c; layout: FORMAT.md section 7).  Records
 * are appended or copied, entries added in ascending order; the index follows the last
 * record; the slot's counts, offsets and index hash are computed here only. */
struct ic_writer;

/* A new point in CHAIN/.tmp-SEQ-PID.img with header hdr (host order); its index goes to a
 * side file until commit.  ic_writer_commit makes it visible. */
int ic_writer_new(const char *chain_dir, const struct icf_header *hdr, uint32_t seq,
		  struct ic_writer **out);
/* A new image at path (created O_EXCL, never through a link), which the caller renames
 * itself after ic_writer_finish.  Records are copied (ic_writer_copy); the index must
 * be placed (ic_writer_place_index) before the first entry.  Abort leaves the file. */
int ic_writer_create(const char *path, const struct icf_header *hdr, struct ic_writer **out);
/* Append to img (open O_RDWR) after its current data_end; records copied, index placed,
 * as ic_writer_create.  ic_writer_finish writes no slot: the caller switches img to the
 * slot it filled in (ic_image_switch_slot) when its journal allows.  img outlives w. */
int ic_writer_in_place(struct ic_image *img, struct ic_writer **out);

/* Append a record; *offset gets its file offset (ic_writer_new only). */
int ic_writer_append(struct ic_writer *w, const void *rec, uint32_t len, uint64_t *offset);
/* Copy the n records ents[] of src, contiguous in src, to the end of w; *offset gets the
 * first one's new offset.  A run of 256 KiB or more starts at the same offset modulo
 * 4 KiB as in src (ic_writer_run_start), so that a reflink can share it.  check: read
 * and check each record first (ic_image_copy_records); else unchecked
 * (ic_image_copy_bytes: the caller checks them, ic_image_check_records).  buf[buflen]
 * holds at least the largest record.  Writeback is started every 8 MiB. */
int ic_writer_copy(struct ic_writer *w, const struct ic_image *src, const struct icf_entry *ents,
		   size_t n, bool check, void *buf, size_t buflen, uint64_t *offset);
/* The same, the run placed at dst (>= the end of the records so far) by the caller. */
int ic_writer_copy_at(struct ic_writer *w, const struct ic_image *src,
		      const struct icf_entry *ents, size_t n, bool check, void *buf, size_t buflen,
		      uint64_t dst);
/* Clones (ic_image_clone_*): can records of src be shared into w rather than copied?
 * The file system's block size, 0: no (then ic_writer_clone_place is ic_writer_offset's
 * arithmetic and ic_writer_clone always refuses). */
uint32_t ic_writer_clone_probe(struct ic_writer *w, const struct ic_image *src);
/* The block size of the last probe, 0 after a clone was refused. */
uint32_t ic_writer_clone_blk(const struct ic_writer *w);
/* Where the bytes of src from src_off on go when the records end at end: the next block
 * boundary after end plus src_off's place in its block. */
uint64_t ic_writer_clone_place(const struct ic_writer *w, uint64_t end, uint64_t src_off);
/* Share bytes [off, off + len) of src at dst (ic_writer_clone_place) and the blocks
 * around them; the records then end at dst + len.  -EOPNOTSUPP (no message): the file
 * system refused, nothing was written, and the writer clones no more (copy instead). */
int ic_writer_clone(struct ic_writer *w, const struct ic_image *src, uint64_t off, uint64_t len,
		    uint64_t dst);
/* Free the whole blocks inside [off, off + len) of what w wrote (bytes cloned along
 * with records that nothing uses). */
int ic_writer_punch(struct ic_writer *w, uint64_t off, uint64_t len);
/* Where a run of len bytes copied from src_off lands when the records end at end. */
uint64_t ic_writer_run_start(uint64_t end, uint64_t src_off, uint64_t len);
/* The end of the records so far. */
uint64_t ic_writer_offset(const struct ic_writer *w);
/* Write the entries straight to off (the caller knows where its records will end: the
 * index must start exactly there at finish).  Before the first entry. */
int ic_writer_place_index(struct ic_writer *w, uint64_t off);
/* Add an index entry (host order; in v1 entry_hash is computed here). Positions ascend. */
int ic_writer_add_entry(struct ic_writer *w, const struct icf_entry *e);
/* Fill in slot's generation (1), index offset and count, n_data, n_zero, data_bytes,
 * data_end and index hash (the caller filled seq, parent_seq, kind, created, disk_size,
 * name, seal and in v2 point_id and seal_keygen), check it, write the index, fsync; a new
 * file gets slot A (fsync again).  Frees w whatever the outcome. */
int ic_writer_finish(struct ic_writer *w, struct icf_slot *slot);
/* ic_writer_new's: finish, rename to CHAIN/%08u.img (never over a file), fsync the
 * directory.  Frees w whatever the outcome. */
int ic_writer_commit(struct ic_writer *w, struct icf_slot *slot);
/* Free w (NULL is fine); ic_writer_new's temporary files are removed. */
void ic_writer_abort(struct ic_writer *w);

/* "%08u.img" into buf[16]. */
void ic_image_filename(uint32_t seq, char *buf, size_t len);

/* ---- consolidation support (imgconsolidate, issue 4) ------------------------------ */

/* The checks ic_slot_decode applies to a slot's fields (kind, parent older than seq,
 * bounds, name), for a slot built in memory.  IC_ECORRUPT naming path. */
int ic_slot_validate(const struct icf_slot *s, uint32_t version, const char *path);

/* Check the n records ents[] of src, contiguous in src (each starts where the previous
 * ends): read into buf (buflen bytes, at least the largest record), each one's XXH3-64
 * compared with its entry.  IC_ECORRUPT naming src and the block on a mismatch. */
int ic_image_check_records(const struct ic_image *src, const struct icf_entry *ents, size_t n,
			   void *buf, size_t buflen);

/* Copy bytes [off, off + len) of src to dst_fd at dst_off, unchecked: copy_file_range,
 * split so that spans aligned on 4 KiB in both files can be shared as reflinks; read
 * into buf and pwrite where the kernel cannot copy (or after ic_image_copy_plain, for
 * comparisons).  Does not fsync. */
/* From now on, the copies of this process read and write (no copy_file_range). */
void ic_image_copy_plain(void);
int ic_image_copy_bytes(const struct ic_image *src, uint64_t off, uint64_t len, int dst_fd,
			uint64_t dst_off, const char *dst_path, void *buf, size_t buflen);

/* Both: check the records, then copy them to dst_fd at dst_off with the same layout,
 * each buffer's worth checked before any of its bytes are written (earlier records may
 * have been written when a later one fails; the caller discards the destination). */
int ic_image_copy_records(const struct ic_image *src, const struct icf_entry *ents, size_t n,
			  int dst_fd, uint64_t dst_off, const char *dst_path, void *buf,
			  size_t buflen);

/* Clones (file systems that share extents between files: XFS reflink, btrfs).
 * ic_image_clone_probe: the block size in which records of src can be cloned into
 * dst_fd (FICLONERANGE tried on src's first block, cloned past dst_fd's end and cut off
 * again), or 0 when they cannot (another file system, no reflink, ic_image_copy_plain).
 * ic_image_clone_range: the blocks of src covering [off, off + len) shared at the same
 * place relative to dst_off (dst_off = off modulo blk; the bytes around the range in
 * its first and last blocks come along); -EOPNOTSUPP without a message when the file
 * system refuses (the caller copies instead), another error with one. */
uint32_t ic_image_clone_probe(const struct ic_image *src, int dst_fd);
int ic_image_clone_range(const struct ic_image *src, uint64_t off, uint64_t len, int dst_fd,
			 uint64_t dst_off, uint32_t blk, const char *dst_path);
/* Clones redirected (a chain in a bucket: src/store/ic_s3_cons.c): while set, the probe
 * answers blk and ic_image_clone_range calls fn instead of sharing blocks (dst_fd keeps a
 * hole there, the caller records where those bytes come from).  Set by one thread around
 * a run that starts no other writer. */
struct ic_clone_redirect {
	uint32_t blk;
	int (*fn)(void *arg, const struct ic_image *src, uint64_t off, uint64_t len, int dst_fd,
		  uint64_t dst_off);
	void *arg;
};
extern const struct ic_clone_redirect *ic_clone_redirect;
/* Punch the whole blocks of blk bytes (0: 4 KiB) inside [off, off + len) of fd. */
int ic_image_punch_range(int fd, uint64_t off, uint64_t len, uint32_t blk, const char *path);

/* Punch holes (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) over every 4 KiB block of
 * the file that neither the header, the current index nor a record it references
 * touches (not synced: a crash can only leave space allocated).  img must be open O_RDWR.  The caller makes sure that nothing
 * else may still use those bytes: no reader holds the image (ic_lock.h) and the other
 * slot describes the same index.  *freed gets the allocation released, in bytes. */
int ic_image_punch_unused(struct ic_image *img, uint64_t *freed);
/* The same for the whole 4 KiB blocks below byte limit only (the current slot's data_end:
 * what is there and unreferenced stays so whatever a writer appends later, so a process
 * without the writers' lock may free it). */
int ic_image_punch_below(struct ic_image *img, uint64_t limit, uint64_t *freed);

#endif
