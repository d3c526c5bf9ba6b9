/* test_owner.c: the overlay owner record and release request (ic_owner.c, FORMAT.md 10.7):
 * this process's record round-trips byte for byte; every rule refuses what breaks it (with
 * its line); files that are not regular files or too large are refused without hanging;
 * a recorded process is alive, gone or elsewhere. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "ic_error.h"
#include "ic_owner.h"
#include "unit.h"

static char *dir;

static void test_roundtrip(void)
{
	struct ic_owner_rec me, back;
	char buf[IC_OWNER_MAX], again[IC_OWNER_MAX];
	int n, m, line;

	CHECK_EQ(ic_owner_self(&me, "nbdkit", "NBD export of /x y\n\x01z"), 0);
	CHECK_EQ(me.pid, (uint64_t)getpid());
	CHECK(me.start > 0);
	CHECK_EQ(strlen(me.token), 32);
	CHECK(!strcmp(me.where, "NBD export of /x y??z"));    /* printable only */
	for (int req = 0; req < 2; req++) {
		me.wait = 17;
		n = ic_owner_encode(&me, req, buf, sizeof(buf));
		CHECK(n > 0);
		CHECK(ic_owner_decode(buf, (size_t)n, req, &back, &line) == NULL);
		CHECK(!strcmp(back.token, me.token) && back.pid == me.pid &&
		      back.start == me.start && back.since == me.since && !strcmp(back.host, me.host));
		CHECK_EQ(back.wait, req ? 17 : 0);
		m = ic_owner_encode(&back, req, again, sizeof(again));
		CHECK(m == n && !memcmp(buf, again, (size_t)n));
		/* a record is not a request, nor the other way round */
		CHECK(ic_owner_decode(buf, (size_t)n, !req, &back, &line) != NULL);
		CHECK_EQ(line, 1);
	}
}

/* The owner record text with line k (from 0: the magic) replaced by repl. */
static size_t with_line(char *out, int k, const char *repl)
{
	static const char *const good[] = {
		"imgchain-owner 1", "host h1.example", "boot -", "pidns 4026531836", "pid 42",
		"start 7", "since 1796290000", "server imgmount", "where /mnt/a b", "token 0123456789abcdef0123456789abcdef",
	};
	size_t n = 0;

	for (int i = 0; i < 10; i++)
		n += (size_t)sprintf(out + n, "%s\n", i == k ? repl : good[i]);
	return n;
}

static void test_rules(void)
{
	static const struct { int k; const char *line; } bad[] = {
		{ 0, "imgchain-owner 2" }, { 1, "host " }, { 1, "host a b" }, { 1, "host \xff" },
		{ 1, "host aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" },
		{ 2, "boot 0123" }, { 2, "boot 01234567-89ab-cdef-0123-456789ABCDEF" },
		{ 3, "pidns -1" }, { 3, "pidns 18446744073709551616" }, { 4, "pid 0" },
		{ 4, "pid 2147483648" }, { 4, "pid 042" }, { 4, "pid  42" }, { 5, "start x" },
		{ 6, "since " }, { 7, "server qemu" }, { 8, "where " }, { 8, "where a\tb" },
		{ 9, "token 0123456789ABCDEF0123456789abcdef" }, { 9, "token 01" },
		{ 3, "pid 42" }, { 5, "wait 3" },
	};
	char buf[8192];
	struct ic_owner_rec r;
	size_t n;
	int line;

	n = with_line(buf, -1, NULL);
	CHECK(ic_owner_decode(buf, n, false, &r, &line) == NULL);
	CHECK(!strcmp(r.where, "/mnt/a b") && r.pid == 42 && r.pidns == 4026531836ull);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		n = with_line(buf, bad[i].k, bad[i].line);
		if (ic_owner_decode(buf, n, false, &r, &line) == NULL || line != bad[i].k + 1) {
			fprintf(stderr, "accepted or wrong line (%d): %s\n", line, bad[i].line);
			unit_failures++;
		}
	}
	n = with_line(buf, -1, NULL);
	CHECK(ic_owner_decode(buf, n - 1, false, &r, &line) != NULL && line == 0);  /* no \n */
	buf[n] = 'x';
	CHECK(ic_owner_decode(buf, n + 1, false, &r, &line) != NULL);               /* trailing */
	memcpy(buf + n, "extra 1\n", 8);
	CHECK(ic_owner_decode(buf, n + 8, false, &r, &line) != NULL && line == 11);
	buf[5] = '\0';
	CHECK(ic_owner_decode(buf, n, false, &r, &line) != NULL && line == 0);       /* NUL */
	CHECK(ic_owner_decode(buf, 0, false, &r, &line) != NULL);
	memset(buf, 'a', sizeof(buf));
	CHECK(ic_owner_decode(buf, IC_OWNER_MAX + 1, false, &r, &line) != NULL && line == 0);
	CHECK(ic_owner_decode("imgchain-owner 1\n", 17, false, &r, &line) != NULL);  /* short */
}

