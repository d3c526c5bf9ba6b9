#!/bin/bash
# reflink.sh (issue 17): merges on file systems that share extents, each loop-mounted from
# a sparse file in $TESTDIR (XFS made with -m reflink=1; btrfs where mkfs.btrfs exists),
# unmounted and detached by the cleanup.  On each:
#  - a merge into the full, stopped (test hook) at its commit point: every record written,
#    the file system's free space has dropped by metadata only, far less than the records
#    merged; killed there, the rerun finishes it;
#  - the merged full's records are shared extents (FIEMAP flag "shared" in filefrag -v,
#    with reflink copies of the merged incrementals kept aside), and so are those of a
#    merge into an incremental (a new file), which copies 0 bytes;
#  - the merged points restore byte-identical and imgverify --data passes;
#  - a damaged record: a merge with --verify stops (exit 4, chain unchanged); without it
#    the record is shared unread and keyless imgverify still names the damage;
#  - IMGCHAIN_CONS_RECLAIM=background: a detached process frees the merged full's
#    superseded records after the run, lock-free, to the same allocation as an inline
#    merge; killed before it punched (test hook), the next run frees the space;
#  - a second merge into a full merged before: the ranges it punches (planned while it
#    writes) free what a scan of the whole file frees, and no record still used;
#  - merge.sh and corrupt.sh run again with their chains there, and on XFS also
#    c11-kill-consolidate.sh (killed at the steps of the copy and some after it).
source "${top_srcdir:-.}/tests/consolidate/cons-lib.sh"
requires_root
requires_test_hooks
requires losetup mount umount filefrag mkfs.xfs truncate

# mount_fs TYPE: a 1 GiB sparse file system of TYPE at $TESTDIR/TYPE; sets MNT
mount_fs()
{
	local type=$1 img=$TESTDIR/$1.img loop
	MNT=$TESTDIR/$type
	truncate -s 1G "$img"
	case $type in
	xfs) mkfs.xfs -q -m reflink=1 "$img" || fail "mkfs.xfs -m reflink=1 failed" ;;
	btrfs) mkfs.btrfs -q "$img" >/dev/null || fail "mkfs.btrfs failed" ;;
	esac
	loop=$(losetup -f --show "$img") || skip "no loop device"
	cleanup_fn losetup -d "$loop"
	mkdir "$MNT"
	mount "$loop" "$MNT" || skip "cannot mount $type"
	cleanup_fn umount_fs "$MNT"
}
umount_fs() { umount "$1" 2>/dev/null || umount -l "$1"; }

avail()
{
	local a s
	sync -f "$1"
	read -r a s < <(stat -f -c '%a %S' "$1")
	echo $((a * s))
}

# shared_bytes FILE: bytes of FILE's extents that FIEMAP flags "shared"
shared_bytes()
{
	filefrag -v "$1" | python3 -c '
import re, sys
bs, n = 4096, 0
for line in sys.stdin:
    m = re.search(r"blocks of (\d+) bytes", line)
    if m:
        bs = int(m.group(1))
    m = re.match(r"\s*\d+:\s*\d+\.\.\s*\d+:\s*\d+\.\.\s*\d+:\s*(\d+):(.*)", line)
    if m and "shared" in m.group(2):
        n += int(m.group(1))
print(n * bs)'
}

# data_bytes FILE: bytes of FILE's data (SEEK_DATA/SEEK_HOLE up to its size: blocks that
# XFS preallocated past the end, trimmed when it sees fit, do not count)
data_bytes()
{
	python3 -c '
import os, sys
fd, n, off = os.open(sys.argv[1], os.O_RDONLY), 0, 0
size = os.fstat(fd).st_size
while off < size:
    try:
        off = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    end = os.lseek(fd, off, os.SEEK_HOLE)
    n, off = n + end - off, end
print(n)' "$1"
}

