# promote-lib.sh: shared setup of the live promote tests (sourced, never run by itself), on
# top of mount-lib.sh: the chain (make_disk_chain 64), $OV, $DEST, $SIZE (tue's disk), and
#   $WORK/writer.py MNT POINT SEED LOG [STOPFILE]
#       seeded writes of random sizes (aligned and not) to POINT's disk.raw and
#       disk-flat.vmdk (one disk), an fsync now and then; logs "w SEED I OFF N" before each
#       write, "a SEED I" once it returned, "f SEED I" once an fsync after it returned.
#       Writes until STOPFILE exists (at least 200 writes), or without one until the
#       daemon dies (an I/O error ends it quietly).
#   $WORK/check.py BASE LOG FILE [OUT]
#       FILE against BASE with the logged writes applied: without OUT (no daemon died)
#       every write that returned, exactly; with OUT (a round ended by a kill) every write
#       an fsync acknowledged is there byte for byte and a byte that differs from that is
#       one of a write not acknowledged; OUT receives FILE's bytes (the next round's
#       BASE).  Exit 1 naming the first bad byte.
. "$(dirname "$0")/mount-lib.sh"
requires imgpromote sha256sum

make_disk_chain 64
OV=$WORK/overlay
DEST=$WORK/prod.img
SIZE=$(stat -c %s "$WORK/d1")

cat >"$WORK/writer.py" <<'PY'
import os, random, sys
mnt, point, seed, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
stop = sys.argv[5] if len(sys.argv) > 5 else None
r = random.Random(seed)
out = open(log, "a", buffering=1)
try:
    fds = [os.open(os.path.join(mnt, point, n), os.O_RDWR) for n in ("disk.raw", "disk-flat.vmdk")]
    size = os.fstat(fds[0]).st_size
    i = 0
    while stop is None or i < 200 or not os.path.exists(stop):
        fd = r.choice(fds)
        n = r.choice((1, 511, 4096, 9000, 65536, 300000, 1 << 20))
        off = r.randrange(0, size - n)
        if r.random() < 0.5:
            off -= off % 4096
        data = random.Random(seed * 1000003 + i).randbytes(n)
        out.write("w %d %d %d %d\n" % (seed, i, off, n))
        done = 0
        while done < n:
            done += os.pwrite(fd, data[done:], off + done)
        out.write("a %d %d\n" % (seed, i))
        if r.random() < 0.25:
            os.fsync(r.choice(fds))
            out.write("f %d %d\n" % (seed, i))
        i += 1
except OSError:
    if stop is not None:
        raise
    sys.exit(0)        # the daemon is gone
PY

cat >"$WORK/check.py" <<'PY'
import random, sys
base, log, path = sys.argv[1], sys.argv[2], sys.argv[3]
writes, fsynced, returned = [], -1, -1
for line in open(log):
    f = line.split()
    if f[0] == "w":
        writes.append(tuple(map(int, f[1:])))
    elif f[0] == "f":
        fsynced = int(f[2])
    else:
        returned = int(f[2])
# a run with a kill acknowledges by fsync; without one, every returned write stands
killed = len(sys.argv) > 4
acked = fsynced if killed else returned
exp = bytearray(open(base, "rb").read())
loose = []
for seed, i, off, n in writes:
    data = random.Random(seed * 1000003 + i).randbytes(n)
    if i <= acked:
        exp[off:off + n] = data
    else:
        loose.append((off, data))
got = open(path, "rb").read()
if len(got) != len(exp):
    sys.exit("%s: size %d, expected %d" % (path, len(got), len(exp)))
for blk in range(0, len(exp), 65536):
    if got[blk:blk + 65536] == exp[blk:blk + 65536]:
        continue
    for j in range(blk, min(blk + 65536, len(exp))):
        if got[j] != exp[j] and not any(o <= j < o + len(d) and d[j - o] == got[j] for o, d in loose):
            sys.exit("%s: byte %d is %d, expected %d (an acknowledged write or the state before)"
                     % (path, j, got[j], exp[j]))
if killed:
    open(sys.argv[4], "wb").write(got)
print("%s: %d writes, %d acknowledged" % (path, len(writes), sum(1 for w in writes if w[1] <= acked)))
PY

# start_nbd [ARG]...: the project's nbdkit plugin serving $CHAIN's tue on $OV in the
# background (socket $WORK/nbd.sock, pid in $npid, log $WORK/nbd.log); returns when it listens
start_nbd()
{
	nbdkit -f -U "$WORK/nbd.sock" -P "$WORK/nbd.pid" "$PLUGIN" "$CHAIN" point=tue overlay="$OV" \
		passphrase-file="$WORK/passphrase" "$@" 2>"$WORK/nbd.log" </dev/null &
	npid=$!
	cleanup_fn kill_quiet "$npid"
	for ((i = 0; i < 600; i++)); do
		[[ -S $WORK/nbd.sock && -s $WORK/nbd.pid ]] && return 0
		kill -0 "$npid" 2>/dev/null || fail "nbdkit: $(cat "$WORK/nbd.log")"
		sleep 0.05
	done
	fail "nbdkit did not listen within 30 s: $(cat "$WORK/nbd.log")"
}
