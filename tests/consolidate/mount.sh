#!/bin/bash
# mount.sh: merges while a read-only imgmount streams every point: the readers, which
# opened the points' disks before, read correct bytes throughout; the hole punching waits
# for the mount (it holds the images' reader locks) and a later run does it.
source "${top_srcdir:-.}/tests/consolidate/cons-lib.sh"
fuse_usable || skip "FUSE is not usable here"
make_small_chain
ALL="p00 p01 p02 p03 p04 p05 p06 p07 p08 p09 p10 br"
mount_chain "$CHAIN" -o ro

# readers: every point's disk.raw opened now, read at random until told to stop
python3 - "$MNT" "$SRC" "$TESTDIR/stop" $ALL >"$TESTDIR/readers.out" 2>&1 <<'PY' &
import os, random, sys, threading
mnt, src, stop, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
fds = {n: os.open(os.path.join(mnt, n, "disk.raw"), os.O_RDONLY) for n in names}
data = {n: open(os.path.join(src, n), "rb").read() for n in names}
open(stop + ".ready", "w").close()
bad, reads = [], [0]
def reader(seed):
    r = random.Random(seed)
    while not os.path.exists(stop) or reads[0] < 2000:
        n = r.choice(names)
        ln = r.choice((4096, 65536, 1 << 20))
        off = r.randrange(0, len(data[n]) - ln)
        if os.pread(fds[n], ln, off) != data[n][off:off + ln]:
            bad.append((n, off, ln))
        reads[0] += 1
ts = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
[t.start() for t in ts]
[t.join() for t in ts]
print("reads", reads[0], "bad", len(bad), bad[:5])
sys.exit(1 if bad else 0)
PY
READERS=$!
for _ in $(seq 300); do
	[[ -e $TESTDIR/stop.ready ]] && break
	kill -0 "$READERS" 2>/dev/null || break
	sleep 0.05
done
[[ -e $TESTDIR/stop.ready ]] || fail "readers did not start: $(cat "$TESTDIR/readers.out")"
keyless_expect 0 --merge p00..p04 "$CHAIN"
expect_out "in use by a reader"
keyless_expect 0 --merge p06..p08 "$CHAIN"
keyless_expect 0 --keep-last 3 "$CHAIN"
touch "$TESTDIR/stop"
wait "$READERS" || fail "a reader saw wrong bytes: $(cat "$TESTDIR/readers.out")"
cat "$TESTDIR/readers.out"
unmount_chain
# the mount is gone: the waiting punches are done
[[ -e $CHAIN/journal ]] || fail "no pending punch was recorded"
keyless_expect 0 --keep-last 1000 "$CHAIN"
[[ ! -e $CHAIN/journal ]] || fail "journal left behind"
check_points $(point_names)
