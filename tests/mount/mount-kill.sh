#!/bin/bash
# mount-kill.sh: the daemon of a writable mount (--overlay) dies by SIGKILL while a guest
# writes, at varied moments over several rounds: while writes and fsyncs stream, right after
# an fsync was acknowledged, right after an unsynced write, in the middle of an fsync.
# The writer writes seeded data at unaligned and aligned offsets to tue's disk.raw and
# disk-flat.vmdk (one overlay) and to wed's disk-sparse.vmdk (another), fsyncs after some
# writes and logs which ones an fsync acknowledged.  After each kill the dead mount is cleaned
# (fusermount3 -u -z) and remounted with the same overlay directory: every acknowledged write
# is there byte for byte, every other byte is the previous state or one of the writes that
# were not acknowledged, the rest equals the backup; raw and flat agree where written.  At the end the chain
# files are unchanged (sha256) and `imgverify --data` passes for every point.
# Pass/fail depends only on acknowledged writes, never on where a kill landed.
. "$(dirname "$0")/mount-lib.sh"
requires imgverify sha256sum

make_disk_chain 32
(cd "$CHAIN" && sha256sum -- * >"$WORK/chain.sums")
OV=$WORK/overlay

# the writer: writer.py MNT ROUND MODE DAEMON_PID LOG
cat >"$WORK/writer.py" <<'PY'
import os, random, sys, threading, time
mnt, rnd, mode, dpid, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
r = random.Random(1000 + rnd)
files = {"raw": ("disk", os.path.join(mnt, "tue/disk.raw")),
         "flat": ("disk", os.path.join(mnt, "tue/disk-flat.vmdk")),
         "sparse": ("sparse", os.path.join(mnt, "wed/disk-sparse.vmdk"))}
fds = {k: os.open(p, os.O_RDWR) for k, (_, p) in files.items()}
size = {k: os.fstat(fd).st_size for k, fd in fds.items()}
out = open(log, "a", buffering=1)
# when the writer itself kills the daemon: after the n-th acknowledged fsync ("fsync"),
# after the n-th write following the n-th fsync ("write"), or a little into the n-th fsync
n_kill = r.randrange(2, 12)
acks = 0
def kill():
    os.kill(dpid, 9)
def fsync_once(fd):
    if mode == "during" and acks + 1 == n_kill:
        t = threading.Timer(r.choice((0, 0.0005, 0.001, 0.003)), kill)
        t.start()
    os.fsync(fd)
for i in range(20000):
    k = r.choice(("raw", "raw", "flat", "sparse"))
    model = files[k][0]
    n = r.choice((1, 17, 512, 3000, 4096, 4096 * 3, 9000, 65536, 200000, 1 << 20))
    off = r.randrange(0, size[k] - n)
    if r.random() < 0.5:
        off -= off % 4096
    data = random.Random(rnd * 1000003 + i).randbytes(n)
    out.write("w %d %s %d %d\n" % (i, model, off, n))
    try:
        done = 0
        while done < n:    # a write cut by the kill comes back short: the next part fails
            done += os.pwrite(fds[k], data[done:], off + done)
        if mode == "write" and acks >= n_kill and r.random() < 0.3:
            kill()
        if r.random() < 0.3:
            ks = [x for x in files if files[x][0] == model]
            fsync_once(fds[r.choice(ks)])
            acks += 1
            out.write("f %d %s\n" % (i, model))
            if mode == "fsync" and acks == n_kill:
                kill()
    except OSError:
        sys.exit(0)        # the daemon is gone
sys.exit("the daemon was never killed")
PY

# the checker: check.py MNT ROUND LOG STATEDIR; STATEDIR/{disk,sparse} hold the state before
# the round and receive the state after it
cat >"$WORK/check.py" <<'PY'
import os, random, sys
mnt, rnd, log, st = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
path = {"disk": os.path.join(mnt, "tue/disk.raw"), "sparse": os.path.join(mnt, "wed/disk-sparse.vmdk")}
writes = {"disk": [], "sparse": []}
acked = {"disk": -1, "sparse": -1}
for line in open(log):
    f = line.split()
    if f[0] == "w":
        writes[f[2]].append((int(f[1]), int(f[3]), int(f[4])))
    else:
        acked[f[2]] = int(f[1])
