/* test_util.c: size parsing, names, exit codes, atomic writes. */
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
	CHECK(strstr(ic_last_error(0), "truncated") != NULL);
	close(fd);
	CHECK(stat(p, &st) == 0 && (st.st_mode & 0777) == 0600);
	free(p);
	unit_rmtree(dir);
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
	RUN(test_human);
	UNIT_EXIT();
}