# stalled_merge ARGS...: run a keyless merge stopped at its commit point (test hook); sets
# PID once it stalled
stalled_merge()
{
	local i
	mv "$CHAIN/imgchain.key" "$TESTDIR/key.away"
	env -u IMGCHAIN_PASSPHRASE IMGCHAIN_TEST_STALL_AT=commit PATH=$HOOKS_PATH \
		imgconsolidate -q "$@" "$CHAIN" >/dev/null 2>"$TESTDIR/stall.err" </dev/null &
	PID=$!
	cleanup_fn kill_quiet "$PID" KILL
	# (generous: on a loaded machine a btrfs loop mount took over 60 s once)
	for ((i = 0; i < 3000; i++)); do
		grep -q "stalled at commit" "$TESTDIR/stall.err" && break
		kill -0 $PID 2>/dev/null || fail "merge ended before its commit: $(cat "$TESTDIR/stall.err")"
		sleep 0.1
	done
	grep -q "stalled at commit" "$TESTDIR/stall.err" || fail "merge did not reach its commit in 300 s"
}

# merge_twice TYPE DISK: a merge into a full that holds the holes of an earlier merge.
# The ranges an in-place merge punches are planned while it writes (everything between
# two records it keeps that lost a record, no probing): they must free as much as a scan
# of the whole file (the next run's, after a background reclaim killed before it
# punched), and nothing a record still uses (restore, imgverify --data).
merge_twice()
{
	local type=$1 disk=$2 i k want got
	CHAIN=$MNT/twice
	imgbackup -q -n t0 "$CHAIN" "$disk"
	for i in 1 2 3 4 5; do
		for k in 0 1 2 3 4 5 6 7; do
			write_at "$disk" $(( ($(cksum <<<"t$i-$k" | cut -d' ' -f1) % 32000) * 1024 )) $((i * 24576)) "t$i-$k"
		done
		imgbackup -q -n "t$i" "$CHAIN" "$disk"
		((i != 2)) || keyless_expect 0 --merge t0..t2 "$CHAIN"
	done
	cp "$disk" "$TESTDIR/wantt5"
	cp -a --reflink=always "$CHAIN" "$MNT/twice-scan"
	keyless_expect 0 --merge t2..t5 "$CHAIN"
	expect_out "copied 0 B "
	want=$(data_bytes "$CHAIN/00000006.img")
	[[ ! -e $CHAIN/journal ]] || fail "$type: journal left by the second merge: $(cat "$CHAIN/journal")"
	restore_cmp "$CHAIN" t5 "$TESTDIR/wantt5"
	imgverify -q --data "$CHAIN" || fail "$type: imgverify --data failed after a second merge into the full"
	CHAIN=$MNT/twice-scan
	IMGCHAIN_CONS_RECLAIM=background IMGCHAIN_TEST_CRASH_AT=reclaim PATH=$HOOKS_PATH \
		keyless_expect 0 --merge t2..t5 "$CHAIN"
	sleep 1
	keyless_expect 0 --keep-last 100 "$CHAIN"
	got=$(data_bytes "$CHAIN/00000006.img")
	((got == want)) || fail "$type: a second merge into the full left $want bytes of data, a scan of the whole file $got"
	echo "$type: a second merge into a merged full freed what a scan of the file frees ($want bytes of data left)"
	rm -rf "$MNT/twice" "$MNT/twice-scan"
}