static void test_files(void)
{
	struct ic_owner_rec me, r;
	char path[4200], big[IC_OWNER_MAX + 100];
	int dfd = open(dir, O_RDONLY | O_DIRECTORY);
	FILE *f;

	CHECK(dfd >= 0);
	CHECK_EQ(ic_owner_read(dfd, dir, IC_OWNER_RECORD, false, &r), -ENOENT);
	CHECK_EQ(ic_owner_self(&me, "imgmount", "/mnt/x"), 0);
	CHECK_EQ(ic_owner_write(dfd, dir, IC_OWNER_RECORD, false, &me), 0);
	CHECK_EQ(ic_owner_read(dfd, dir, IC_OWNER_RECORD, false, &r), 0);
	CHECK(!strcmp(r.token, me.token));
	/* the temporary is gone, the record is 0600 */
	snprintf(path, sizeof(path), "%s/%s", dir, IC_OWNER_RECORD);
	struct stat sb;
	CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
	/* too large */
	memset(big, 'x', sizeof(big));
	f = fopen(path, "w");
	fwrite(big, 1, sizeof(big), f);
	fclose(f);
	CHECK_EQ(ic_owner_read(dfd, dir, IC_OWNER_RECORD, false, &r), IC_ECORRUPT);
	CHECK(strstr(ic_last_error(IC_ECORRUPT), "larger than 4096 bytes") != NULL);
	/* a FIFO is refused without opening it (no hang); a symlink is not followed */
	unlink(path);
	CHECK(mkfifo(path, 0600) == 0);
	CHECK_EQ(ic_owner_read(dfd, dir, IC_OWNER_RECORD, false, &r), IC_ECORRUPT);
	CHECK_EQ(ic_owner_write(dfd, dir, IC_OWNER_RECORD, false, &me), 0);  /* replaced */
	CHECK_EQ(ic_owner_read(dfd, dir, IC_OWNER_RECORD, false, &r), 0);
	unlink(path);
	CHECK(symlink("/etc/hostname", path) == 0);
	CHECK_EQ(ic_owner_read(dfd, dir, IC_OWNER_RECORD, false, &r), IC_ECORRUPT);
	unlink(path);
	close(dfd);
}

static void test_alive(void)
{
	struct ic_owner_rec r;
	pid_t child;

	CHECK_EQ(ic_owner_self(&r, "imgmount", "-"), 0);
	if (!strcmp(r.boot, "-") || !r.pidns) {
		fprintf(stderr, "no boot id or pid namespace: liveness not tested\n");
		return;
	}
	CHECK_EQ(ic_owner_alive(&r), IC_OWNER_ALIVE);
	r.start++;                          /* the pid now belongs to another process */
	CHECK_EQ(ic_owner_alive(&r), IC_OWNER_GONE);
	child = fork();
	if (child == 0)
		_exit(0);
	waitpid(child, NULL, 0);
	r.pid = (uint64_t)child;            /* reaped: gone */
	CHECK_EQ(ic_owner_alive(&r), IC_OWNER_GONE);
	strcpy(r.host, "elsewhere");
	CHECK_EQ(ic_owner_alive(&r), IC_OWNER_ELSEWHERE);
}

int main(void)
{
	dir = unit_tmpdir();
	RUN(test_roundtrip);
	RUN(test_rules);
	RUN(test_files);
	RUN(test_alive);
	unit_rmtree(dir);
	UNIT_EXIT();
}