bad = 0
for model in ("disk", "sparse"):
    exp = bytearray(open(os.path.join(st, model), "rb").read())
    pending = []
    for i, off, n in writes[model]:
        data = random.Random(rnd * 1000003 + i).randbytes(n)
        if i <= acked[model]:
            exp[off:off + n] = data
        else:
            pending.append((off, data))
    got = open(path[model], "rb").read()
    if len(got) != len(exp):
        sys.exit("%s: size %d, expected %d" % (model, len(got), len(exp)))
    if model == "disk":    # the flat view shows the same overlay (compared where written)
        with open(os.path.join(mnt, "tue/disk-flat.vmdk"), "rb") as f:
            for i, off, n in writes[model]:
                if os.pread(f.fileno(), n, off) != got[off:off + n]:
                    sys.exit("disk.raw and disk-flat.vmdk differ at %d+%d" % (off, n))
    # bytes not covered by an unacknowledged write must be exact
    cover = sorted((off, off + len(d)) for off, d in pending)
    pos = 0
    spans = []
    for a, b in cover + [(len(exp), len(exp))]:
        if a > pos:
            spans.append((pos, a))
        pos = max(pos, b)
    for a, b in spans:
        if got[a:b] != exp[a:b]:
            j = next(x for x in range(a, b) if got[x] != exp[x])
            print("%s: byte %d is %d, expected %d (an acknowledged write or the backup)" % (model, j, got[j], exp[j]))
            bad += 1
            break
    # covered bytes: the previous value or one of the unacknowledged writes'
    # (by 4 KiB block first: a cut write usually leaves whole blocks of the old or the new)
    for off, d in pending:
        a = off
        while a < off + len(d):
            b = min(off + len(d), (a // 4096 + 1) * 4096)
            if got[a:b] != exp[a:b] and got[a:b] != d[a - off:b - off]:
                j = next((j for j in range(a, b) if got[j] != exp[j] and
                          all(not (o <= j < o + len(e)) or e[j - o] != got[j] for o, e in pending)), None)
                if j is not None:
                    print("%s: byte %d is %d: neither the state before nor an unacknowledged write" % (model, j, got[j]))
                    bad += 1
                    break
            a = b
    open(os.path.join(st, model), "wb").write(got)
    na = sum(1 for w in writes[model] if w[0] <= acked[model])
    print("round %d %s: %d writes, %d acknowledged" % (rnd, model, len(writes[model]), na))
sys.exit(1 if bad else 0)
PY

# the state before any write: the backups' bytes
mkdir "$WORK/model"
cp "$WORK/d1" "$WORK/model/disk"
mount_chain "$CHAIN"
cp "$MNT/wed/disk-sparse.vmdk" "$WORK/model/sparse"
unmount_chain

# rounds: MODE:DELAY_MS (the test kills after DELAY_MS, else the writer kills by MODE)
total=0
for spec in time:100 fsync:0 time:300 write:0 during:0 time:900 fsync:0 during:0; do
	round=$((total + 1))
	mode=${spec%%:*} delay=${spec#*:}
	: >"$WORK/log.$round"
	mount_chain "$CHAIN" --overlay "$OV"
	python3 "$WORK/writer.py" "$MNT" "$round" "$mode" "$MOUNT_PID" "$WORK/log.$round" 2>"$WORK/writer.err" &
	wpid=$!
	if [[ $mode == time ]]; then
		# the delay counts from the first write
		for ((i = 0; i < 200; i++)); do
			[[ -s $WORK/log.$round ]] || ! kill -0 "$wpid" 2>/dev/null && break
			sleep 0.05
		done
		sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
		kill_mount
	fi
	wait "$wpid" || fail "round $round: writer: $(cat "$WORK/writer.err")"
	kill_mount
	mount_chain "$CHAIN" --overlay "$OV"
	python3 "$WORK/check.py" "$MNT" "$round" "$WORK/log.$round" "$WORK/model" >"$WORK/check.out" 2>&1 ||
		fail "round $round ($spec): $(cat "$WORK/check.out")"
	sed 's/^/  /' "$WORK/check.out"
	unmount_chain
	total=$round
done
grep -c '^f' "$WORK"/log.* | awk -F: '{ n += $2 } END { print n " acknowledged fsyncs in all" }'

# a clean unmount keeps the last state too; read-only shows the backups; the chain is untouched
mount_chain "$CHAIN" --overlay "$OV"
cmp "$MNT/tue/disk.raw" "$WORK/model/disk" || fail "the last state changed across a clean remount"
cmp "$MNT/wed/disk-sparse.vmdk" "$WORK/model/sparse" || fail "the sparse state changed across a clean remount"
unmount_chain
mount_chain "$CHAIN"
cmp "$MNT/tue/disk.raw" "$WORK/d1" || fail "a read-only mount shows overlay data"
unmount_chain
(cd "$CHAIN" && sha256sum --quiet -c "$WORK/chain.sums") || fail "chain files changed"
for pd in $POINTS; do
	imgverify -q --data "$CHAIN" "${pd%%:*}" || fail "imgverify --data ${pd%%:*} failed"
done
echo "ok"
