#!/bin/bash
# enospc.sh: a merge into the full on a small file system (tmpfs with size=) that runs out
# of space at various points: a clear error, every point still restores byte-identical and
# the images are unchanged; with space freed, a rerun completes.
source "${top_srcdir:-.}/tests/consolidate/cons-lib.sh"
requires_root
requires fallocate df
mkdir "$TESTDIR/fs"
mount -t tmpfs -o size=14m tmpfs "$TESTDIR/fs" 2>/dev/null || skip "cannot mount a tmpfs"
cleanup_fn umount -l "$TESTDIR/fs"
CHAIN=$TESTDIR/fs/chain
make_small_chain
cp -a "$CHAIN" "$TESTDIR/orig"
ALL="br p00 p01 p02 p03 p04 p05 p06 p07 p08 p09 p10"

imgs_sha() { (cd "$1" && sha256sum ./*.img); }

full=0
for free_kib in 0 8 40 200 400 700 1000 1400; do
	rm -rf "$CHAIN"
	cp -a "$TESTDIR/orig" "$CHAIN"
	avail=$(df --output=avail -B1024 "$TESTDIR/fs" | tail -1)
	if ((avail > free_kib)); then
		fallocate -l $(((avail - free_kib) * 1024)) "$TESTDIR/fs/filler"
	fi
	keyless --merge p00..p05 "$CHAIN"
	rm -f "$TESTDIR/fs/filler"
	if [[ $RC -eq 0 ]]; then
		[[ $(point_names) == "br p05 p06 p07 p08 p09 p10" ]] || fail "points: $(point_names)"
		check_points br p05 p06 p07 p08 p09 p10
		continue
	fi
	full=$((full + 1))
	[[ $RC -eq 1 ]] || fail "$free_kib KiB free: exit $RC: $LAST_ERR"
	grep -q "No space left on device" "$TESTDIR/last.err" ||
		fail "$free_kib KiB free: unclear error: $LAST_ERR"
	[[ "$(imgs_sha "$CHAIN")" == "$(imgs_sha "$TESTDIR/orig")" ]] ||
		fail "$free_kib KiB free: the images changed"
	no_tmp_files "$CHAIN"
	check_points $ALL
	keyless_expect 0 --merge p00..p05 "$CHAIN"
	[[ $(point_names) == "br p05 p06 p07 p08 p09 p10" ]] || fail "points: $(point_names)"
	check_points br p05 p06 p07 p08 p09 p10
done
echo "$full runs stopped by ENOSPC"
((full >= 3)) || fail "only $full runs met ENOSPC"
