/* ic_verify.h: checking a chain, keyless (structure, checksums, completeness) or
 * with the key (every record authenticated, every seal recomputed); and restoring. */
#ifndef IC_VERIFY_H
#define IC_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

struct ic_verify_opts {
	const char *chain_dir;
	const char *name;           /* NULL: every point */
	const char *passphrase_file;
	bool data;                  /* with the key */
	bool accept_rollback;       /* accept a chain older than this machine last saw */
	bool quiet;
};

struct ic_verify_stats {
	uint64_t points, images, records, bytes;
	uint64_t problems;          /* each reported on stderr */
};

/* Returns 0 when everything checked is sound, IC_ECORRUPT when problems were found
 * (each reported as "PATH: point 'NAME', block N: cause"), or another error. */
int ic_verify(const struct ic_verify_opts *o, struct ic_verify_stats *st);

struct ic_restore_opts {
	const char *chain_dir;
	const char *name;
	const char *dest;
	const char *passphrase_file;
	bool force;                 /* overwrite an existing non-empty regular file */
	bool accept_rollback;
	bool quiet;
	int threads;                /* 0: one per CPU */
	bool sync;                  /* dest holds some version of the disk: write what differs */
	const char *sync_from;      /* dest holds this point exactly: the indexes say what differs */
};

struct ic_restore_stats {
	uint64_t disk_size, data_blocks, zero_blocks, bytes_written;
	/* a sync: blocks compared, equal (skipped), data blocks written, zero blocks written or
	 * punched, record bytes read from the chain */
	uint64_t compared, skipped, written, zeroed, chain_bytes;
	double seconds;
};

/* Write point name's disk to dest: a regular file (created through a temporary
 * name, zero blocks left as holes) or a block device (every byte written).
 * Stops at the first block that fails authentication (IC_ECORRUPT).
 * With sync or sync_from, dest is updated in place and only the blocks that differ are
 * written (ic_sync.c; doc/imgrestore.1). */
int ic_restore(const struct ic_restore_opts *o, struct ic_restore_stats *st);

#endif
