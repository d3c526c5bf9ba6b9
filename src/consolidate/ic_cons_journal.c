/* ic_cons_journal.c: CHAIN/journal, the record of a consolidation step in flight. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <xxhash.h>

#include "ic_cons_int.h"
#include "ic_image.h"
#include "ic_store.h"
#include "ic_util.h"

/* ---- the journal ---------------------------------------------------------------------
 *
 * CHAIN/journal, a text file replaced atomically (ic_store_write_file), last line a
 * checksum of the others:
 *
 *   imgchain-journal 1
 *   phase prepare|commit|idle
 *   remove SEQ...              points the step removes, descending
 *   inplace FILE TARGET D0     target written into FILE's image, whose data ended at D0
 *   slot HEX                   (commit) the in-place target's new slot, encoded
 *   target SEQ BASE            (commit) a target written to .tmp-cons-SEQ.img
 *   punch SEQ                  an image whose unused space awaits its readers (or is
 *                              being freed by a background process: any run redoes it)
 *   sum HEX                    XXH3-64 of every byte before this line
 *
 * prepare: nothing visible has changed yet; recovery rolls back (truncates FILE to
 * D0, removes the temporary files).  commit: every new byte is written and synced;
 * recovery rolls forward (renames, slot switch, removals), re-checking each action
 * so that it can be repeated any number of times. */

void ic_cons_journal_reset_step(struct journal *j)
{
	free(j->remove.v);
	free(j->tseq.v);
	free(j->tbase.v);
	memset(&j->remove, 0, sizeof(j->remove));
	memset(&j->tseq, 0, sizeof(j->tseq));
	memset(&j->tbase, 0, sizeof(j->tbase));
	j->phase = J_IDLE;
	j->inplace = j->have_slot = false;
}

void ic_cons_journal_destroy(struct journal *j)
{
	ic_cons_journal_reset_step(j);
	free(j->punch.v);
	free(j->bg.v);
	memset(j, 0, sizeof(*j));
}

/* Text built by sb_printf; oom: a printf did not fit in memory (the text is cut). */
struct sbuf {
	char *v;
	size_t n, cap;
	bool oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int need;

