/* test_util.c: size parsing, names, exit codes, errors (codes and messages, across threads),
 * the growable array, atomic writes, regular-file opens, sanitising. */
#include "config.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgchain.h"
#include "unit.h"

/* The array's growth goes through this allocator here: it counts, and fails on demand. */
static int realloc_calls, realloc_fail;

static void *test_realloc(void *p, size_t n)
{
	realloc_calls++;
	return realloc_fail ? NULL : realloc(p, n);
}

#define IC_ARRAY_REALLOC test_realloc
#include "ic_array.h"

static void test_parse_size(void)
{
	uint64_t v;

	CHECK(ic_parse_size("65536", &v) == 0 && v == 65536);
	CHECK(ic_parse_size("64K", &v) == 0 && v == 65536);
	CHECK(ic_parse_size("64KiB", &v) == 0 && v == 65536);
	CHECK(ic_parse_size("4M", &v) == 0 && v == 4u << 20);
	CHECK(ic_parse_size("1g", &v) == 0 && v == 1u << 30);
	CHECK(ic_parse_size("", &v) == -EINVAL);
	CHECK(ic_parse_size("-1", &v) == -EINVAL);
	CHECK(ic_parse_size("12Q", &v) == -EINVAL);
	CHECK(ic_parse_size("99999999999999999999", &v) == -EINVAL);
	CHECK(ic_parse_size("17179869184T", &v) == -EINVAL);
}

static void test_names(void)
{
	CHECK(ic_name_valid("mon"));
	CHECK(ic_name_valid("20261122T161400Z"));
	CHECK(ic_name_valid("a.b_c-d+e:f"));
	CHECK(!ic_name_valid(""));
	CHECK(!ic_name_valid(".hidden"));
	CHECK(!ic_name_valid("-opt"));
	CHECK(!ic_name_valid("a/b"));
	CHECK(!ic_name_valid("a b"));
	CHECK(!ic_name_valid("latest"));
	char longname[200];
	memset(longname, 'a', sizeof(longname));
	longname[128] = '\0';
	CHECK(!ic_name_valid(longname));
	longname[127] = '\0';
	CHECK(ic_name_valid(longname));
}

static void test_exit_codes(void)
{
	CHECK_EQ(ic_exit_code(0), 0);
	CHECK_EQ(ic_exit_code(-EIO), 1);
	CHECK_EQ(ic_exit_code(IC_EKEY), 3);
	CHECK_EQ(ic_exit_code(IC_ECORRUPT), 4);
	CHECK_EQ(ic_fail(-ENOENT, "x: %s", "gone"), -ENOENT);
	CHECK(strcmp(ic_last_error(-ENOENT), "x: gone") == 0);
	ic_clear_error();
	CHECK(strcmp(ic_last_error(-ENOENT), strerror(ENOENT)) == 0);
}

/* A message is reported only for the code it was recorded with. */
static void test_error_codes(void)
{
	CHECK_EQ(ic_fail(IC_ECORRUPT, "img: bad slot"), IC_ECORRUPT);
	CHECK(strcmp(ic_last_error(IC_ECORRUPT), "img: bad slot") == 0);
	/* a later ENOMEM that recorded nothing is not reported as "bad slot" */
	CHECK(strcmp(ic_last_error(-ENOMEM), strerror(ENOMEM)) == 0);
	CHECK_EQ(ic_fail(-EIO, "img: read: %s", strerror(EIO)), -EIO);
	CHECK(strcmp(ic_last_error(IC_ECORRUPT), strerror(EBADMSG)) == 0);    /* replaced */
	CHECK(strstr(ic_last_error(-EIO), "img: read: ") == ic_last_error(-EIO));
	CHECK(strcmp(ic_last_error(0), strerror(0)) == 0);
}

struct worker {
	struct ic_error err;
	int code;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	/* fail here; the message is this thread's own until saved */
	ic_error_save(&w->err, ic_fail(w->code, "block %d: checksum mismatch", 7));
	return NULL;
}

/* A failure crosses threads with its message: saved by the worker, raised by the caller. */
static void test_error_handoff(void)
{
	struct worker w = { .code = IC_ECORRUPT };
	struct ic_error none = { 0 }, nomsg;
	pthread_t th;

	ic_fail(-EAGAIN, "main: something else");
	CHECK_EQ(pthread_create(&th, NULL, worker_main, &w), 0);
	CHECK_EQ(pthread_join(th, NULL), 0);
	CHECK(strcmp(ic_last_error(IC_ECORRUPT), strerror(EBADMSG)) == 0);    /* not ours yet */
	CHECK_EQ(w.err.code, IC_ECORRUPT);
	CHECK_EQ(ic_error_raise(&w.err), IC_ECORRUPT);
	CHECK(strcmp(ic_last_error(IC_ECORRUPT), "block 7: checksum mismatch") == 0);
	CHECK(strcmp(ic_last_error(-EAGAIN), strerror(EAGAIN)) == 0);
	/* nothing to raise: 0, and the current failure stays */
	CHECK_EQ(ic_error_raise(&none), 0);
	CHECK(strcmp(ic_last_error(IC_ECORRUPT), "block 7: checksum mismatch") == 0);
	/* a code saved without a message of its own carries strerror's */
	ic_error_save(&nomsg, -ENOMEM);
	CHECK_EQ(ic_error_raise(&nomsg), -ENOMEM);
	CHECK(strcmp(ic_last_error(-ENOMEM), strerror(ENOMEM)) == 0);
	/* success saved: nothing raised */
	ic_error_save(&nomsg, 0);
	CHECK_EQ(ic_error_raise(&nomsg), 0);
}

