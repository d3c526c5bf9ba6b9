#!/bin/bash
# consolidate.sh: keyless consolidation of a chain in a bucket (FORMAT.md 14.5) on a real Ceph
# RGW.  Eleven daily points (a 40 MiB full, ten incrementals made at chosen UTC days with a
# preloaded time()); `imgconsolidate --keep-daily 7 s3://...` keeps the seven newest days, the
# four oldest points merged into the oldest kept one (a synthetic full replacing its object);
# every kept point restores from an empty cache byte for byte before and after; the client's
# traffic (curl's byte counters) is a small fraction of the bytes merged, the records being
# copied by the server (UploadPartCopy), small pieces assembled there too.  Faults, each followed by a check that every point
# still there restores byte for byte and a rerun that completes:
#  - the run killed with an upload in progress (nothing visible; the next writer aborts it);
#  - radosgw killed (SIGKILL) while the run is about to complete an upload, restarted a few
#    seconds later: the run's requests are retried and it completes;
#  - the run killed after the object was replaced, before the deletions (a partial
#    publication: the points left are whole points); the rerun deletes them.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imginfo imgconsolidate cmp
requires_test_hooks
CC=${CC:-cc}
requires "$CC"
CEPH_RGW_MEM_MB=2048
export CEPH_RGW_MEM_MB
source "$top_srcdir/tests/s3/s3-lib.sh"
# the test cluster's rgw_multipart_min_part_size (scripts/ceph-rgw.sh): parts copied by the
# server from 64 KiB on, so that this small chain shows what a large one does at 5 MiB
export IMGCHAIN_S3_MIN_PART=65536
C=s3://$BUCKET/c

# time() of the program's own code only: libcurl signs its requests with the real time
cat >faketime.c <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
time_t time(time_t *t)
{
	const char *s = getenv("FAKE_TIME");
	Dl_info di;
	struct timespec ts;
	time_t v;

	if (s && dladdr(__builtin_return_address(0), &di) && di.dli_fname &&
	    !strstr(di.dli_fname, ".so")) {
		v = (time_t)strtoll(s, NULL, 10);
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
		v = ts.tv_sec;
	}
	if (t)
		*t = v;
	return v;
}
EOF
"$CC" -shared -fPIC -o faketime.so faketime.c -ldl || skip "cannot build a preload library"
day=0
snap()      # NAME: a backup made on day $day (UTC noon), the disk kept as s.NAME
{
	FAKE_TIME=$((1767268800 + day * 86400)) LD_PRELOAD=$PWD/faketime.so \
		imgbackup -q --name "$1" "$C" disk || fail "backup $1 failed"
	cp disk "s.$1"
	day=$((day + 1))
}
check_all()     # every point the bucket lists restores from an empty cache byte for byte
{
	local p n=0
	rm -rf "$IMGCHAIN_S3_CACHE"
	imginfo --json "$C" >info.json || fail "imginfo failed"
	for p in $(json_get info.json '" ".join(p["name"] for p in j["points"])'); do
		restore_cmp "$C" "$p" "s.$p"
		n=$((n + 1))
	done
	echo "$n"
}
names() { imginfo --json "$C" >info.json && json_get info.json '" ".join(sorted(p["name"] for p in j["points"]))'; }

mkrandom disk 40 1
snap d00
for i in 1 2 3 4 5 6 7 8 9 10; do
	write_at disk $(((i * 3 % 37) << 20)) $((1500000 + i * 1000)) "d$i"
	write_at disk $(((i * 7 % 39) << 20)) 300000 "e$i"
	snap "$(printf 'd%02d' "$i")"
done
[[ $(check_all) == 11 ]] || fail "11 points expected before the merge"

# the plan (dry run: no lease, nothing written)
expect_exit 0 imgconsolidate --dry-run --keep-daily 7 "$C"
[[ -z $(s3t ls c/lease) ]] || fail "a dry run took the lease"
[[ $(names) == "d00 d01 d02 d03 d04 d05 d06 d07 d08 d09 d10" ]] || fail "a dry run changed the chain"

expect_exit 0 imgconsolidate --keep-daily 7 "$C"
expect_out "4 points merged"
expect_out "bucket: 1 object replaced, 4 deleted"
cat "$TESTDIR/last.out" >&2
[[ $(names) == "d04 d05 d06 d07 d08 d09 d10" ]] || fail "kept: $(names)"
s3t ls c/ | awk '{print $1}' >objs
printf 'c/%08u.img\n' 5 6 7 8 9 10 11 | { cat; echo c/imgchain.key; } | diff - objs ||
	fail "objects after the merge differ"
