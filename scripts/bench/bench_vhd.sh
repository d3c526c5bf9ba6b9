#!/usr/bin/env bash
# Benchmark of the VHD and VHDX views (issue 12 section 2), on one realistic disk
# (tests/lib/mkdisk.sh, SIZE_MIB, default 1024) backed up once:
#   (a) sequential read (dd bs=1M) of disk.raw, disk.vhd and disk.vhdx, each on a fresh mount
#       (imgmount's block cache and the FUSE page cache start empty; the chain files stay in the
#       host's page cache: the figure is the view's read path, not the host disk), RUNS runs
#       interleaved, medians;
#   (b) what a plain `cp` of disk.vhdx moves against `qemu-img convert -O vhdx` of the source
#       (qemu's default block size) and against the source's non-zero MiB blocks;
#   (c) the time of the first `stat` of disk.vhdx (it builds the point's map and the layout).
#   scripts/bench/bench_vhd.sh [BENCH_DIR]     (default /var/tmp/imgchain-bench)
# Env: RUNS (3), SIZE_MIB (1024), BUILD (./build)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-/var/tmp/imgchain-bench}/vhd
runs=${RUNS:-3}
size=${SIZE_MIB:-1024}
export PATH="${BUILD:-$top/build}:$PATH"
export IMGCHAIN_PASSPHRASE=bench IMGCHAIN_STATE_DIR=$dir/state LC_ALL=C
unset IMGCHAIN_PASSPHRASE_FILE IMGCHAIN_KDF
source "$top/tests/lib/mkdisk.sh"
for t in imgbackup imgmount qemu-img fusermount3 mountpoint python3; do
	command -v "$t" >/dev/null || { echo "bench_vhd: missing tool: $t" >&2; exit 1; }
done
mkdir -p "$dir/mnt"
mnt=$dir/mnt
cleanup() { ! mountpoint -q "$mnt" || fusermount3 -u "$mnt"; }
trap cleanup EXIT
if [[ ! -s $dir/disk.raw || ! -d $dir/chain ]]; then
	rm -rf "$dir/chain" "$dir/state"
	mkdisk_create "$dir/disk.raw" "$size" >/dev/null
	imgbackup -q -n p "$dir/chain" "$dir/disk.raw"
fi
mount_fresh() {
	cleanup
	imgmount "$dir/chain" "$mnt"
	for _ in $(seq 200); do mountpoint -q "$mnt" && return; sleep 0.05; done
	echo "bench_vhd: mount failed" >&2; exit 1
}
now() { date +%s.%N; }
declare -A t
for ((r = 0; r < runs; r++)); do
	for f in disk.raw disk.vhd disk.vhdx; do
		mount_fresh
		s=$(now)
		dd if="$mnt/p/$f" of=/dev/null bs=1M status=none
		t[$f]+="$(python3 -c "print($(now) - $s)") "
	done
done
mount_fresh
s=$(now)
stat -c %s "$mnt/p/disk.vhdx" >/dev/null
first_stat=$(python3 -c "print(round(($(now) - $s) * 1000, 1))")
vhdx=$(stat -c %s "$mnt/p/disk.vhdx")
cleanup
qemu-img convert -f raw -O vhdx "$dir/disk.raw" "$dir/qemu.vhdx"
qemu=$(stat -c %s "$dir/qemu.vhdx")
data=$(python3 - "$dir/disk.raw" <<'PY'
import sys
n = 0
with open(sys.argv[1], "rb") as f:
    while (b := f.read(1 << 20)):
        n += any(b)
print(n << 20)
PY
)
disk=$(stat -c %s "$dir/disk.raw")
echo "disk: $((disk >> 20)) MiB, non-zero MiB blocks: $((data >> 20)) MiB; runs: $runs"
for f in disk.raw disk.vhd disk.vhdx; do
	python3 - "$f" "$disk" "$vhdx" ${t[$f]} <<'PY'
import statistics, sys
f, disk, vhdx = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
secs = [float(x) for x in sys.argv[4:]]
size = vhdx if f == "disk.vhdx" else disk
m = statistics.median(secs)
print("seq read %-10s %7.1f MiB/s of file (%.1f MiB/s of disk), median %.2f s of %s" %
      (f, size / m / 2**20, disk / m / 2**20, m, " ".join("%.2f" % s for s in secs)))
PY
done
echo "cp of disk.vhdx: $((vhdx >> 20)) MiB; qemu-img convert -O vhdx: $((qemu >> 20)) MiB" \
	"($(python3 -c "print(round($vhdx / $qemu, 3))")x); data + 4 MiB metadata: $(((data >> 20) + 4)) MiB"
echo "first stat of disk.vhdx (map + layout): $first_stat ms"
rm -f "$dir/qemu.vhdx"