struct pair {
	uint32_t a;
	uint64_t b;
};

static void test_array(void)
{
	IC_ARRAY(uint32_t) u = { 0 };
	IC_ARRAY(struct pair) p = { 0 };
	struct pair *q;
	size_t cap;

	realloc_calls = realloc_fail = 0;
	for (uint32_t i = 0; i < 100000; i++)
		CHECK_EQ(ic_array_push(&u, i * 3), 0);
	CHECK_EQ(u.n, 100000);
	CHECK(u.cap >= u.n && u.cap < 2 * u.n);
	for (uint32_t i = 0; i < 100000; i += 997)
		CHECK_EQ(u.v[i], i * 3);
	CHECK(realloc_calls <= 15);    /* doubling: log2(100000 / 8) + 1 */
	/* a failed growth: -ENOMEM, the array as it was */
	cap = u.cap;
	while (u.n < cap)
		CHECK_EQ(ic_array_push(&u, 1), 0);
	realloc_fail = 1;
	CHECK_EQ(ic_array_push(&u, 5), -ENOMEM);
	CHECK_EQ(u.n, cap);
	CHECK_EQ(u.cap, cap);
	CHECK_EQ(u.v[3], 9);
	CHECK_EQ(ic_array_reserve(&u, 1), -ENOMEM);
	CHECK_EQ(ic_array_reserve(&u, 0), 0);    /* room enough: no allocation */
	ic_array_free(&u);
	CHECK(u.v == NULL && u.n == 0 && u.cap == 0);
	/* the first allocation fails too; ic_array_add gives NULL */
	CHECK(ic_array_add(&p) == NULL);
	CHECK(p.v == NULL && p.n == 0);
	realloc_fail = 0;
	q = ic_array_add(&p);
	CHECK(q != NULL && q->a == 0 && q->b == 0 && p.n == 1);
	q->b = 42;
	CHECK_EQ(ic_array_push(&p, ((struct pair){ 1, 2 })), 0);
	CHECK(p.n == 2 && p.v[0].b == 42 && p.v[1].a == 1);
	/* sizes that overflow are refused before any allocation */
	realloc_calls = 0;
	CHECK_EQ(ic_array_grow(&p.v, &p.cap, SIZE_MAX / 2, sizeof(*p.v)), -ENOMEM);
	CHECK_EQ(realloc_calls, 0);
	CHECK(p.n == 2 && p.v[0].b == 42);
	ic_array_free(&p);
}