[[ -z $(s3t uploads c/) ]] || fail "incomplete uploads left"
[[ $(check_all) == 7 ]] || fail "7 points expected after the merge"

# the client's traffic against the bytes merged (the synthetic full's object)
read -r sent recv < <(sed -n 's/.*client traffic: .*(\([0-9]*\) and \([0-9]*\) bytes).*/\1 \2/p' \
	"$TESTDIR/last.out")
merged=$(s3t ls c/00000005.img | awk '{print $2}')
[[ -n $sent && -n $merged ]] || fail "no traffic or size: $(cat "$TESTDIR/last.out")"
echo "merge: $merged bytes merged, client sent $sent, received $recv" >&2
((merged > 40 << 20)) || fail "the synthetic full is only $merged bytes"
(((sent + recv) * 100 < merged * 5)) ||
	fail "client traffic $sent + $recv bytes is not below 5% of the $merged bytes merged"

# two more days, then faults during the next merge (keep 3 days: d04 .. d09 merged into d10,
# which becomes a synthetic full)
for i in 11 12; do
	write_at disk $(((i * 5 % 37) << 20)) 1200000 "d$i"
	snap "d$i"
done
before=$(names)
# killed with its upload in progress: nothing visible changed, the upload left ...
expect_exit 137 env PATH="$HOOKS_PATH" IMGCHAIN_TEST_CRASH_AT=s3-upload \
	imgconsolidate -q --keep-daily 3 "$C"
[[ -n $(s3t uploads c/) ]] || fail "no incomplete upload after a kill before completion"
[[ $(names) == "$before" ]] || fail "a merge killed before completing an upload changed the chain"
[[ $(check_all) == 9 ]] || fail "9 points expected"

# ... and radosgw killed while the next run waits to complete its upload, restarted 3 s
# later: the run (which aborted the stale upload when it took the lease) completes
env PATH="$HOOKS_PATH" IMGCHAIN_TEST_PAUSE_AT=s3-upload IMGCHAIN_S3_RETRY_SECONDS=120 \
	imgconsolidate --keep-daily 3 "$C" >run.out 2>&1 &
pid=$!
cleanup_fn kill_quiet "$pid" KILL
for ((i = 0; i < 1200; i++)); do
	[[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == T ]] && break
	kill -0 "$pid" 2>/dev/null || fail "the merge ended before pausing: $(cat run.out)"
	sleep 0.1
done
((i < 1200)) || fail "the merge never paused"
rgw_pid=$(cat "$TESTDIR/ceph/run/rgw.pid")
kill -KILL "$rgw_pid"
while kill -0 "$rgw_pid" 2>/dev/null; do sleep 0.1; done
rm -f "$TESTDIR/ceph/run/rgw.pid"
kill -CONT "$pid"
sleep 3
rgw_start
wait "$pid" || fail "the merge did not complete after radosgw came back: $(cat run.out)"
cat run.out >&2
grep -q "bucket: 1 object replaced, 6 deleted" run.out || fail "no publication: $(cat run.out)"
[[ -z $(s3t uploads c/) ]] || fail "incomplete uploads left: $(s3t uploads c/)"
[[ $(names) == "d10 d11 d12" ]] || fail "kept after the faults: $(names) (before: $before)"
[[ $(check_all) == 3 ]] || fail "3 points expected"

# three more days; keep 2: d10 .. d13 merged into d14.  Killed after the object was
# replaced, before the deletions: every point there restores; the rerun completes
for i in 13 14 15; do
	write_at disk $(((i * 5 % 37) << 20)) 900000 "d$i"
	snap "d$i"
done
expect_exit 137 env PATH="$HOOKS_PATH" IMGCHAIN_TEST_CRASH_AT=s3-replaced \
	imgconsolidate -q --keep-daily 2 "$C"
[[ $(names) == "d10 d11 d12 d13 d14 d15" ]] || fail "after a kill past the replacement: $(names)"
[[ $(check_all) == 6 ]] || fail "6 points expected"
expect_exit 0 imgconsolidate --keep-daily 2 "$C"
expect_out "bucket: 0 objects replaced, 4 deleted"
[[ $(names) == "d14 d15" ]] || fail "kept: $(names)"
[[ $(check_all) == 2 ]] || fail "2 points expected"
# a rerun has nothing left to do
expect_exit 0 imgconsolidate --keep-daily 2 "$C"
[[ $(names) == "d14 d15" ]] || fail "a rerun changed the chain: $(names)"
[[ -z $(s3t uploads c/) ]] || fail "incomplete uploads left"
[[ -z $(s3t ls c/.compose/) ]] || fail "temporary objects left: $(s3t ls c/.compose/)"
echo "consolidate.sh: ok"