run_fs()
{
	local type=$1 disk k i a0 a1 merged sh want
	mount_fs "$type"
	CHAIN=$MNT/chain
	disk=$TESTDIR/disk
	# 32 MiB of random blocks (64 KiB), six incrementals of eight 256 KiB writes each
	unset BLOCK
	mkrandom "$disk" 32 base
	imgbackup -q -n p00 "$CHAIN" "$disk"
	for i in 01 02 03 04 05 06; do
		for k in 0 1 2 3 4 5 6 7; do
			write_at "$disk" $(( ($(cksum <<<"$i-$k" | cut -d' ' -f1) % 32000) * 1024 )) 262144 "$i-$k"
		done
		imgbackup -q -n "p$i" "$CHAIN" "$disk"
		cp "$disk" "$TESTDIR/want$i"
	done
	mkdir "$MNT/keep"
	cp --reflink=always "$CHAIN"/0000000[2-7].img "$MNT/keep/" ||
		fail "$type: cp --reflink=always failed: no reflink on this file system"
	merged=$(du -cB1 "$CHAIN"/0000000[2-4].img | tail -1 | cut -f1)

	# into the full, stopped at the commit point: the space taken is metadata
	a0=$(avail "$MNT")
	stalled_merge --merge p00..p03
	a1=$(avail "$MNT")
	kill -9 $PID
	{ wait $PID; } 2>/dev/null || true
	mv "$TESTDIR/key.away" "$CHAIN/imgchain.key"
	echo "$type: merging $merged bytes of incrementals took $((a0 - a1)) bytes of free space"
	((a0 - a1 < 1048576)) || fail "$type: the merge took $((a0 - a1)) bytes of free space ($merged merged)"
	((merged > 4 * 1048576)) || fail "$type: only $merged bytes merged: the test proves nothing"
	keyless_expect 0 --keep-last 100 "$CHAIN"
	expect_out "an interrupted run was completed first"
	[[ $(point_names) == "p03 p04 p05 p06" ]] || fail "$type: points after the rerun: $(point_names)"
	sh=$(shared_bytes "$CHAIN/00000004.img")
	echo "$type: merged full: $sh bytes in shared extents"
	((sh * 10 >= merged * 8)) || fail "$type: only $sh bytes of the merged full are shared ($merged merged)"

	# into an incremental (a new file based on p03): nothing copied, all shared
	keyless_expect 0 --merge p04..p06 "$CHAIN"
	expect_out "copied 0 B "
	expect_out "shared [0-9.]+ [KM]iB of records"
	want=$(summary_bytes shared)
	sh=$(shared_bytes "$CHAIN/00000007.img")
	((sh >= want)) || fail "$type: $sh bytes of p06's file are shared, the merge shared $want"
	for i in 03 06; do
		restore_cmp "$CHAIN" "p$i" "$TESTDIR/want$i"
	done
	imgverify -q --data "$CHAIN" || fail "$type: imgverify --data failed"

	# damage under a merge: --verify reads the shared records, otherwise the index's
	# checksum still tells
	write_at "$disk" 5000000 100000 d7
	imgbackup -q -n p07 "$CHAIN" "$disk"
	write_at "$disk" 9000000 100000 d8
	imgbackup -q -n p08 "$CHAIN" "$disk"
	read -r off len pos < <(image_record_offset "$CHAIN/00000008.img" 0)
	flip_bit "$CHAIN/00000008.img" $((off + len / 2)) 3
	before=$(sha_tree "$CHAIN")
	keyless_expect 4 --verify --merge p07..p08 "$CHAIN"
	expect_msg "block $pos: record checksum mismatch"
	[[ $(sha_tree "$CHAIN") == "$before" ]] || fail "$type: a merge stopped by --verify changed the chain"
	keyless_expect 0 --merge p07..p08 "$CHAIN"
	expect_exit 4 imgverify "$CHAIN"
	expect_msg "block $pos"
	rm -rf "$CHAIN" "$MNT/keep"

	# IMGCHAIN_CONS_RECLAIM=background: the run returns before the full's superseded
	# records are punched; a detached process frees them, without the writers' lock (a
	# backup right after succeeds), down to what the same merge leaves when it punches
	# itself; the journal's punch line stays for the next run, which frees the space
	# itself when the detached process died first (test hook "reclaim"; that copy of
	# the chain first: the backup after the other one is remembered for the chain)
	CHAIN=$MNT/bg
	imgbackup -q -n b0 "$CHAIN" "$disk"
	for i in 1 2 3; do
		for k in 0 1 2 3 4 5 6 7; do
			write_at "$disk" $(( ($(cksum <<<"b$i-$k" | cut -d' ' -f1) % 32000) * 1024 )) 65536 "b$i-$k"
		done
		imgbackup -q -n "b$i" "$CHAIN" "$disk"
	done
	cp "$disk" "$TESTDIR/wantb3"
	cp -a --reflink=always "$CHAIN" "$MNT/inline"
	cp -a --reflink=always "$CHAIN" "$MNT/crashed"
	CHAIN=$MNT/inline
	keyless_expect 0 --merge b0..b3 "$CHAIN"
	want=$(data_bytes "$CHAIN/00000004.img")
	[[ ! -e $CHAIN/journal ]] || fail "$type: journal left by a merge that punched itself"
	CHAIN=$MNT/crashed
	IMGCHAIN_CONS_RECLAIM=background IMGCHAIN_TEST_CRASH_AT=reclaim PATH=$HOOKS_PATH \
		keyless_expect 0 --merge b0..b3 "$CHAIN"
	sleep 1
	got=$(data_bytes "$CHAIN/00000004.img")
	((got > want)) || fail "$type: the reclaim killed before it punched freed the space ($got bytes of data)"
	grep -qx "punch 4" "$CHAIN/journal" || fail "$type: no punch line in the journal after the killed reclaim"
	keyless_expect 0 --keep-last 100 "$CHAIN"
	got=$(data_bytes "$CHAIN/00000004.img")
	((got == want)) || fail "$type: after the killed reclaim the next run left $got bytes of data, not $want"
	[[ ! -e $CHAIN/journal ]] || fail "$type: journal left after the killed reclaim's next run"
	restore_cmp "$CHAIN" b3 "$TESTDIR/wantb3"
	echo "$type: a background reclaim killed before it punched: the next run freed the space"
	CHAIN=$MNT/bg
	IMGCHAIN_CONS_RECLAIM=background keyless_expect 0 --merge b0..b3 "$CHAIN"
	grep -q "freed in the background" "$TESTDIR/last.err" || fail "$type: no background reclaim: $LAST_ERR"
	grep -qx "punch 4" "$CHAIN/journal" || fail "$type: no punch line in the journal: $(cat "$CHAIN/journal")"
	imgbackup -q -n b4 "$CHAIN" "$disk" || fail "$type: a backup right after a background-reclaim merge failed"
	for ((i = 0; i < 1200; i++)); do
		(($(data_bytes "$CHAIN/00000004.img") > want)) || break
		sleep 0.1
	done
	got=$(data_bytes "$CHAIN/00000004.img")
	((got == want)) || fail "$type: the background reclaim left $got bytes of data in the full, the inline one $want"
	echo "$type: background reclaim: the merged full holds $got bytes of data, as after an inline one"
	restore_cmp "$CHAIN" b3 "$TESTDIR/wantb3"
	imgverify -q --data "$CHAIN" || fail "$type: imgverify --data failed after a background reclaim"
	keyless_expect 0 --keep-last 100 "$CHAIN"
	[[ ! -e $CHAIN/journal ]] || fail "$type: journal left after the run that followed: $(cat "$CHAIN/journal")"
	rm -rf "$MNT/bg" "$MNT/inline" "$MNT/crashed"
	merge_twice "$type" "$disk"

	# the consolidation tests, their chains on this file system
	# (c11 killed at the steps around the copies and a few after: the clones are what
	# differs here)
	for t in consolidate/merge consolidate/corrupt ${2:-}; do
		STEPS="prepare:1 copy:1 copy:3 written:1 commit:1 switch:1 punch:1 done:1" TMPDIR=$MNT bash "$top_srcdir/tests/$t.sh" >"$TESTDIR/sub.log" 2>&1 ||
			{ tail -n 30 "$TESTDIR/sub.log" >&2; fail "$type: tests/$t.sh failed"; }
		echo "$type: tests/$t.sh passed"
	done
}

run_fs xfs adversarial/c11-kill-consolidate
if command -v mkfs.btrfs >/dev/null && grep -qw btrfs /proc/filesystems; then
	run_fs btrfs
else
	echo "btrfs: not tested (no mkfs.btrfs or no btrfs in this kernel)"
fi
