#!/usr/bin/env bash
# Does a merge on XFS (reflink) take time by metadata or by bytes?  (issue 17)
# For each disk size: a synthetic disk of random 64 KiB blocks, a full and 7 incrementals
# each rewriting 1% of the blocks at random, on an XFS made with -m reflink=1 on a sparse
# file, loop-mounted with direct I/O; then one keyless merge of the 7 into the full, timed,
# against `cp --reflink=never` + fsync of as many bytes as the merge shared, and the peak
# of free space used (statfs every 10 ms).  (scripts/bench/bench_consolidate.sh FS=xfs
# does the same on mkdisk's realistic disks, with qemu-img commit; its disk generator
# could not make disks above 2 GiB on 2026-12-03: mutations left ext4 unclean.)
#
#   scripts/bench/bench_reflink_scale.sh [BENCH_DIR]   (as root; default /var/tmp/imgchain-scale)
# Env: SIZES_MIB (default "2048 8192"), BUILD (default ./build)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-/var/tmp/imgchain-scale}
build=${BUILD:-$top/build}
export PATH="$build:$PATH" IMGCHAIN_PASSPHRASE=bench IMGCHAIN_KDF=interactive
export IMGCHAIN_STATE_DIR="$dir/state"
unset IMGCHAIN_PASSPHRASE_FILE
mkdir -p "$dir"
mnt="$dir/xfs"
loop=
cleanup() {
	[ -z "$loop" ] || { umount "$mnt" 2>/dev/null; losetup -d "$loop"; }
	rm -f "$dir/xfs.img"
}
trap cleanup EXIT
avail() { stat -f -c '%a %S' "$1" | awk '{printf "%.0f\n", $1 * $2}'; }
now() { date +%s.%N; }

for size in ${SIZES_MIB:-2048 8192}; do
	truncate -s $((size * 3 + 4096))M "$dir/xfs.img"
	mkfs.xfs -q -f -m reflink=1 "$dir/xfs.img"
	loop=$(losetup -f --show --direct-io=on "$dir/xfs.img")
	mkdir -p "$mnt"
	mount "$loop" "$mnt"
	w=$mnt/w
	mkdir "$w"
	python3 - "$w/d" "$size" <<'EOF'
import random, sys
r = random.Random(1)
with open(sys.argv[1], "wb") as f:
    for _ in range(int(sys.argv[2])):
        f.write(r.randbytes(1 << 20))
EOF
	imgbackup -q -n p0 "$w/chain" "$w/d"
	for i in 1 2 3 4 5 6 7; do
		python3 - "$w/d" "$size" "$i" <<'EOF'
import random, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
nb = size * 16
with open(path, "r+b") as f:
    for _ in range(nb // 100):
        f.seek(r.randrange(nb) * 65536)
        f.write(r.randbytes(65536))
EOF
		imgbackup -q -n "p$i" "$w/chain" "$w/d"
	done
	rm -f "$w/d"
	mv "$w/chain/imgchain.key" "$w/key"
	cat "$w"/chain/*.img >/dev/null
	sync -f "$w/chain"
	a0=$(avail "$mnt")
	(while :; do avail "$mnt"; sleep 0.01; done) >"$w/free.log" &
	sampler=$!
	s=$(now)
	imgconsolidate --merge p0..p7 "$w/chain" >"$w/summary.txt"
	e=$(now)
	sync -f "$w/chain"
	avail "$mnt" >>"$w/free.log"
	kill "$sampler"
	wait "$sampler" 2>/dev/null || true
	peak=$((a0 - $(sort -n "$w/free.log" | head -1)))
	shared=$(sed -n 's/^  shared \([0-9.]*\) \([KMG]i\)B.*/\1 \2/p' "$w/summary.txt")
	bytes=$(echo "$shared" | awk '{m = $2 == "Ki" ? 1024 : $2 == "Mi" ? 1048576 : 1073741824; printf "%.0f\n", $1 * m}')
	head -c "$bytes" "$w/chain/00000008.img" >"$w/cpsrc"
	cat "$w/cpsrc" >/dev/null
	sync -f "$w/cpsrc"
	cs=$(now)
	cp --reflink=never "$w/cpsrc" "$w/cpdst"
	sync "$w/cpdst"
	ce=$(now)
	printf '%6s MiB disk: merge %.3f s (%s), cp --reflink=never of %s B + fsync %.3f s, peak free space used %.1f MiB\n' \
		"$size" "$(echo "$e - $s" | bc -l)" "$(sed -n 's/^  time: //p' "$w/summary.txt")" "$shared" \
		"$(echo "$ce - $cs" | bc -l)" "$(echo "$peak / 1048576" | bc -l)"
	sed -n 's/^  copied/    copied/p' "$w/summary.txt"
	umount "$mnt"
	losetup -d "$loop"
	loop=
	rm -f "$dir/xfs.img"
done
