/* test_chain.c: the chain tree (branches, broken ancestry, duplicate sequences,
 * foreign files), block resolution through views, and the writers' lock. */
#include "config.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <xxhash.h>

#include "imgchain.h"
#include "unit.h"

static char *dir;

/* An image with zero-kind entries only at the given positions (no key needed):
 * enough to test trees and ownership. */
static void put(uint32_t seq, uint32_t parent, uint64_t disk, const uint64_t *pos, int n,
		const char *name, const char *fname, const char *chain)
{
	struct icf_header h;
	struct ic_writer *w;
	struct icf_slot s;
	struct icf_entry e;
	char *src, *dst;

	memset(&h, 0, sizeof(h));
	h.version = ICF_VERSION;
	h.header_size = ICF_HEADER_SIZE;
	memcpy(h.chain_id, chain, ICF_ID_LEN);
	h.block_size = 4096;
	h.cipher = ICF_CIPHER_XCHACHA20POLY1305;
	h.compress = ICF_COMPRESS_ZSTD;
	CHECK_EQ(ic_writer_new(dir, &h, seq, &w), 0);
	for (int i = 0; i < n; i++) {
		memset(&e, 0, sizeof(e));
		e.pos = pos[i];
		e.origin = seq;
		e.plain_len = (pos[i] + 1) * 4096 <= disk ? 4096 : (uint32_t)(disk - pos[i] * 4096);
		CHECK_EQ(ic_writer_add_entry(w, &e), 0);
	}
	memset(&s, 0, sizeof(s));
	s.seq = seq;
	s.parent_seq = parent;
	s.kind = parent ? ICF_KIND_INCREMENTAL : ICF_KIND_FULL;
	s.disk_size = disk;
	snprintf(s.name, sizeof(s.name), "%s", name);
	CHECK_EQ(ic_writer_commit(w, &s), 0);
	if (fname) {
		char f[32];

		ic_image_filename(seq, f, sizeof(f));
		src = ic_path_join(dir, f);
		dst = ic_path_join(dir, fname);
		CHECK_EQ(rename(src, dst), 0);
		free(src);
		free(dst);
	}
}

#define CH "chain-A-01234567"

static void test_tree(void)
{
	static const uint64_t p0[] = { 0, 1, 2, 3 }, p1[] = { 1 }, p2[] = { 2 }, p4[] = { 3 };
	struct ic_chain *c;
	struct ic_point *p;

	put(1, 0, 4 * 4096, p0, 4, "mon", NULL, CH);
	put(2, 1, 4 * 4096, p1, 1, "tue", NULL, CH);
	put(3, 2, 4 * 4096, p2, 1, "wed", NULL, CH);
	put(4, 1, 4 * 4096, p4, 1, "branch", NULL, CH);
	put(6, 5, 4 * 4096, p4, 1, "orphan", NULL, CH);
	put(9, 0, 4096, p0, 1, "foreign", NULL, "chain-B-01234567");
	CHECK_EQ(ic_chain_open(dir, &c), 0);
	CHECK_EQ(c->npoints, 5);
	CHECK_EQ(c->nbad, 1);
	CHECK(c->nbad == 1 && strstr(c->bad[0].why, "another chain"));
	CHECK(strcmp(ic_point_name(ic_chain_newest(c)), "orphan") == 0);
	p = ic_chain_find(c, "wed");
	CHECK(p && p->depth == 3 && p->parent && strcmp(ic_point_name(p->parent), "tue") == 0);
	p = ic_chain_find(c, "branch");
	CHECK(p && p->depth == 2 && p->parent->seq == 1);
	CHECK_EQ(ic_chain_find(c, "mon")->nchildren, 2);
	p = ic_chain_find(c, "orphan");
	CHECK(p && p->broken);
	CHECK(ic_chain_find(c, "nope") == NULL);
	/* the foreign file 00000009.img is unusable, but its name is never reused */
	CHECK_EQ(ic_chain_max_seq(c), 9);
	ic_chain_free(c);
}

/* Two files claiming one sequence (an interrupted in-place merge): the one with
 * the older parent is used, the other is listed as stale. */
static void test_duplicate_seq(void)
{
	static const uint64_t p[] = { 0 };
	struct ic_chain *c;
	struct ic_point *w;

	char *wed = ic_path_join(dir, "00000003.img"), *aside = ic_path_join(dir, "wed.aside");

	/* the full switched to "wed" in place, before its rename over the incremental */
	CHECK_EQ(rename(wed, aside), 0);
	put(3, 0, 4 * 4096, p, 1, "wed", "00000001.img", CH);
	CHECK_EQ(rename(aside, wed), 0);
	free(wed);
	free(aside);
	CHECK_EQ(ic_chain_open(dir, &c), 0);
	w = ic_chain_find(c, "wed");
	CHECK(w && w->img->slot.parent_seq == 0 && w->depth == 1);
	CHECK_EQ(c->nstale, 1);
	CHECK(c->nstale == 1 && c->stale[0]->slot.parent_seq == 2);
	ic_chain_free(c);
}

static int collect(void *arg, const struct ic_block_ref *ref)
{
	uint32_t **out = arg;

	*(*out)++ = (uint32_t)ref->e.pos * 100 + ref->img->slot.seq;
	return 0;
}

