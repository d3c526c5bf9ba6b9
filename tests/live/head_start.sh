#!/bin/bash
# head_start.sh: imgbackup --head-start against qemu-storage-daemon, orchestrated over QMP as
# a backup application would.  One transaction freezes a copy of the parent's bitmap and starts
# a "late" bitmap; the blocks dirty since the parent are read from the running disk and staged
# in the (invisible) new image; then --snapshot-cmd writes more (late writes), starts the
# fleecing with a frozen copy of the late bitmap, and writes again (after the snapshot).  The
# point equals the disk at the snapshot; at snapshot time only the late blocks are read (the
# server's trace); SIGKILL during the head start, during the snapshot command and during the
# read from the snapshot leaves no point, and the next backup removes the leftovers.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/live/live-lib.sh"
requires imgbackup imgrestore imginfo qemu-img qemu-io qemu-storage-daemon setsid
helper="$top_srcdir/scripts/imgbackup-qemu"

mib=1048576
bs=65536
qemu-img create -q -f qcow2 disk.qcow2 64M
qemu-io -c "write -P 1 0 64M" disk.qcow2 >/dev/null
# reads of the head start (4 MiB/s) and of the snapshot (1 MiB/s) are throttled so that a kill
# lands inside them, even on a loaded machine; every read an export serves is traced
qemu-storage-daemon \
	--object throttle-group,id=tg0,x-bps-read=4194304 \
	--object throttle-group,id=tg1,x-bps-read=1048576 \
	--blockdev driver=file,node-name=file0,filename=disk.qcow2 \
	--blockdev driver=qcow2,node-name=disk0,file=file0 \
	--nbd-server addr.type=unix,addr.path="$PWD/nbd.sock" \
	--export type=nbd,id=live,node-name=disk0,name=live,writable=on \
	--chardev socket,id=qmp0,path="$PWD/qmp.sock",server=on,wait=off --monitor chardev=qmp0 \
	--trace "blk_co_preadv,file=$PWD/qsd.trace" \
	--pidfile "$PWD/qsd.pid" --daemonize
cleanup_fn stop_qemu_nbd "$PWD/qsd"
wait_socket "$PWD/qmp.sock"
export live="nbd+unix:///live?socket=$PWD/nbd.sock"
Q() { python3 "$top_srcdir/tests/live/qmp.py" "$PWD/qmp.sock" "$@"; }
export top_srcdir
lines() { wc -l <qsd.trace; }
# ranges FROM TO: the reads traced in lines FROM+1..TO, adjacent ones merged
ranges()
{
	sed -n "$(($1 + 1)),$2p" qsd.trace |
		sed -n 's/.*blk_co_preadv .* offset \([0-9]*\) bytes \([0-9]*\) .*/\1 \2/p' | sort -n |
		python3 -c '
import sys
runs = []
for line in sys.stdin:
    off, n = map(int, line.split())
    if runs and runs[-1][0] + runs[-1][1] >= off:
        runs[-1][1] = max(runs[-1][1], off + n - runs[-1][0])
    else:
        runs.append([off, n])
print(" ".join("%d+%d" % tuple(r) for r in runs))'
}

# ---- p1, then changes since ---------------------------------------------------------------
expect_exit 0 "$helper" --qmp "$PWD/qmp.sock" --node disk0 --nbd-socket "$PWD/nbd.sock" --name p1 C
qemu-io -f raw -c "write -P 0x51 0 8M" -c "write -P 0x52 40M 1M" "$live" >/dev/null

