/* test_util.c: size parsing, names, exit codes, atomic writes, regular-file opens, sanitising. */
#include "config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imgchain.h"
#include "unit.h"

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

int main(void)
{
	RUN(test_parse_size);
	RUN(test_names);
	RUN(test_exit_codes);
	RUN(test_atomic_write);
	RUN(test_open_regular);
	RUN(test_sanitize);
	RUN(test_human);
	UNIT_EXIT();
}
