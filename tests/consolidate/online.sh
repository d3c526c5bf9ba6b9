#!/bin/bash
# online.sh: merges under a writable overlay (FORMAT.md 10.8).  imgmount --overlay serves
# p08 while a writer writes through it (each acknowledged write recorded, reads checked
# against the model as it goes); merges rewrite p08's images, merge it "away" (kept,
# rewritten: the retention runs) and the mount re-bases onto the new images without a
# pause the writer notices; a run killed at several steps leaves correct bytes and the
# next run (or the mount's own scan) finishes; a mount that does not answer (stopped)
# makes the run fail after the bounded wait, naming it, and loses nothing.  At the end
# the mounted disk equals p08 plus the acknowledged writes, a remount shows the same,
# and the chain restores and verifies.
source "${top_srcdir:-.}/tests/consolidate/cons-lib.sh"
fuse_usable || skip "FUSE is not usable here"
requires_test_hooks
make_small_chain
OV=$TESTDIR/ov
mount_chain "$CHAIN" --overlay "$OV"
cleanup_fn kill_quiet "$MOUNT_PID" CONT

# the writer: random writes (512 B .. 64 KiB, unaligned too) through the mount, an fsync
# every 16; every write that returned is in the model; reads of the model's regions are
# compared as it goes; at the stop file: the whole disk compared, the model saved
python3 - "$MNT/p08/disk.raw" "$SRC/p08" "$TESTDIR/stop" "$TESTDIR/expected" \
	>"$TESTDIR/writer.out" 2>&1 <<'PY' &
import os, random, sys, time
path, base, stop, out = sys.argv[1:5]
model = bytearray(open(base, "rb").read())
fd = os.open(path, os.O_RDWR)
r = random.Random(4)
writes = reads = 0
bad = []
open(stop + ".ready", "w").close()
t_max = 0.0
while not os.path.exists(stop) or writes < 400:
    ln = r.choice((512, 4096, 5000, 65536))
    off = r.randrange(0, len(model) - ln)
    data = r.randbytes(ln)
    t0 = time.monotonic()
    paused = os.path.exists(stop + ".paused")
    if os.pwrite(fd, data, off) != ln:
        bad.append(("short write", off, ln))
        break
    if not paused and not os.path.exists(stop + ".paused"):
        t_max = max(t_max, time.monotonic() - t0)
    model[off:off + ln] = data
    writes += 1
    if writes % 16 == 0:
        os.fsync(fd)
    for _ in range(2):
        ln = r.choice((4096, 65536, 1 << 20))
        off = r.randrange(0, len(model) - ln)
        if os.pread(fd, ln, off) != bytes(model[off:off + ln]):
            bad.append(("read", off, ln))
        reads += 1
    time.sleep(0.002)
os.fsync(fd)
whole = os.pread(fd, len(model) + 1, 0)
if whole != bytes(model):
    bad.append(("whole disk", len(whole), len(model)))
open(out, "wb").write(model)
print("writes", writes, "reads", reads, "slowest write (mount not stopped) %.3f s" % t_max, "bad", len(bad), bad[:5])
sys.exit(1 if bad else 0)
PY
WRITER=$!
cleanup_fn kill_quiet "$WRITER"
for _ in $(seq 300); do
	[[ -e $TESTDIR/stop.ready ]] && break
	kill -0 "$WRITER" 2>/dev/null || break
	sleep 0.05
done
[[ -e $TESTDIR/stop.ready ]] || fail "writer did not start: $(cat "$TESTDIR/writer.out")"
writer_alive() { kill -0 "$WRITER" 2>/dev/null || fail "the writer stopped: $(cat "$TESTDIR/writer.out")"; }
rebased() { grep -c "restore point 'p08': re-based onto" "$MOUNT_LOG" || true; }
# wait_rebased N WHEN: the mount logs more than N re-bases of p08 (bounded)
wait_rebased()
{
	for _ in $(seq 600); do
		(( $(rebased) > $1 )) && return 0
		sleep 0.05
	done
	fail "the mount did not re-base p08 $2: $(cat "$MOUNT_LOG")"
}

# 0. requests planted by the storage: a damaged one is ignored (logged once), a symlink
#    is never followed; the writer goes on
printf 'imgchain-rebase 1\npoint 9 %s\n' "not-a-seal" >"$CHAIN/rebase"
for _ in $(seq 100); do grep -q "rebase: not a re-base request: ignored" "$MOUNT_LOG" && break; sleep 0.05; done
grep -q "rebase: not a re-base request: ignored" "$MOUNT_LOG" || fail "a damaged request was not noticed: $(cat "$MOUNT_LOG")"
rm "$CHAIN/rebase"
ln -s /proc/self/environ "$CHAIN/rebase"
sleep 0.5
writer_alive
# (the next run removes the link itself, never its target)

# 1. p08's ancestors merged (p02 rewritten into the full's file): p08's own image stays,
#    its path changes; the mount is asked and re-bases, nothing to wait for
n0=$(rebased)
keyless_expect 0 --merge p00..p02 "$CHAIN"
wait_rebased "$n0" "after its ancestors were merged"
writer_alive