cat >snap.sh <<'SH'
# the snapshot command: late writes, the snapshot (fleecing), writes after it, the export
set -e
lines() { wc -l <qsd.trace; }
Q() { python3 "$top_srcdir/tests/live/qmp.py" "$PWD/qmp.sock" "$@"; }
lines >marker0
touch snap.started
[ -z "${SNAP_SLEEP:-}" ] || sleep "$SNAP_SLEEP"
qemu-io -f raw -c "write -P $((0x60 + RUN)) 0 2M" -c "write -P $((0x68 + RUN)) 50M 1M" "$live" >/dev/null
Q '{"execute": "transaction", "arguments": {"actions": [
	{"type": "block-dirty-bitmap-add", "data": {"node": "disk0", "name": "imgchain-p2", "persistent": true}},
	{"type": "block-dirty-bitmap-add", "data": {"node": "disk0", "name": "frozen2", "persistent": false, "disabled": true}},
	{"type": "block-dirty-bitmap-merge", "data": {"node": "disk0", "target": "frozen2", "bitmaps": ["hs"]}},
	{"type": "blockdev-backup", "data": {"device": "disk0", "target": "fleece", "sync": "none", "job-id": "fj"}}]}}' >/dev/null
qemu-img convert -f raw -O raw "$live" ref.raw
qemu-io -f raw -c "write -P $((0x70 + RUN)) 3M 1M" -c "write -P $((0x78 + RUN)) 60M 1M" "$live" >/dev/null
Q '{"execute": "blockdev-add", "arguments": {"driver": "throttle", "node-name": "t2", "throttle-group": "tg1", "file": "fleece"}}' \
  '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "snap", "node-name": "t2", "name": "snap", "writable": false, "bitmaps": ["frozen2"]}}' >/dev/null
lines >marker1
SH

export RUN=0
hs_begin()
{
	RUN=$((RUN + 1))
	rm -f snap.started marker0 marker1 ref.raw fleece.qcow2
	qemu-img create -q -f qcow2 fleece.qcow2 64M
	Q '{"execute": "transaction", "arguments": {"actions": [
		{"type": "block-dirty-bitmap-add", "data": {"node": "disk0", "name": "hs", "persistent": false}},
		{"type": "block-dirty-bitmap-add", "data": {"node": "disk0", "name": "frozen1", "persistent": false, "disabled": true}},
		{"type": "block-dirty-bitmap-merge", "data": {"node": "disk0", "target": "frozen1", "bitmaps": ["imgchain-p1"]}}]}}' \
	  '{"execute": "blockdev-add", "arguments": {"driver": "throttle", "node-name": "t1", "throttle-group": "tg0", "file": "disk0"}}' \
	  '{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "hslive", "node-name": "t1", "name": "hslive", "writable": false, "bitmaps": ["frozen1"]}}' \
	  "{\"execute\": \"blockdev-add\", \"arguments\": {\"driver\": \"qcow2\", \"node-name\": \"fleece\", \"file\": {\"driver\": \"file\", \"filename\": \"$PWD/fleece.qcow2\"}, \"backing\": \"disk0\"}}" \
		>/dev/null
	base=$(lines)
}

# hs_end ok|failed: take it all down; the parent's bitmap goes only when the point exists
hs_end()
{
	local i
	Q '?{"execute": "block-export-del", "arguments": {"id": "hslive", "mode": "hard"}}' \
	  '?{"execute": "block-export-del", "arguments": {"id": "snap", "mode": "hard"}}' \
	  '?{"execute": "block-job-cancel", "arguments": {"device": "fj", "force": true}}' >/dev/null
	for ((i = 0; i < 100; i++)); do
		Q '{"execute": "query-block-exports"}' '{"execute": "query-block-jobs"}' |
			python3 -c 'import json, sys; e, j = (json.loads(l) for l in sys.stdin)
sys.exit(len(e) > 1 or len(j) > 0)' && break
		sleep 0.1
	done
	Q '?{"execute": "blockdev-del", "arguments": {"node-name": "t2"}}' \
	  '?{"execute": "blockdev-del", "arguments": {"node-name": "fleece"}}' \
	  '?{"execute": "blockdev-del", "arguments": {"node-name": "t1"}}' \
	  '?{"execute": "block-dirty-bitmap-remove", "arguments": {"node": "disk0", "name": "hs"}}' \
	  '?{"execute": "block-dirty-bitmap-remove", "arguments": {"node": "disk0", "name": "frozen1"}}' \
	  '?{"execute": "block-dirty-bitmap-remove", "arguments": {"node": "disk0", "name": "frozen2"}}' \
	  "?{\"execute\": \"block-dirty-bitmap-remove\", \"arguments\": {\"node\": \"disk0\", \"name\": \"imgchain-$([[ $1 == ok ]] && echo p1 || echo p2)\"}}" \
		>/dev/null
}

