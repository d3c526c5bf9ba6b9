#!/bin/bash
# fleecing.sh: a running disk backed up consistently with scripts/imgbackup-qemu against
# qemu-storage-daemon (QMP socket, a writable NBD export of the disk).  A writer (qemu-io over
# that export) keeps writing during both backups; each point equals the disk at the instant the
# fleecing started: a state the disk had between the writes completed before the helper's
# --freeze-cmd and those completed when its --thaw-cmd ran, never a mix of later writes.  The
# second point reads only the extents the bitmap started with the first marks; the third is
# made with a head start (--head-start: copied from the running disk first, then only the late
# writes from the snapshot); afterwards the node holds only the newest point's bitmap.  A failed
# imgbackup, with or without a head start, leaves the parent's bitmap.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/live/live-lib.sh"
requires imgbackup imgrestore imginfo qemu-img qemu-io qemu-storage-daemon stdbuf
helper="$top_srcdir/scripts/imgbackup-qemu"

mib=1048576
qemu-img create -q -f qcow2 disk.qcow2 64M
qemu-io -c "write -P 1 0 64M" disk.qcow2 >/dev/null
qemu-storage-daemon \
	--blockdev driver=file,node-name=file0,filename=disk.qcow2 \
	--blockdev driver=qcow2,node-name=disk0,file=file0 \
	--nbd-server addr.type=unix,addr.path="$PWD/nbd.sock" \
	--export type=nbd,id=live,node-name=disk0,name=live,writable=on \
	--chardev socket,id=qmp0,path="$PWD/qmp.sock",server=on,wait=off --monitor chardev=qmp0 \
	--pidfile "$PWD/qsd.pid" --daemonize
cleanup_fn stop_qemu_nbd "$PWD/qsd"
wait_socket "$PWD/qmp.sock"
live="nbd+unix:///live?socket=$PWD/nbd.sock"

