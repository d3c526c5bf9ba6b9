#!/bin/bash
# release.sh: collaborative release (FORMAT.md 10.7) between two imgmounts in separate mount
# namespaces sharing one overlay directory.  A holds tue's overlay (its owner record names
# it) while a writer writes block after block through it; B, asked with --take-over to open
# tue's disk for writing, gets it: A commits, refuses every later write (EROFS, also a new
# open for writing), records B; B then shows every block A acknowledged and writes its own.
# Without --take-over B is refused, naming A.  After both stop, a third mount shows it all.
. "$(dirname "$0")/release-lib.sh"
requires python3 cmp

make_disk_chain 16
OV=$WORK/overlay
ns_mount a --overlay "$OV"
ns_mount b --overlay "$OV" --take-over --take-over-wait 120
ns_mount c --overlay "$OV"
apid=${NS_PID[a]} bpid=${NS_PID[b]}

# 1. A writes (not synced): it becomes tue's owner
in_ns a dd if=/dev/zero of="$NSMNT/tue/disk.raw" bs=4096 count=1 seek=100 conv=notrunc status=none
[[ $(owner_field "$OV/tue" pid) == "$apid" ]] || fail "the owner record does not name A: $(cat "$OV/tue/owner")"
[[ $(owner_field "$OV/tue" server) == imgmount && $(owner_field "$OV/tue" where) == "$NSMNT" ]] ||
	fail "owner record: $(cat "$OV/tue/owner")"
[[ $(head -1 "$OV/tue/owner") == "imgchain-owner 1" ]] || fail "record magic"

# 2. C (no --take-over) is refused, naming A; A is not asked
! in_ns c dd if=/dev/zero of="$NSMNT/tue/disk.raw" bs=4096 count=1 conv=notrunc status=none 2>"$WORK/c.err" ||
	fail "a second mount could write tue"
grep -q "busy" "$WORK/c.err" || fail "C's write open: $(cat "$WORK/c.err")"
grep -qE "overlay $OV/tue is in use by another process: imgmount \(host [^,]+, pid $apid\) on $NSMNT since .*--take-over" "$WORK/c.log" ||
	fail "C's refusal does not name A: $(cat "$WORK/c.log")"
[[ ! -e $OV/tue/owner.request && $(owner_field "$OV/tue" pid) == "$apid" ]] || fail "C changed the record"

# 3. a writer on A: its i-th write fills block i % 2048 from 1 MiB with i + 1, without
# syncing; it stops at the first failure
cat >"$WORK/writer.py" <<'PY'
import errno, os, struct, sys
def say(what):
    open(sys.argv[2] + ".tmp", "w").write(what)
    os.replace(sys.argv[2] + ".tmp", sys.argv[2])
fd = os.open(sys.argv[1], os.O_WRONLY)
n = 0
try:
    while n < 200000:
        os.pwrite(fd, struct.pack("<Q", n + 1) * 512, (1 << 20) + n % 2048 * 4096)
        n += 1
        if n % 20 == 0:
            say(str(n))
    err = "none"
except OSError as e:
    err = errno.errorcode.get(e.errno, str(e.errno))
say("%d %s" % (n, err))
PY
in_ns a python3 "$WORK/writer.py" "$NSMNT/tue/disk.raw" "$WORK/progress" &
wpid=$!
for ((i = 0; i < 600; i++)); do
	[[ -s $WORK/progress ]] && (($(cut -d' ' -f1 "$WORK/progress") >= 200)) && break
	sleep 0.05
done
(($(cut -d' ' -f1 "$WORK/progress") >= 200)) || fail "the writer on A did not get going: $(cat "$WORK/progress")"

# 4. B takes over while the writer runs: opening for writing asks A
t0=$(date +%s.%N)
in_ns b python3 - "$NSMNT/tue/disk.raw" <<'PY' || fail "B could not take tue over: $(cat "$WORK/b.log")"
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.pwrite(fd, b"B was here" * 400, 12 << 20)
os.fsync(fd)
PY
t1=$(date +%s.%N)
wait "$wpid" || fail "the writer failed"
read -r n err <"$WORK/progress" || true
[[ $err == EROFS ]] || fail "the writer on A ended with '$err' after $n blocks, not EROFS"
echo "hand-over while writing: $(python3 -c "print('%.2f' % ($t1 - $t0))") s; A acknowledged $n blocks"
grep -qE "asks for it: flushing and releasing restore point 'tue'" "$WORK/a.log" || fail "A's log: $(cat "$WORK/a.log")"
grep -qE "released to imgmount \(host [^,]+, pid $bpid\) on $NSMNT.*read-only from now on" "$WORK/a.log" ||
	fail "A's log does not name B: $(cat "$WORK/a.log")"
grep -qE "overlay $OV/tue: released by imgmount \(host [^,]+, pid $apid\)" "$WORK/b.log" ||
	fail "B's log does not name A: $(cat "$WORK/b.log")"
[[ $(owner_field "$OV/tue" pid) == "$bpid" ]] || fail "the record does not name B: $(cat "$OV/tue/owner")"
[[ ! -e $OV/tue/owner.request ]] || fail "the request was left behind"

# 5. A serves tue read-only now: writes and write opens fail, reads go on
! in_ns a dd if=/dev/zero of="$NSMNT/tue/disk.raw" bs=4096 count=1 conv=notrunc status=none 2>"$WORK/a.err" ||
	fail "A could still open tue for writing"
grep -q "Read-only file system" "$WORK/a.err" || fail "A's write open: $(cat "$WORK/a.err")"
in_ns a cmp -n 4096 "$NSMNT/tue/disk.raw" "$WORK/d1" || fail "A cannot read tue any more"
sleep 1.2   # the attribute cache (1 s)
[[ $(in_ns a stat -c %a "$NSMNT/tue/disk.raw") == 444 ]] || fail "A still shows tue's disk writable"
# other points stay A's own
in_ns a dd if=/dev/zero of="$NSMNT/wed/disk.raw" bs=4096 count=1 seek=7 conv=notrunc,fsync status=none ||
	fail "A lost wed too"

# 6. B shows every block A acknowledged, then its own write, the rest is tue's backup
expect()
{
	python3 - "$WORK/d1" "$n" "$WORK/expected" <<'PY'
import struct, sys
d = bytearray(open(sys.argv[1], "rb").read())
n = int(sys.argv[2])
d[100 * 4096:101 * 4096] = bytes(4096)
for i in range(n):
    at = (1 << 20) + i % 2048 * 4096
    d[at:at + 4096] = struct.pack("<Q", i + 1) * 512
d[12 << 20:(12 << 20) + 4000] = b"B was here" * 400
open(sys.argv[3], "wb").write(d)
PY
}
expect
in_ns b cmp "$NSMNT/tue/disk.raw" "$WORK/expected" || fail "B does not show what A acknowledged before the release"

# 7. both stop: A leaves B's record alone, B removes its own; a new mount shows it all
ns_stop a
[[ $(owner_field "$OV/tue" pid) == "$bpid" ]] || fail "A's exit changed B's record"
ns_stop b
[[ ! -e $OV/tue/owner ]] || fail "B left its record behind: $(cat "$OV/tue/owner")"
in_ns c cmp "$NSMNT/tue/disk.raw" "$WORK/expected" || fail "the hand-over lost data"
ns_stop c