# 2. p08 is merged away (--merge p07..p09 removes p07 and p08): it is kept, rewritten onto
#    p06 (its parent p07 merged into it), and the run waits for the mount's re-base
keyless_expect 0 --merge p07..p09 "$CHAIN"
expect_msg "restore point 'p08' is served with a writable overlay by .*imgmount.*: kept"
expect_msg "restore point 'p08': its server re-based onto the merged image"
[[ $(point_names) == "br p02 p03 p04 p05 p06 p08 p09 p10" ]] || fail "points: $(point_names)"
[[ $(point_field p08 parent) == p06 ]] || fail "p08's parent is $(point_field p08 parent)"
writer_alive

# 3. runs that rewrite p08 killed at several steps: the writer keeps seeing its bytes;
#    the next run rolls back or finishes, the mount re-bases (request or its own scan)
crash_run()
{
	local at=$1 n0
	shift
	n0=$(rebased)
	IMGCHAIN_TEST_CRASH_AT=$at PATH=$HOOKS_PATH keyless "$@" "$CHAIN"
	[[ $RC -eq 137 ]] || fail "imgconsolidate $* was not killed at $at (exit $RC): $LAST_ERR"
	writer_alive
	keyless_expect 0 --keep-last 1000 "$CHAIN"
	[[ $at == written ]] || wait_rebased "$n0" "after a run killed at $at"
	writer_alive
}
crash_run written --merge p06..p08
[[ $(point_names) == "br p02 p03 p04 p05 p06 p08 p09 p10" ]] || fail "not rolled back: $(point_names)"
crash_run commit --merge p06..p08
crash_run rename --merge p05..p08
crash_run rebase --merge p03..p08
[[ $(point_names) == "br p02 p08 p09 p10" ]] || fail "points: $(point_names)"
[[ $(point_field p08 parent) == p02 ]] || fail "p08's parent is $(point_field p08 parent)"
[[ ! -e $CHAIN/rebase ]] || fail "a re-base request was left behind"

# 4. a mount that does not answer (stopped) while the full is merged into p08 (in place):
#    the run waits the bound, fails naming it; the merge is done, the mount (continued) re-bases and serves the same bytes
n0=$(rebased)
touch "$TESTDIR/stop.paused"
kill -STOP "$MOUNT_PID"
keyless --merge p02..p08 --rebase-wait 2 "$CHAIN"
[[ $RC -eq 1 ]] || fail "a stopped mount: imgconsolidate exited $RC: $LAST_OUT $LAST_ERR"
expect_msg "restore point 'p08' was merged, but .*imgmount.*\(pid $MOUNT_PID\), which serves it with a writable overlay, did not re-base onto its new image within 2 s"
grep -Eq '^stale [0-9]+ [0-9a-f]{64}$' "$CHAIN/rebase" || fail "no stale line kept: $(cat "$CHAIN/rebase")"
# while it still has not answered, a run that would merge p08 away keeps it
keyless_expect 0 --merge p08..p09 "$CHAIN"
expect_msg "restore point 'p08' is kept: a server that did not re-base onto it"
kill -CONT "$MOUNT_PID"
wait_rebased "$n0" "once continued"
[[ $(point_names) == "br p08 p09 p10" ]] || fail "points: $(point_names)"
rm "$TESTDIR/stop.paused"
# it answered (it locks p08's new image): the next run forgets the stale line
keyless_expect 0 --keep-last 1000 "$CHAIN"
[[ ! -e $CHAIN/rebase ]] || fail "the stale line outlived the re-base: $(cat "$CHAIN/rebase")"
writer_alive

# the mount holds no removed image open any more (their space is freed while it runs)
held=
for _ in $(seq 100); do
	held=$(ls -l "/proc/$MOUNT_PID/fd" | grep "$CHAIN/.*(deleted)" || true)
	[[ -z $held ]] && break
	sleep 0.1
done
[[ -z $held ]] || fail "the mount still holds removed images: $held"

# the end: the writer's last checks, then the disk as a remount shows it
touch "$TESTDIR/stop"
wait "$WRITER" || fail "the writer saw wrong bytes: $(cat "$TESTDIR/writer.out")"
cat "$TESTDIR/writer.out"
grep -o "re-based onto.*" "$MOUNT_LOG" || true
cmp "$MNT/p08/disk.raw" "$TESTDIR/expected" || fail "the mounted disk differs from p08 + the writes"
unmount_chain
! grep -q "ERROR\|not applied" "$MOUNT_LOG" || fail "the mount logged: $(cat "$MOUNT_LOG")"
mount_chain "$CHAIN" --overlay "$OV"
cmp "$MNT/p08/disk.raw" "$TESTDIR/expected" || fail "a remount shows other bytes"
unmount_chain
# the chain itself: every point restores to its source and verifies; nothing pending
keyless_expect 0 --keep-last 1000 "$CHAIN"
check_points br p08 p09 p10
[[ ! -e $CHAIN/journal ]] || fail "journal left behind: $(cat "$CHAIN/journal")"