# The writer: write w (from 0) fills the 1 MiB region (w * 7) mod 32 of the first 32 MiB with
# the byte (w div 32) mod 250 + 2; qemu-io prints "wrote" as each completes, in order.
python3 -c '
import sys
w = 0
while True:
    sys.stdout.write("write -P %d %d 1M\n" % ((w // 32) % 250 + 2, ((w * 7) % 32) << 20))
    w += 1
' 2>/dev/null | stdbuf -oL qemu-io -f raw "$live" >writer.log 2>writer.err &
wpid=$!
cleanup_fn pkill -P $wpid
cleanup_fn kill_quiet $wpid
done_writes() { grep -c 'wrote [0-9]' writer.log 2>/dev/null || true; }
for ((i = 0; i < 200; i++)); do
	[[ $(done_writes) -ge 50 ]] && break
	sleep 0.05
done
[[ $(done_writes) -ge 50 ]] || fail "the writer did not start: $(cat writer.err)"

# check_instant FILE LO HI: FILE is the disk after exactly m writes, for one m in LO..HI
check_instant()
{
	python3 - "$@" <<'PY'
import sys
path, lo, hi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = open(path, "rb").read()
mib = 1 << 20
got = []
for r in range(64):
    reg = data[r * mib:(r + 1) * mib]
    if reg.count(reg[0]) != mib:
        sys.exit("region %d is torn" % r)
    got.append(reg[0])
if any(v != 1 for v in got[32:]):
    sys.exit("the untouched half changed")
def state(m):
    s = [1] * 32
    for k in range(32):               # write w hits region (7w mod 32); w = k, k + 32, ...
        c = (m - k + 31) // 32 if m > k else 0
        if c:
            s[(k * 7) % 32] = (c - 1) % 250 + 2
    return s
ok = [m for m in range(lo, hi + 1) if state(m) == got[:32]]
if not ok:
    sys.exit("the point is no state of the disk after %d..%d writes" % (lo, hi))
print(ok[0])
PY
}

# ---- the full ----------------------------------------------------------------------------------
expect_exit 0 "$helper" --qmp "$PWD/qmp.sock" --node disk0 --nbd-socket "$PWD/nbd.sock" \
	--freeze-cmd "grep -c \"wrote [0-9]\" writer.log >lo1 || true" \
	--thaw-cmd "grep -c \"wrote [0-9]\" writer.log >hi1 || true" --name p1 C
expect_msg "fleecing started: point 'p1'"
expect_out "full point 'p1'"
after1=$(done_writes)
imgrestore -q C p1 p1.raw
m1=$(check_instant p1.raw "$(cat lo1)" $(($(cat hi1) + 1))) || fail "p1 is not the disk at one instant"
echo "p1: the disk after $m1 writes (between $(cat lo1) and $(($(cat hi1) + 1))); $after1 when it was done" >&2
[[ $after1 -gt $((m1 + 5)) ]] || fail "the writer made only $((after1 - m1)) writes during the backup"

# ---- an incremental: only what the bitmap marks ---------------------------------------------
sleep 0.5
expect_exit 0 "$helper" --qmp "$PWD/qmp.sock" --node disk0 --nbd-socket "$PWD/nbd.sock" \
	--freeze-cmd "grep -c \"wrote [0-9]\" writer.log >lo2 || true" \
	--thaw-cmd "grep -c \"wrote [0-9]\" writer.log >hi2 || true" --name p2 C -- -j 2
expect_out "incremental point 'p2' \(seq 2\) based on 'p1'"
read=$(summary_bytes read)
# the 32 MiB the writer touches and the parent's last block (the summary rounds), not the
# untouched half
[[ $read -le $((33 * mib)) ]] || fail "the incremental read $read bytes"
imgrestore -q C p2 p2.raw
m2=$(check_instant p2.raw "$(cat lo2)" $(($(cat hi2) + 1))) || fail "p2 is not the disk at one instant"
[[ $m2 -gt $m1 ]] || fail "p2 ($m2 writes) is not after p1 ($m1)"
echo "p2: the disk after $m2 writes (between $(cat lo2) and $(($(cat hi2) + 1))), read $read bytes" >&2

bitmaps()
{
	python3 - "$PWD/qmp.sock" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
f.readline()
for c in ({"execute": "qmp_capabilities"},
          {"execute": "query-named-block-nodes", "arguments": {"flat": True}}):
    f.write(json.dumps(c) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r:
            break
print(" ".join(sorted(b["name"] + ("" if b.get("persistent") else "(temporary)")
                      for n in r["return"] if n["node-name"] == "disk0"
                      for b in n.get("dirty-bitmaps", []))))
PY
}
[[ $(bitmaps) == "imgchain-p2" ]] || fail "bitmaps on the node after p2: $(bitmaps)"

# ---- a head start: the changes since p2 copied from the running disk, then the snapshot -------
expect_exit 0 "$helper" --qmp "$PWD/qmp.sock" --node disk0 --nbd-socket "$PWD/nbd.sock" --head-start \
	--freeze-cmd "grep -c \"wrote [0-9]\" writer.log >lo3 || true" \
	--thaw-cmd "grep -c \"wrote [0-9]\" writer.log >hi3 || true" --name p3 C
expect_out "incremental point 'p3' \(seq 3\) based on 'p2'"
expect_out "head start read "
imgrestore -q C p3 p3.raw
m3=$(check_instant p3.raw "$(cat lo3)" $(($(cat hi3) + 1))) || fail "p3 is not the disk at one instant"
echo "p3: the disk after $m3 writes (between $(cat lo3) and $(($(cat hi3) + 1)))" >&2
[[ $m3 -gt $m2 ]] || fail "p3 ($m3 writes) is not after p2 ($m2)"
[[ $(bitmaps) == "imgchain-p3" ]] || fail "bitmaps on the node after p3: $(bitmaps)"

# ---- a failed imgbackup: no point, the parent's bitmap stays, the new one goes ------------------
expect_exit 2 "$helper" --qmp "$PWD/qmp.sock" --node disk0 --nbd-socket "$PWD/nbd.sock" --name p4 \
	C -- --level 99
[[ $(bitmaps) == "imgchain-p3" ]] || fail "bitmaps on the node after a failed run: $(bitmaps)"
expect_exit 2 "$helper" --qmp "$PWD/qmp.sock" --node disk0 --nbd-socket "$PWD/nbd.sock" --name p4 \
	--head-start C -- --level 99
[[ $(bitmaps) == "imgchain-p3" ]] || fail "bitmaps on the node after a failed head start: $(bitmaps)"
[[ $(point_count C) -eq 3 ]] || fail "a failed run made a point"

kill_quiet $wpid
wait $wpid 2>/dev/null || true
expect_exit 0 imgverify -q --data C
