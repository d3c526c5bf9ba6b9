#!/bin/bash
# lease.sh: the writers' lease across hosts (two caches and state directories stand for two
# hosts).  A backup is stopped (SIGSTOP) past its lease's time; another host's backup takes
# the expired lease over, aborts the stopped writer's upload and publishes its point.  The
# stopped backup, continued, finds its lease lost and publishes nothing (exit 1).  While a
# writer is alive and within its time, another host is refused, naming it.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imginfo cmp
CEPH_RGW_MEM_MB=2048
export CEPH_RGW_MEM_MB
source "$top_srcdir/tests/s3/s3-lib.sh"
export IMGCHAIN_S3_LEASE_SECONDS=4
C=s3://$BUCKET/l
mkrandom disk 8 1
cp disk s.full
expect_exit 0 imgbackup --name full "$C" disk
mkrandom big 72 2

IMGCHAIN_S3_THREADS=1 imgbackup --name stopped "$C" big >a.out 2>&1 &
pid=$!
cleanup_fn kill_quiet "$pid" KILL
for ((i = 0; i < 600; i++)); do
	[[ -n $(s3t ls l/lease) ]] && break
	sleep 0.05
done
kill -STOP "$pid"
[[ -n $(s3t ls l/lease) ]] || fail "the first backup never took the lease"

# alive (stopped, not dead) and within its time: refused
write_at disk 0 100000 3
cp disk s.other
expect_exit 1 env IMGCHAIN_S3_CACHE="$TESTDIR/cache2" IMGCHAIN_STATE_DIR="$TESTDIR/state2" imgbackup --name other "$C" disk
expect_msg "another writer holds the chain: host .* pid $pid"
# past its time: taken over
sleep 5
expect_exit 0 env IMGCHAIN_S3_CACHE="$TESTDIR/cache2" IMGCHAIN_STATE_DIR="$TESTDIR/state2" imgbackup --name other "$C" disk
kill -CONT "$pid"
rc=0
wait "$pid" || rc=$?
[[ $rc -eq 1 ]] || fail "the stopped backup exited $rc: $(cat a.out)"
grep -Eq "lease was lost|not found|NoSuchUpload" a.out || fail "unexpected failure: $(cat a.out)"
rm -rf "$IMGCHAIN_S3_CACHE"
expect_exit 0 imginfo --json "$C"
[[ $(json_get "$TESTDIR/last.out" '",".join(p["name"] for p in j["points"])') == full,other ]] ||
	fail "points: $(cat "$TESTDIR/last.out")"
[[ -z $(s3t uploads l/) ]] || fail "an upload was left"
expect_exit 0 imgrestore "$C" other r.other
cmp r.other s.other || fail "other differs"
echo "lease.sh: ok"
