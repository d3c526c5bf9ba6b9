/* ic_backup.h: creating a restore point from a raw image, block device or NBD export. */
#ifndef IC_BACKUP_H
#define IC_BACKUP_H

#include <stdbool.h>
#include <stdint.h>

#include "imgchain_format.h"

struct ic_key;

struct ic_backup_opts {
	const char *chain_dir;
	const char *source;
	const char *name;           /* NULL: UTC time, e.g. 20261122T161400Z */
	const char *parent;         /* NULL: the newest point */
	const char *changed_blocks; /* NULL: read everything (holes skipped) */
	const char *dirty_bitmap;   /* NBD: read only what qemu:dirty-bitmap:NAME marks; it
				     * must have been recorded for the parent (next_bitmap) */
	const char *bitmap_export;  /* NULL: dirty_bitmap; else the name the export gives it */
	const char *head_start;     /* NBD URI of the live disk: the blocks dirty in
				     * dirty_bitmap are read from it first (staged, not
				     * visible), then snapshot_cmd runs, then source is read
				     * for the blocks late_bitmap marks */
	const char *late_bitmap;
	const char *snapshot_cmd;
	const char *next_bitmap;    /* record that this bitmap tracks writes after the point */
	const char *post_snapshot_of; /* the point is the quiesced form of this point (its
				       * parent): the writes made to the snapshot after it was
				       * taken; flagged ICF_SLOT_POST_SNAPSHOT, never a default
				       * parent (FORMAT.md 3.2) */
	const char *passphrase_file;
	bool full;                  /* no parent */
	bool quiet;
	uint32_t block_size;        /* 0: the chain's, or ICF_BLOCK_DEFAULT for a new chain */
	int level;                  /* zstd level, 0 = store uncompressed */
	int threads;                /* 0: one per online CPU */
	int64_t created;            /* 0: now; else the creation time to record (tests) */
	bool accept_rollback;       /* accept a chain older than this machine last saw */
	uint32_t format_version;    /* tests only: image version of a new full (0: current);
				     * an incremental always takes its parent's */
	bool record_later;          /* the caller remembers the point (ic_state_record with
				     * st's chain_id, seq, name, seal) once it is published
				     * (s3://: after its upload), not at the local commit */
	struct ic_key *key;         /* the chain's key, unlocked and checked by the caller
				     * (imgbackup --from-overlay): no second unlock; not freed */
};

struct ic_backup_stats {
	char name[ICF_NAME_MAX + 1];
	char parent[ICF_NAME_MAX + 1]; /* "" for a full */
	bool post_snapshot;         /* a post-snapshot point of parent */
	uint32_t seq;
	bool created_chain;
	uint64_t disk_size;
	uint64_t bytes_read;        /* read from the source (and the head start's) */
	uint64_t bytes_read_head;   /* of which: read by the head start */
	uint64_t blocks_changed;    /* new data records */
	uint64_t bytes_changed;     /* their plaintext bytes */
	uint64_t blocks_zeroed;     /* new zero entries */
	uint64_t bytes_stored;      /* record bytes written */
	double seconds;
	double seconds_key;         /* of which: unlocking the key (Argon2id), a fixed cost */
	uint8_t chain_id[ICF_ID_LEN];
	uint8_t seal[ICF_SEAL_LEN];  /* the new point's */
};

/* Run one backup.  Creates the chain (directory, key file) when absent or empty.
 * Nothing becomes visible unless the whole point was written and synced. */
int ic_backup(const struct ic_backup_opts *o, struct ic_backup_stats *st);

/* Parse a changed-blocks file (lines "OFFSET LENGTH", bytes, '#' comments) into a
 * per-block byte map: map[b] = 1 for blocks that a range touches.  Ranges past
 * disk_size are an error naming the line. */
int ic_parse_changed_blocks(const char *path, uint64_t disk_size, uint32_t block_size,
			    uint8_t *map);

#endif