static void test_atomic_write(void)
{
	char *dir = unit_tmpdir();
	char *p = ic_path_join(dir, "f");
	char buf[16] = { 0 };
	struct stat st;
	int fd;

	CHECK_EQ(ic_write_file_atomic(dir, "f", "hello", 5, 0600), 0);
	fd = open(p, O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(ic_pread_full(fd, buf, 5, 0, p), 0);
	CHECK(memcmp(buf, "hello", 5) == 0);
	CHECK_EQ(ic_pread_full(fd, buf, 6, 0, p), IC_ECORRUPT);    /* truncated */
	CHECK(strstr(ic_last_error(IC_ECORRUPT), "truncated") != NULL);
	close(fd);
	CHECK(stat(p, &st) == 0 && (st.st_mode & 0777) == 0600);
	free(p);
	unit_rmtree(dir);
}

/* ic_open_regular / ic_create_tmp / ic_write_file_atomic refuse or remove plants and never
 * touch what a link points at. */
static void test_open_regular(void)
{
	char *dir = unit_tmpdir();
	char *outside = ic_path_join(dir, "outside"), *ghost = ic_path_join(dir, "ghost");
	char *link = ic_path_join(dir, "link"), *dangle = ic_path_join(dir, "dangle");
	char *fifo = ic_path_join(dir, "fifo"), *sub = ic_path_join(dir, "sub");
	char *tmpl = ic_path_join(dir, ".tmp-k"), buf[16] = { 0 };
	struct stat st;
	int fd, ofd;

	ofd = open(outside, O_WRONLY | O_CREAT | O_EXCL, 0600);
	CHECK(ofd >= 0 && write(ofd, "theirs", 6) == 6);
	close(ofd);
	CHECK(symlink(outside, link) == 0 && symlink(ghost, dangle) == 0);
	CHECK(mkfifo(fifo, 0600) == 0 && mkdir(sub, 0700) == 0);

	CHECK_EQ(ic_open_regular(AT_FDCWD, dir, "link", O_RDWR, 0, &fd), IC_ECORRUPT);
	CHECK(fd == -1 && strstr(ic_last_error(IC_ECORRUPT), "/link: not a regular file (symlink)"));
	CHECK_EQ(ic_open_regular(AT_FDCWD, dir, "dangle", O_RDWR | O_CREAT, 0600, &fd), IC_ECORRUPT);
	CHECK(lstat(ghost, &st) < 0 && errno == ENOENT);    /* never created */
	CHECK_EQ(ic_open_regular(AT_FDCWD, dir, "fifo", O_RDONLY, 0, &fd), IC_ECORRUPT);
	CHECK(strstr(ic_last_error(IC_ECORRUPT), "not a regular file (FIFO)") != NULL);
	CHECK_EQ(ic_open_regular(AT_FDCWD, NULL, sub, O_RDONLY, 0, &fd), IC_ECORRUPT);
	CHECK(strstr(ic_last_error(IC_ECORRUPT), "not a regular file (directory)") != NULL);
	CHECK_EQ(ic_open_regular(AT_FDCWD, dir, "missing", O_RDONLY, 0, &fd), -ENOENT);
	/* a regular file opens, blocking again */
	CHECK_EQ(ic_open_regular(AT_FDCWD, dir, "outside", O_RDONLY, 0, &fd), 0);
	CHECK(fd >= 0 && !(fcntl(fd, F_GETFL) & O_NONBLOCK));
	close(fd);

	/* a temporary name holding a link: the link goes, its target stays */
	CHECK(symlink(outside, tmpl) == 0);
	CHECK_EQ(ic_write_file_atomic(dir, "k", "mine", 4, 0600), 0);
	CHECK(lstat(tmpl, &st) < 0 && errno == ENOENT);
	ofd = open(outside, O_RDONLY);
	CHECK(ofd >= 0 && read(ofd, buf, sizeof(buf)) == 6 && !memcmp(buf, "theirs", 6));
	close(ofd);
	/* ... a FIFO there is refused, and so is a destination that is not a regular file */
	CHECK(mkfifo(tmpl, 0600) == 0);
	CHECK_EQ(ic_write_file_atomic(dir, "k", "mine", 4, 0600), IC_ECORRUPT);
	CHECK_EQ(ic_write_file_atomic(dir, "link", "mine", 4, 0600), IC_ECORRUPT);
	CHECK_EQ(ic_create_tmp(AT_FDCWD, dir, "fifo", O_WRONLY, 0600, &fd), IC_ECORRUPT);
	CHECK(lstat(fifo, &st) == 0 && S_ISFIFO(st.st_mode));

	/* rename never replaces */
	CHECK_EQ(ic_rename_noreplace(outside, link), -EEXIST);
	CHECK(strstr(ic_last_error(-EEXIST), "/link: a file is there already") != NULL);
	free(outside);
	free(ghost);
	free(link);
	free(dangle);
	free(fifo);
	free(sub);
	free(tmpl);
	unit_rmtree(dir);
}

static void test_sanitize(void)
{
	char b[64];

	CHECK(strcmp(ic_sanitize("pid 1 on h", 10, b, sizeof(b)), "pid 1 on h") == 0);
	CHECK(strcmp(ic_sanitize("a\033]0;x\007\\b\nsecond", 20, b, sizeof(b)),
		     "a\\x1b]0;x\\x07\\x5cb") == 0);
	CHECK(strcmp(ic_sanitize("\xff\xfe", 2, b, 6), "\\xff") == 0);    /* cut, terminated */
	CHECK(strcmp(ic_sanitize("abc", 0, b, sizeof(b)), "") == 0);
}

static void test_human(void)
{
	char b[32];

	CHECK(strcmp(ic_human_bytes(512, b, sizeof(b)), "512 B") == 0);
	CHECK(strcmp(ic_human_bytes(1536, b, sizeof(b)), "1.5 KiB") == 0);
	CHECK(strcmp(ic_human_bytes(3ull << 30, b, sizeof(b)), "3.0 GiB") == 0);
}

static void test_hex(void)
{
	uint8_t b[3];

	CHECK_EQ(ic_hex_decode("00a5ff", 3, b), 0);
	CHECK(b[0] == 0x00 && b[1] == 0xa5 && b[2] == 0xff);
	CHECK_EQ(ic_hex_decode("00A5ff", 3, b), -EINVAL);     /* lowercase only */
	CHECK_EQ(ic_hex_decode("00a5f", 3, b), -EINVAL);      /* the NUL is not a digit */
	CHECK_EQ(ic_hex_decode("0g", 1, b), -EINVAL);
}

int main(void)
{
	RUN(test_parse_size);
	RUN(test_names);
	RUN(test_exit_codes);
	RUN(test_error_codes);
	RUN(test_error_handoff);
	RUN(test_array);
	RUN(test_atomic_write);
	RUN(test_open_regular);
	RUN(test_sanitize);
	RUN(test_human);
	RUN(test_hex);
	UNIT_EXIT();
}
