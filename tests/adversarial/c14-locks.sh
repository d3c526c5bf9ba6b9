#!/bin/bash
# c14-locks.sh (doc/SECURITY.md case 14): two writers at once and stale locks.  A consolidation
# stopped inside its run (test hook IMGCHAIN_TEST_STALL_AT) holds the lock: a second consolidation
# and a backup are refused ("locked by another writer (pid N", exit 1) and change nothing, however
# long they are retried, and the holder is still alive afterwards (a live lock is never broken).
# Killed with SIGKILL, it leaves a stale lock file naming a dead process: the next writer takes the
# lock and finishes (or rolls back) the interrupted run.  A plain flock holder (any live process) is
# respected the same way.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
requires imgconsolidate flock
requires_test_hooks
make_chain

mv C/imgchain.key key.away
IMGCHAIN_TEST_STALL_AT=written PATH=$HOOKS_PATH env -u IMGCHAIN_PASSPHRASE \
	imgconsolidate -q --merge p1..p2 C 2>stall.err &
first=$!
cleanup_fn kill_quiet $first KILL
for ((i = 0; i < 600; i++)); do
	grep -q "stalled at written" stall.err && break
	kill -0 $first 2>/dev/null || fail "the first consolidation ended: $(cat stall.err)"
	sleep 0.05
done
grep -q "stalled at written" stall.err || fail "the first consolidation did not stall"
mv key.away C/imgchain.key
grep -q "^pid $first on " C/lock || fail "the lock file does not name the holder: $(cat C/lock)"
snap C
for try in 1 2 3; do
	expect_exit 1 env -u IMGCHAIN_PASSPHRASE imgconsolidate -q --merge p1..p3 C
	expect_msg "C: chain is locked by another writer \(pid $first on [^)]*\)"
	expect_exit 1 imgbackup -q --name p4 C s2
	expect_msg "^imgbackup: C: chain is locked by another writer \(pid $first on [^)]*\)$"
done
kill -0 $first 2>/dev/null || fail "the live holder is gone"
unchanged "refused writers"

# the holder dies: its lock file stays, naming a dead process; the next writer takes over
kill -9 $first
{ wait $first; } 2>/dev/null || true
grep -q "^pid $first on " C/lock || fail "the stale lock file was not left as it was"
expect_exit 0 env -u IMGCHAIN_PASSPHRASE imgconsolidate -q --merge p1..p2 C
[[ ! -e C/journal ]] || fail "the interrupted run's journal is still there"
no_tmp_files C
expect_exit 0 imgverify -q --data C
restore_cmp C p2 s2
restore_cmp C p3 s3

# any live flock holder is respected, by backups and consolidations alike
fresh
# (the subshell becomes the sleep that holds the lock: $! is the holder)
(exec 9>>C/lock && flock 9 && exec sleep 60) &
holder=$!
cleanup_fn kill_quiet $holder KILL
for ((i = 0; i < 200; i++)); do
	flock -n C/lock true 2>/dev/null || break
	sleep 0.05
done
snap C
expect_exit 1 imgbackup -q --name p4 C s2
expect_msg "chain is locked by another writer"
expect_exit 1 env -u IMGCHAIN_PASSPHRASE imgconsolidate -q --keep-last 1 C
expect_msg "chain is locked by another writer"
unchanged "writers refused by a live flock"
kill $holder
{ wait $holder; } 2>/dev/null || true
expect_exit 0 imgbackup -q --name p4 C s2
