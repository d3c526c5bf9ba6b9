#!/bin/bash
# promote-kill.sh: the mount daemon dies by SIGKILL during a live promote, at several moments:
# early and half-way into the copy, right as the copy reaches the end (around the switch),
# and twice after the switch; each time a writer is writing (and fsyncing) tue's disk.raw and
# disk-flat.vmdk through the mount and logs each write before it and each acknowledged fsync.
# After each kill the dead mount is cleaned and imgmount started again with the same overlay
# directory: the promote resumes (a copy starts again, a switched disk is served from DEST);
# every write an fsync acknowledged is in the disk byte for byte, every other byte is the
# state before the round or one of the unacknowledged writes.  At the end DEST equals the
# disk after the last acknowledged write (and the disk is served from DEST: the overlay's
# files no longer change).  Pass/fail depends only on acknowledged writes.
. "$(dirname "$0")/mount-lib.sh"
requires imgpromote sha256sum

make_disk_chain 64
OV=$WORK/overlay
DEST=$WORK/prod.img
SIZE=$(stat -c %s "$WORK/d1")

# writer.py MNT ROUND LOG: writes until the daemon dies; "w I OFF N" before each write,
# "f I" once an fsync after write I returned
cat >"$WORK/writer.py" <<'PY'
import os, random, sys
mnt, rnd, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r = random.Random(rnd)
fds = [os.open(os.path.join(mnt, "tue", n), os.O_RDWR) for n in ("disk.raw", "disk-flat.vmdk")]
size = os.fstat(fds[0]).st_size
out = open(log, "a", buffering=1)
try:
    for i in range(1000000):
        fd = r.choice(fds)
        n = r.choice((1, 511, 4096, 9000, 65536, 300000, 1 << 20))
        off = r.randrange(0, size - n)
        if r.random() < 0.5:
            off -= off % 4096
        data = random.Random(rnd * 1000003 + i).randbytes(n)
        out.write("w %d %d %d\n" % (i, off, n))
        done = 0
        while done < n:
            done += os.pwrite(fd, data[done:], off + done)
        if r.random() < 0.3:
            os.fsync(r.choice(fds))
            out.write("f %d\n" % i)
except OSError:
    sys.exit(0)        # the daemon is gone
PY

# check.py FILE ROUND LOG STATE: FILE against STATE (the disk before the round) and the log;
# STATE receives FILE's bytes
cat >"$WORK/check.py" <<'PY'
import random, sys
path, rnd, log, st = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
writes, acked = [], -1
for line in open(log):
    f = line.split()
    if f[0] == "w":
        writes.append((int(f[1]), int(f[2]), int(f[3])))
    else:
        acked = int(f[1])
exp = bytearray(open(st, "rb").read())
pending = []
for i, off, n in writes:
    data = random.Random(rnd * 1000003 + i).randbytes(n)
    if i <= acked:
        exp[off:off + n] = data
    else:
        pending.append((off, data))
got = open(path, "rb").read()
if len(got) != len(exp):
    sys.exit("size %d, expected %d" % (len(got), len(exp)))
cover = sorted((off, off + len(d)) for off, d in pending)
pos, spans = 0, []
for a, b in cover + [(len(exp), len(exp))]:
    if a > pos:
        spans.append((pos, a))
    pos = max(pos, b)
for a, b in spans:
    if got[a:b] != exp[a:b]:
        j = next(x for x in range(a, b) if got[x] != exp[x])
        sys.exit("byte %d is %d, expected %d (an acknowledged write or the state before)" % (j, got[j], exp[j]))
for off, d in pending:
    for j in range(off, off + len(d)):
        if got[j] != exp[j] and not any(o <= j < o + len(e) and e[j - o] == got[j] for o, e in pending):
            sys.exit("byte %d is %d: neither the state before nor an unacknowledged write" % (j, got[j]))
open(st, "wb").write(got)
print("round %d: %d writes, %d acknowledged" % (rnd, len(writes), sum(1 for w in writes if w[0] <= acked)))
PY

