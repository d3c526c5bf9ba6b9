/* ic_store.h: the chain directory as a store.  Every access to a chain's files that is
 * not an image read or write (ic_image.h) goes through here: small files read and
 * replaced atomically (the key file, the consolidation journal), images put in place,
 * renamed and removed, the directory made durable and measured.  Built on the careful
 * primitives of ic_util (regular files only, O_EXCL temporaries, no-replace renames), so
 * that another kind of store replaces this layer, not its callers. */
#ifndef IC_STORE_H
#define IC_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ic_image;
struct ic_keyfile;

/* The chain directory dir: made (0700) when absent (*created), else it must be a
 * directory. */
int ic_store_create(const char *dir, bool *created);
/* Undo ic_store_create of a chain that got no point: its key file, its lock file and the
 * directory removed (best effort; a directory with anything else in it stays). */
void ic_store_discard(const char *dir);
/* Is there a file (of any kind, a link not followed) CHAIN/name? */
bool ic_store_exists(const char *dir, const char *name);

/* Read CHAIN/name, a regular file (never through a link: ic_open_regular's refusals),
 * into *buf (malloc'd, NUL-terminated), at most max + 1 bytes: *len > max says the file
 * is larger than max.  -ENOENT when absent (with ic_open_regular's message). */
int ic_store_read_file(const char *dir, const char *name, size_t max, char **buf, size_t *len);
/* Replace CHAIN/name by buf[len] (mode 0600) atomically: a temporary ".tmp-NAME",
 * renamed over it.  durable: fsynced before and the directory after the rename
 * (ic_write_file_atomic); else not synced (a loss in a crash must cost nothing). */
int ic_store_write_file(const char *dir, const char *name, const void *buf, size_t len,
			bool durable);
/* The same, not synced, for a file that processes holding no lock may write at once:
 * each through a temporary of its own (".tmp-NAME-PID"), so that none removes or renames
 * another's; a reader sees the file whole or not at all. */
int ic_store_write_file_shared(const char *dir, const char *name, const void *buf, size_t len);
/* Remove the file at path; absent is fine.  Not synced (ic_store_sync). */
int ic_store_remove(const char *path);
/* Rename from over to (both in the chain directory); not synced. */
int ic_store_rename(const char *from, const char *to);
/* Put the image tmp, which a step of this process wrote, in place of to: only a regular
 * file is renamed, never a plant ("not a regular file (KIND): refused", IC_ECORRUPT).
 * -ENOENT (no message) when tmp is absent.  Not synced. */
int ic_store_put(const char *tmp, const char *to);
/* Make the directory's names durable (renames, removals). */
int ic_store_sync(const char *dir);
/* Cut img (open O_RDWR) at len and fsync it. */
int ic_store_truncate(struct ic_image *img, uint64_t len);
/* Bytes allocated to the regular files of the chain directory (0 when unreadable). */
uint64_t ic_store_allocated(const char *dir);

/* Read and decode CHAIN/imgchain.key.  -ENOENT (with a message) if absent. */
int ic_keyfile_load(const char *chain_dir, struct ic_keyfile *kf);
/* Write kf to CHAIN/imgchain.key atomically (tmp, fsync, rename, fsync dir), mode 0600. */
int ic_keyfile_store(const char *chain_dir, const struct ic_keyfile *kf);

#endif