run_hs() # imgbackup in its own process group (the snapshot command dies with it)
{
	setsid imgbackup --head-start "nbd+unix:///hslive?socket=$PWD/nbd.sock" \
		--dirty-bitmap imgchain-p1 --bitmap-export frozen1 --late-bitmap frozen2 \
		--snapshot-cmd "bash snap.sh" --next-bitmap imgchain-p2 --name p2 "$@" \
		C "nbd+unix:///snap?socket=$PWD/nbd.sock" >hs.out 2>hs.err &
	hpid=$!
}

kill_at() # MOMENT: SIGKILL the head start's process group there; nothing may be visible
{
	local i
	hs_begin
	run_hs
	for ((i = 0; i < 600; i++)); do
		case $1 in
		reading) [[ $(lines) -gt $((base + 2)) ]] && break ;;
		snapshot-cmd) [[ -e snap.started ]] && break ;;
		snapshot-read) [[ -s marker1 && $(lines) -gt $(cat marker1) ]] && break ;;
		esac
		kill -0 $hpid 2>/dev/null || fail "the head start ended before '$1': $(cat hs.err)"
		sleep 0.05
	done
	kill -KILL -- -$hpid
	wait $hpid 2>/dev/null || true
	hs_end failed
	[[ $(point_count C) -eq 1 ]] || fail "SIGKILL at '$1' left a visible point"
	echo "killed at '$1': no point" >&2
}

export SNAP_SLEEP=30
kill_at snapshot-cmd
unset SNAP_SLEEP
kill_at reading
kill_at snapshot-read
ls -a C | grep -q '^\.tmp-' || fail "the kills left no temporary image (were they inside the backup?)"

# ---- the head start to its end ---------------------------------------------------------------
hs_begin
run_hs
wait $hpid || fail "the head start failed: $(cat hs.err)"
end=$(lines)
cat hs.out >&2
hs_end ok
grep -q "head start read " hs.out || fail "no head start in the summary: $(cat hs.out)"
no_tmp_files C
restore_cmp C p2 ref.raw
qemu-img convert -f raw -O raw "$live" now.raw
cmp -s now.raw ref.raw && fail "the writes after the snapshot did not happen"
# the head start read what changed since p1 (and the parent's last block), from the live disk:
# the writes above and the killed runs' (50M and 60M were written by the one killed last)
got=$(ranges "$base" "$(cat marker0)")
want="0+$((8 * mib)) $((40 * mib))+$mib $((50 * mib))+$mib $((60 * mib))+$mib $((64 * mib - bs))+$bs"
[[ $got == "$want" ]] || fail "the head start read $got, expected $want"
# at the snapshot: only the late writes
got=$(ranges "$(cat marker1)" "$end")
want="0+$((2 * mib)) $((50 * mib))+$mib"
[[ $got == "$want" ]] || fail "at the snapshot imgbackup read $got, expected only the late writes $want"

# ---- the chain goes on from p2 with its bitmap ------------------------------------------------
expect_exit 0 "$helper" --qmp "$PWD/qmp.sock" --node disk0 --nbd-socket "$PWD/nbd.sock" --name p3 C
expect_out "incremental point 'p3' \(seq [0-9]+\) based on 'p2'"
restore_cmp C p3 now.raw
expect_exit 0 imgverify -q --data C