/* The streaming merge (walk, lookups without the owner map) resolves as the owner map does. */
static void check_nomap(struct ic_chain *c, const char *name, const struct ic_view *mapped)
{
	uint32_t got[8], *g = got;
	struct ic_block_ref r0, r1;
	struct ic_view *v;

	CHECK_EQ(ic_view_open_nomap(c, ic_chain_find(c, name), &v), 0);
	CHECK(v->owner == NULL);
	for (uint64_t pos = 0; pos < v->nblocks; pos++) {
		CHECK_EQ(ic_view_lookup(v, pos, &r0), 0);
		CHECK_EQ(ic_view_lookup(mapped, pos, &r1), 0);
		CHECK(r0.img == r1.img && r0.e.pos == r1.e.pos && r0.e.origin == r1.e.origin &&
		      r0.e.plain_len == r1.e.plain_len);
	}
	/* the entries put() writes are zero entries (origin = the image's seq): the walk
	 * calls back for none, the lookups above told each block's level */
	CHECK_EQ(ic_view_walk(v, collect, &g), 0);
	CHECK_EQ(g - got, 0);
	CHECK_EQ(ic_view_check_map(v), 0);
	/* a cursor visits the mapped blocks (zero entries too) with their levels' origins */
	{
		static const uint32_t origin[] = { 1, 2, 3, 1 };
		struct ic_view_cursor *cur;
		uint64_t n = 0;

		CHECK_EQ(ic_view_cursor_open(v, &cur), 0);
		while (ic_view_cursor_next(cur, v->nblocks, &r0) == 1) {
			CHECK(n < 4 && r0.e.pos == n && r0.e.origin == origin[n]);
			n++;
		}
		CHECK_EQ(n, 4);
		ic_view_cursor_seek(cur, 2);
		CHECK_EQ(ic_view_cursor_next(cur, 3, &r0), 1);
		CHECK_EQ(r0.e.pos, 2);
		CHECK_EQ(ic_view_cursor_next(cur, 3, &r0), 0);    /* block 3 is past end */
		CHECK_EQ(ic_view_cursor_next(cur, 6, &r0), 1);
		CHECK_EQ(r0.e.pos, 3);
		CHECK_EQ(ic_view_cursor_next(cur, 6, &r0), 0);
		ic_view_cursor_free(cur);
	}
	ic_view_free(v);
}

/* Ownership: the newest image on the path wins; a smaller disk hides older blocks. */
static void test_view(void)
{
	static const uint64_t a[] = { 0, 1, 2, 3, 4, 5 }, b[] = { 1 }, d[] = { 2 };
	struct ic_chain *c;
	struct ic_view *v;
	struct ic_block_ref r;
	char *sub = ic_path_join(dir, "v");
	char *saved = dir;

	CHECK_EQ(mkdir(sub, 0700), 0);
	dir = sub;
	put(1, 0, 6 * 4096, a, 6, "big", NULL, CH);
	put(2, 1, 3 * 4096 + 100, b, 1, "small", NULL, CH);     /* shrinks: block 3 is partial */
	put(3, 2, 6 * 4096, d, 1, "grown", NULL, CH);          /* grows again */
	CHECK_EQ(ic_chain_open(dir, &c), 0);
	CHECK_EQ(ic_view_open(c, ic_chain_find(c, "grown"), &v), 0);
	CHECK_EQ(v->nblocks, 6);
	CHECK(v->owner[0] == 1 && v->owner[1] == 2 && v->owner[2] == 3);
	/* blocks 4..5 were past the end of "small": nothing of "big" shows through
	 * (block 3 was small's partial last block: imgbackup always rewrites such a block) */
	CHECK(v->owner[3] == 1 && v->owner[4] == 0 && v->owner[5] == 0);
	CHECK_EQ(ic_view_lookup(v, 4, &r), 0);
	CHECK(r.img == NULL && r.e.plain_len == 4096);
	check_nomap(c, "grown", v);
	ic_view_free(v);
	CHECK_EQ(ic_view_open(c, ic_chain_find(c, "small"), &v), 0);
	CHECK_EQ(v->nblocks, 4);
	CHECK_EQ(ic_view_block_len(v, 3), 100);
	/* block 3 of "big" has length 4096: it does not fit "small"'s disk */
	CHECK_EQ(ic_view_lookup(v, 3, &r), IC_ECORRUPT);
	ic_view_free(v);
	ic_chain_free(c);
	dir = saved;
	free(sub);
}

static void test_lock(void)
{
	int fd, fd2, pipefd[2];
	pid_t pid;
	char ch;

	CHECK(pipe(pipefd) == 0);
	pid = fork();
	if (pid == 0) {
		if (ic_chain_lock(dir, false, &fd))
			_exit(1);
		if (write(pipefd[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	CHECK(read(pipefd[0], &ch, 1) == 1);
	CHECK_EQ(ic_chain_lock(dir, false, &fd2), -EBUSY);
	CHECK(strstr(ic_last_error(-EBUSY), "locked") && strstr(ic_last_error(-EBUSY), "pid"));
	kill(pid, SIGKILL);    /* a dead holder leaves nothing stuck */
	waitpid(pid, NULL, 0);
	CHECK_EQ(ic_chain_lock(dir, false, &fd2), 0);
	ic_chain_unlock(fd2);
	close(pipefd[0]);
	close(pipefd[1]);
}

int main(void)
{
	dir = unit_tmpdir();
	RUN(test_tree);
	RUN(test_duplicate_seq);
	RUN(test_view);
	RUN(test_lock);
	unit_rmtree(dir);
	UNIT_EXIT();
}