kill_mount() {
	kill -KILL "$MOUNT_PID" 2>/dev/null || true
	wait "$MOUNT_PID" 2>/dev/null || true
	MOUNT_PID=
	fusermount3 -u -z "$MNT" 2>/dev/null || true
	! mountpoint -q "$MNT" || fail "the dead mount is still there"
}

phase() { imgpromote --status "$MNT" tue | sed -n 's/^phase=\([a-z]*\).*/\1/p'; }
copied() { imgpromote --status "$MNT" tue | sed -n 's/.* copied=\([0-9]*\).*/\1/p'; }

cp "$WORK/d1" "$WORK/model.disk"
# rounds: WHEN (early: 0.3 s into the copy, half: at half the disk, end: once the copy
# reached the end, switched: 0.4 s after the switch, late: 1 s into a switched round)
round=0
for when in early half end switched late; do
	round=$((round + 1))
	mount_chain "$CHAIN" --overlay "$OV"
	: >"$WORK/log.$round"
	python3 "$WORK/writer.py" "$MNT" "$round" "$WORK/log.$round" 2>"$WORK/writer.err" &
	wpid=$!
	cleanup_fn kill_quiet "$wpid" KILL
	for ((i = 0; i < 400; i++)); do     # the first write (python may start slowly here)
		[[ -s $WORK/log.$round ]] || ! kill -0 "$wpid" 2>/dev/null && break
		sleep 0.05
	done
	# the first round starts the promote (64 MiB at 16 MiB/s: 4 s); later ones find it resumed
	imgpromote -q --no-wait --rate 16M "$MNT" tue "$DEST" || fail "round $round: imgpromote"
	ph=$(phase)
	case $when in
	early) sleep 0.3 ;;
	half)
		for ((i = 0; i < 400; i++)); do
			[[ $(copied) -ge $((SIZE / 2)) ]] && break
			sleep 0.05
		done ;;
	end)
		for ((i = 0; i < 400; i++)); do
			[[ $(copied) -ge $SIZE ]] && break
			sleep 0.01
		done ;;
	switched)
		imgpromote -q "$MNT" tue "$DEST" || fail "round $round: the promote did not switch"
		sleep 0.4 ;;
	late) sleep 1 ;;
	esac
	echo "round $round ($when): phase at start $ph, at the kill $(phase), $(copied) bytes copied"
	kill_mount
	wait "$wpid" || fail "round $round: writer: $(cat "$WORK/writer.err")"
	[[ -s $WORK/log.$round ]] || fail "round $round: no write before the kill"
	mount_chain "$CHAIN" --overlay "$OV"
	python3 "$WORK/check.py" "$MNT/tue/disk.raw" "$round" "$WORK/log.$round" "$WORK/model.disk" ||
		fail "round $round ($when): $(tail -n 20 "$MOUNT_LOG")"
	cmp "$MNT/tue/disk.raw" <(head -c "$SIZE" "$MNT/tue/disk-flat.vmdk") ||
		fail "round $round: disk.raw and disk-flat.vmdk differ"
	unmount_chain
done

# the end: the promote switched, DEST is the disk after the last acknowledged write
mount_chain "$CHAIN" --overlay "$OV"
imgpromote -q "$MNT" tue "$DEST" || fail "the promote did not end switched"
grep -q '^phase switched$' "$OV/tue/promote.state" || fail "state: $(cat "$OV/tue/promote.state")"
ovsum=$(sha256sum "$OV"/tue/disk.raw.* | sha256sum)
printf 'the last word' | dd of="$MNT/tue/disk.raw" bs=1 seek=4096 conv=notrunc,fsync status=none
unmount_chain
cmp "$DEST" <(python3 - "$WORK/model.disk" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
d[4096:4096 + 13] = b"the last word"
sys.stdout.buffer.write(d)
PY
) || fail "DEST differs from the disk after the last acknowledged write"
[[ $(sha256sum "$OV"/tue/disk.raw.* | sha256sum) == "$ovsum" ]] || fail "the overlay changed after the switch"
echo "promote-kill: ok"
