/* ic_backup.h: creating a restore point from a raw image or block device. */
#ifndef IC_BACKUP_H
#define IC_BACKUP_H

#include <stdbool.h>
#include <stdint.h>

#include "imgchain_format.h"

struct ic_backup_opts {
	const char *chain_dir;
	const char *source;
	const char *name;           /* NULL: UTC time, e.g. 20261122T161400Z */
	const char *parent;         /* NULL: the newest point */
	const char *changed_blocks; /* NULL: read everything (holes skipped) */
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
};

struct ic_backup_stats {
	char name[ICF_NAME_MAX + 1];
	char parent[ICF_NAME_MAX + 1]; /* "" for a full */
	uint32_t seq;
	bool created_chain;
	uint64_t disk_size;
	uint64_t bytes_read;        /* read from the source */
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
