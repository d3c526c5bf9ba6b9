#!/usr/bin/env bash
# Merging under a writable overlay (FORMAT.md 10.8): what the re-base costs a guest.  A
# chain of a full (SIZE_MIB of random data) and five incrementals (about 1% of the 64 KiB
# blocks each) is mounted with an overlay; fio writes 4 KiB random blocks to p3's disk.raw
# (psync, fsync every 64) for SECONDS_RUN seconds:
#   1. alone: write IOPS, 99th percentile and largest completion latency;
#   2. with `imgconsolidate --merge p0..p3` started mid-run (p3 rewritten into the full's
#      file, the run waits for the mount's re-base): the same figures, the merge's time,
#      and the mount's own figures (new view built in, guest requests held for).
#
#   scripts/bench/bench_rebase.sh [BENCH_DIR]   (default /var/tmp/imgchain-bench-rebase)
# Env: SECONDS_RUN (default 20), SIZE_MIB (default 1024), BUILD (./build)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/scripts/bench/bench_lib.sh"
dir=${1:-/var/tmp/imgchain-bench-rebase}
secs=${SECONDS_RUN:-20}
size=${SIZE_MIB:-1024}
build=${BUILD:-$top/build}
export IMGCHAIN_PASSPHRASE=bench IMGCHAIN_STATE_DIR="$dir/state"
unset IMGCHAIN_PASSPHRASE_FILE
mkdir -p "$dir"
mpid=
umount_it() { fusermount3 -u "$dir/mnt" 2>/dev/null || true; [ -z "$mpid" ] || wait "$mpid" || true; mpid=; }
trap umount_it EXIT

make_chain() {
	rm -rf "$dir/chain" "$dir/ov" "$dir/state"
	head -c $((size * 1048576)) /dev/urandom >"$dir/disk.raw"
	"$build/imgbackup" -q --name p0 "$dir/chain" "$dir/disk.raw"
	for i in 1 2 3 4 5; do
		python3 - "$dir/disk.raw" "$i" <<'PY'
import os, random, sys
fd = os.open(sys.argv[1], os.O_RDWR)
n = os.fstat(fd).st_size // 65536
r = random.Random(int(sys.argv[2]))
for b in r.sample(range(n), max(1, n // 100)):
    os.pwrite(fd, r.randbytes(65536), b * 65536)
PY
		"$build/imgbackup" -q --name "p$i" "$dir/chain" "$dir/disk.raw"
	done
}
mount_it() {
	mkdir -p "$dir/mnt"
	bench_mount "$build/imgmount" "$dir" --overlay "$dir/ov" "$dir/chain" "$dir/mnt"
}
# fio_run OUT: SECONDS_RUN of 4 KiB random writes to p3's disk.raw, JSON to OUT
fio_run() {
	fio --name=w --filename="$dir/mnt/p3/disk.raw" --rw=randwrite --bs=4k --ioengine=psync \
		--fsync=64 --time_based --runtime="$secs" --size=$((size * 1048576)) \
		--output-format=json >"$1"
}
figures() {
	python3 - "$1" <<'PY'
import json, sys
w = json.load(open(sys.argv[1]))["jobs"][0]["write"]
c = w["clat_ns"]
print("%.0f %.2f %.2f" % (w["iops"], c["percentile"]["99.000000"] / 1e6, c["max"] / 1e6))
PY
}

make_chain
mount_it
fio_run "$dir/alone.json"
umount_it
make_chain
mount_it
fio_run "$dir/merge.json" &
fpid=$!
sleep $((secs / 2))
s=$(date +%s.%N)
"$build/imgconsolidate" --merge p0..p3 "$dir/chain" >"$dir/cons.out" 2>&1
e=$(date +%s.%N)
wait $fpid
umount_it
read -r a_iops a_p99 a_max < <(figures "$dir/alone.json")
read -r m_iops m_p99 m_max < <(figures "$dir/merge.json")
echo
echo "re-base benchmark: ${size} MiB disk, 5 incrementals of ~1%, 4 KiB random writes (psync, fsync every 64) for ${secs} s, nproc $(nproc)"
printf '%-48s %10s %12s %12s\n' "run" "write IOPS" "p99 clat ms" "max clat ms"
printf '%-48s %10s %12s %12s\n' "alone" "$a_iops" "$a_p99" "$a_max"
printf '%-48s %10s %12s %12s\n' "imgconsolidate --merge p0..p3 mid-run" "$m_iops" "$m_p99" "$m_max"
printf '%-48s %10.2f\n' "imgconsolidate --merge p0..p3, seconds" "$(echo "$e - $s" | bc -l)"
grep -o "re-based onto.*" "$dir/mount.log" || echo "(no re-base logged)"
grep "re-based onto the merged image" "$dir/cons.out" || true
