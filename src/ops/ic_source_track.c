/* ic_source_track.c: which point a dirty bitmap belongs to (FORMAT.md section 16).
 *
 * A qemu dirty bitmap tells what was written since it started.  It can make an
 * incremental only on the point that was captured when it started (or later, while it
 * kept running): imgbackup --next-bitmap NAME records "NAME tracks the writes after
 * point P" in the key holder's state directory once P is committed, and --dirty-bitmap
 * NAME is refused unless NAME was recorded for the parent (its sequence and seal, which
 * the key authenticated).  The record is local and trusted, like the state file. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "ic_backup_int.h"
#include "ic_state.h"
#include "ic_util.h"

#define SUFFIX "bitmaps"
#define MAX_BYTES 32768u
#define MAX_LINES 64u
#define MAGIC "imgchain-bitmaps 1\n"

struct rec {
	char bitmap[ICF_NAME_MAX + 1];
	uint32_t seq;
	uint8_t seal[ICF_SEAL_LEN];
	char name[ICF_NAME_MAX + 1];
};

struct recs {
	size_t n;
	struct rec r[MAX_LINES];
};

static int bad(const char *path, const char *what, unsigned line)
{
	return ic_fail(-EINVAL, "%s: line %u: %s (FORMAT.md section 16)", path, line, what);
}

/* Parse buf (len bytes, NUL added by the caller) as ic_bitmap_record() writes it. */
static int decode(char *buf, size_t len, struct recs *rs, const char *path)
{
	char *p = buf, *nl;
	unsigned line = 1;

	rs->n = 0;
	if (len < strlen(MAGIC) || strncmp(buf, MAGIC, strlen(MAGIC)))
		return bad(path, "not \"imgchain-bitmaps 1\"", line);
	for (p += strlen(MAGIC); *p; p = nl + 1) {
		char bm[ICF_NAME_MAX + 1], nm[ICF_NAME_MAX + 1], sealhex[ICF_SEAL_LEN * 2 + 2];
		unsigned long seq;
		struct rec *r;
		int used = 0;

		line++;
		nl = strchr(p, '\n');
		if (!nl)
			return bad(path, "no newline at the end", line);
		*nl = '\0';
		if (rs->n == MAX_LINES)
			return bad(path, "too many lines", line);
		if (sscanf(p, "bitmap %127s %10lu %65s %127s%n", bm, &seq, sealhex, nm, &used) != 4 ||
		    p[used] || !ic_name_valid(bm) || !ic_name_valid(nm) || seq == 0 ||
		    seq > 99999999 || strlen(sealhex) != ICF_SEAL_LEN * 2)
			return bad(path, "expected \"bitmap NAME SEQ SEAL POINT\"", line);
		r = &rs->r[rs->n++];
		snprintf(r->bitmap, sizeof(r->bitmap), "%s", bm);
		snprintf(r->name, sizeof(r->name), "%s", nm);
		r->seq = (uint32_t)seq;
		if (sodium_hex2bin(r->seal, sizeof(r->seal), sealhex, strlen(sealhex), NULL, NULL,
				   NULL))
			return bad(path, "the seal is not hexadecimal", line);
		for (size_t i = 0; i + 1 < rs->n; i++)
			if (!strcmp(rs->r[i].bitmap, r->bitmap))
				return bad(path, "a bitmap named twice", line);
	}
	return 0;
}

static int load(const uint8_t id[ICF_ID_LEN], struct recs *rs)
{
	char *buf = malloc(MAX_BYTES + 1), path[4096];
	size_t len;
	int ret;

	if (!buf)
		return -ENOMEM;
	rs->n = 0;
	ret = ic_state_side_load(id, SUFFIX, buf, MAX_BYTES, &len, path, sizeof(path));
	if (ret == -ENOENT) {
		ret = 0;
	} else if (!ret) {
		buf[len] = '\0';
		ret = strlen(buf) == len ? decode(buf, len, rs, path) : bad(path, "a NUL byte", 1);
	}
	free(buf);
	return ret;
}

int ic_bitmap_check(const uint8_t chain_id[ICF_ID_LEN], const char *bitmap, uint32_t seq,
		    const uint8_t seal[ICF_SEAL_LEN], const char *name)
{
	struct recs *rs = malloc(sizeof(*rs));
	int ret;

	if (!rs)
		return -ENOMEM;
	ret = load(chain_id, rs);
	for (size_t i = 0; !ret && i < rs->n; i++) {
		const struct rec *r = &rs->r[i];

		if (strcmp(r->bitmap, bitmap))
			continue;
		if (r->seq != seq || sodium_memcmp(r->seal, seal, ICF_SEAL_LEN))
			ret = ic_fail(-ESTALE, "dirty bitmap '%s' tracks the writes after point '%s' (seq %u), not after the parent '%s' (seq %u): refused (without --dirty-bitmap the whole source is read)",
				      bitmap, r->name, r->seq, name, seq);
		goto out;
	}
	if (!ret)
		ret = ic_fail(-ESTALE, "dirty bitmap '%s' was not recorded for the parent '%s' (seq %u) on this machine (imgbackup --next-bitmap): refused (without --dirty-bitmap the whole source is read)",
			      bitmap, name, seq);
out:
	free(rs);
	return ret;
}

int ic_bitmap_point(const uint8_t chain_id[ICF_ID_LEN], const char *bitmap, uint32_t *seq)
{
	struct recs *rs = malloc(sizeof(*rs));
	int ret = rs ? load(chain_id, rs) : -ENOMEM;

	for (size_t i = 0; !ret && i < rs->n; i++) {
		if (!strcmp(rs->r[i].bitmap, bitmap)) {
			*seq = rs->r[i].seq;
			free(rs);
			return 0;
		}
	}
	free(rs);
	return -ENOENT;
}

int ic_bitmap_record(const uint8_t chain_id[ICF_ID_LEN], const char *bitmap, uint32_t seq,
		     const uint8_t seal[ICF_SEAL_LEN], const char *name)
{
	struct recs *rs = malloc(sizeof(*rs));
	char *text = malloc(MAX_BYTES);
	size_t i, n = 0;
	int ret = rs && text ? 0 : -ENOMEM;

	if (!ret)
		ret = load(chain_id, rs);
	if (ret)
		goto out;
	for (i = 0; i < rs->n && strcmp(rs->r[i].bitmap, bitmap); i++)
		;
	if (i == rs->n && rs->n == MAX_LINES) {
		/* full: forget the bitmap of the oldest point */
		i = 0;
		for (size_t k = 1; k < rs->n; k++)
			if (rs->r[k].seq < rs->r[i].seq)
				i = k;
	} else if (i == rs->n) {
		rs->n++;
	}
	snprintf(rs->r[i].bitmap, sizeof(rs->r[i].bitmap), "%s", bitmap);
	snprintf(rs->r[i].name, sizeof(rs->r[i].name), "%s", name);
	rs->r[i].seq = seq;
	memcpy(rs->r[i].seal, seal, ICF_SEAL_LEN);
	n = (size_t)snprintf(text, MAX_BYTES, MAGIC);
	for (i = 0; i < rs->n; i++) {
		char hex[ICF_SEAL_LEN * 2 + 1];

		sodium_bin2hex(hex, sizeof(hex), rs->r[i].seal, ICF_SEAL_LEN);
		n += (size_t)snprintf(text + n, MAX_BYTES - n, "bitmap %s %u %s %s\n",
				      rs->r[i].bitmap, rs->r[i].seq, hex, rs->r[i].name);
	}
	ret = ic_state_side_store(chain_id, SUFFIX, text, n);
out:
	free(text);
	free(rs);
	return ret;
}
