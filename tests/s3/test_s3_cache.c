/* test_s3_cache.c: tools open an s3:// chain's local cache before they take its lock,
 * several at once (imginfo beside a backup); the first of them make the cache's files.
 * Rounds of eight processes opening one fresh cache at the same moment must all succeed,
 * and leave one whole origin file.  No server: opening the cache asks the bucket nothing.
 * (One shared temporary name for origin let a second opener remove the first's temporary
 * before renaming its own: "origin: No such file or directory" in CI's tests/s3/chain.sh.) */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ic_error.h"
#include "ic_s3_chain.h"
#include "../unit/unit.h"

#define OPENERS 8
#define ROUNDS 60

static void opener(int go)
{
	struct ic_s3_chain *sc;
	char c;
	int err;

	if (read(go, &c, 1) != 1)
		_exit(3);
	err = ic_s3_chain_open("s3://bucket/hosts/web01", &sc);
	if (err) {
		fprintf(stderr, "opener %ld: %s\n", (long)getpid(), ic_last_error(err));
		_exit(1);
	}
	ic_s3_chain_close(sc);
	_exit(0);
}

static void test_fresh_cache_at_once(void)
{
	char *dir = unit_tmpdir(), cmd[4200];
	int failed = 0;

	setenv("IMGCHAIN_S3_CACHE", dir, 1);
	setenv("AWS_ACCESS_KEY_ID", "test", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "test", 1);
	setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9", 1);
	setenv("AWS_REGION", "us-east-1", 1);
	setenv("IMGCHAIN_S3_ALLOW_HTTP", "1", 1);
	for (int r = 0; r < ROUNDS && !failed; r++) {
		pid_t pids[OPENERS];
		int go[2];
		char buf[OPENERS];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'/*", dir);
		CHECK_EQ(system(cmd), 0);
		CHECK_EQ(pipe(go), 0);
		for (int i = 0; i < OPENERS; i++) {
			pids[i] = fork();
			CHECK(pids[i] >= 0);
			if (pids[i] == 0) {
				close(go[1]);
				opener(go[0]);
			}
		}
		close(go[0]);
		memset(buf, 'g', sizeof(buf));
		CHECK_EQ(write(go[1], buf, sizeof(buf)), (ssize_t)sizeof(buf));
		close(go[1]);
		for (int i = 0; i < OPENERS; i++) {
			int st;

			CHECK_EQ(waitpid(pids[i], &st, 0), pids[i]);
			if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
				failed++;
		}
	}
	if (failed)
		fprintf(stderr, "openers failed in a round: %d\n", failed);
	CHECK_EQ(failed, 0);
	/* one origin, whole; no temporary left */
	snprintf(cmd, sizeof(cmd), "test $(cat '%s'/*/origin | wc -l) -eq 2 && "
		 "test -z \"$(find '%s' -name '.tmp-*')\"", dir, dir);
	CHECK_EQ(system(cmd), 0);
	unit_rmtree(dir);
}

int main(void)
{
	ic_progname = "test_s3_cache";
	RUN(test_fresh_cache_at_once);
	UNIT_EXIT();
}