	va_start(ap, fmt);
	need = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (need < 0 || b->oom || ic_array_reserve(b, (size_t)need + 1)) {
		b->oom = true;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(b->v + b->n, b->cap - b->n, fmt, ap);
	va_end(ap);
	b->n += (size_t)need;
}

int ic_cons_journal_write(const char *dir, const struct journal *j)
{
	static const char *const phases[] = { "idle", "prepare", "commit" };
	struct sbuf b = { 0 };
	char *path;
	int ret;

	if (j->phase == J_IDLE && !j->punch.n) {
		/* no directory sync: a journal that comes back after a power loss describes
		 * a finished step, and finishing it again changes nothing */
		path = ic_path_join(dir, ICF_JOURNAL_NAME);
		if (!path)
			return -ENOMEM;
		ret = ic_store_remove(path);
		free(path);
		return ret;
	}
	sb_printf(&b, "imgchain-journal 1\nphase %s\n", phases[j->phase]);
	if (j->phase != J_IDLE) {
		sb_printf(&b, "remove");
		for (size_t i = 0; i < j->remove.n; i++)
			sb_printf(&b, " %u", j->remove.v[i]);
		sb_printf(&b, "\n");
		if (j->inplace)
			sb_printf(&b, "inplace %u %u %llu\n", j->ip_file, j->ip_target,
				  (unsigned long long)j->ip_d0);
		if (j->have_slot) {
			uint8_t raw[ICF_SLOT_SIZE];

			ic_slot_encode(&j->ip_slot, raw);
			sb_printf(&b, "slot ");
			for (size_t i = 0; i < sizeof(raw); i++)
				sb_printf(&b, "%02x", raw[i]);
			sb_printf(&b, "\n");
		}
		for (size_t i = 0; i < j->tseq.n; i++)
			sb_printf(&b, "target %u %u\n", j->tseq.v[i], j->tbase.v[i]);
	}
	for (size_t i = 0; i < j->punch.n; i++)
		sb_printf(&b, "punch %u\n", j->punch.v[i]);
	sb_printf(&b, "sum %016llx\n", (unsigned long long)XXH3_64bits(b.v, b.n));
	/* only commit must be durable: the loss of a prepare or idle journal in a crash
	 * costs nothing but space (an unused tail of the full, cut at its next merge;
	 * holes not punched) */
	ret = b.oom ? -ENOMEM : ic_store_write_file(dir, ICF_JOURNAL_NAME, b.v, b.n,
						     j->phase == J_COMMIT);
	ic_array_free(&b);
	return ret;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A sequence number of the journal: 1..ICF_SEQ_MAX, as in a slot. */
static bool seq_ok(unsigned long long a)
{
	return a >= 1 && a <= ICF_SEQ_MAX;
}

/* 0, -1 for a line that is not a journal's, or -ENOMEM. */
static int journal_line(struct journal *j, char *line, const char *path)
{
	char *arg = strchr(line, ' ');
	unsigned long long a, b, c;

	if (!arg)
		return strcmp(line, "remove") ? -1 : 0;
	*arg++ = '\0';
	if (!strcmp(line, "phase")) {
		j->phase = !strcmp(arg, "prepare") ? J_PREPARE : !strcmp(arg, "commit") ? J_COMMIT
			 : !strcmp(arg, "idle") ? J_IDLE : -1;
		return j->phase < 0 ? -1 : 0;
	}
	if (!strcmp(line, "remove")) {
		for (char *tok = strtok(arg, " "), *end; tok; tok = strtok(NULL, " ")) {
			a = strtoull(tok, &end, 10);
			if (*end || !seq_ok(a))
				return -1;
			if (ic_array_push(&j->remove, (uint32_t)a))
				return -ENOMEM;
		}
		return 0;
	}
	if (!strcmp(line, "inplace") && sscanf(arg, "%llu %llu %llu", &a, &b, &c) == 3 &&
	    seq_ok(a) && seq_ok(b)) {
		j->inplace = true;
		j->ip_file = (uint32_t)a;
		j->ip_target = (uint32_t)b;
		j->ip_d0 = c;
		return 0;
	}
	if (!strcmp(line, "slot") && strlen(arg) == 2 * ICF_SLOT_SIZE) {
		uint8_t raw[ICF_SLOT_SIZE];

		for (size_t i = 0; i < ICF_SLOT_SIZE; i++) {
			int hi = hexval(arg[2 * i]), lo = hexval(arg[2 * i + 1]);

			if (hi < 0 || lo < 0)
				return -1;
			raw[i] = (uint8_t)(hi << 4 | lo);
		}
		j->have_slot = true;
		/* version 0: checked with the image's version when used (ic_cons_finish.c) */
		return ic_slot_decode(raw, &j->ip_slot, 0, path) ? -1 : 0;
	}
	if (!strcmp(line, "target") && sscanf(arg, "%llu %llu", &a, &b) == 2 && seq_ok(a) &&
	    b <= ICF_SEQ_MAX) {
		return ic_array_push(&j->tseq, (uint32_t)a) || ic_array_push(&j->tbase, (uint32_t)b)
			       ? -ENOMEM : 0;
	}
	if (!strcmp(line, "punch") && sscanf(arg, "%llu", &a) == 1 && seq_ok(a)) {
		return ic_array_push(&j->punch, (uint32_t)a);
	}
	return -1;
}

/* Decode a journal's text: buf holds len bytes and one more, a NUL (it is cut up).
 * IC_ECORRUPT naming path unless it is a journal with a valid checksum; *j then holds
 * what was parsed (release with ic_cons_journal_destroy either way). */
int ic_cons_journal_decode(char *buf, size_t len, struct journal *j, const char *path)
{
	char *sum, *line, *save = NULL;

	memset(j, 0, sizeof(*j));
	buf[len] = '\0';
	sum = strstr(buf, "sum ");
	if (strlen(buf) != len || strncmp(buf, "imgchain-journal 1\n", 19) || !sum ||
	    (sum > buf && sum[-1] != '\n') ||
	    strtoull(sum + 4, NULL, 16) != XXH3_64bits(buf, (size_t)(sum - buf)))
		goto bad;
	*sum = '\0';
	for (line = strtok_r(buf + 19, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		int r = journal_line(j, line, path);

		if (r == -ENOMEM)
			return r;
		if (r)
			goto bad;
	}
	return 0;
bad:
	return ic_fail(IC_ECORRUPT, "%s: journal damaged; check the chain with imgverify, then remove the journal",
		       path);
}

/* Read CHAIN/journal; a missing journal is an idle one. */
int ic_cons_journal_read(const char *dir, struct journal *j)
{
	char *path = ic_path_join(dir, ICF_JOURNAL_NAME);
	char *buf = NULL;
	size_t len;
	int ret;

	memset(j, 0, sizeof(*j));
	if (!path)
		return -ENOMEM;
	ret = ic_store_read_file(dir, ICF_JOURNAL_NAME, 1 << 24, &buf, &len);
	if (ret == -ENOENT)
		ret = 0;
	else if (!ret && len > 1 << 24)
		ret = ic_fail(-EIO, "%s: cannot read the journal", path);
	else if (!ret)
		ret = ic_cons_journal_decode(buf, len, j, path);
	free(buf);
	free(path);
	return ret;
}
