#!/usr/bin/env bash
# imgbackup --from-overlay while a guest-like writer runs, and what the cut lock costs the
# mount's write path.  A chain of one point (SIZE_MIB of random data) is mounted with an
# overlay; fio writes 4 KiB random blocks to disk.raw (psync, fsync every 64) for SECONDS.
#   1. write IOPS with this build's imgmount, and with BASE_BUILD's (a build without the cut
#      lock, e.g. main before it) when given: runs interleaved, RUNS each, medians;
#   2. during a run of this build: imgbackup --from-overlay, its time and how long the
#      writes were held (its "writes held" figure), and the IOPS of that run.
#
#   scripts/bench/bench_overlay_cut.sh [BENCH_DIR]   (default /var/tmp/imgchain-bench-cut)
# Env: RUNS (default 3), SECONDS_RUN (default 20), SIZE_MIB (default 1024), BUILD (./build),
#      BASE_BUILD (none)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
source "$top/scripts/bench/bench_lib.sh"
dir=${1:-/var/tmp/imgchain-bench-cut}
runs=${RUNS:-3}
secs=${SECONDS_RUN:-20}
size=${SIZE_MIB:-1024}
build=${BUILD:-$top/build}
base=${BASE_BUILD:-}
export IMGCHAIN_PASSPHRASE=bench IMGCHAIN_STATE_DIR="$dir/state"
unset IMGCHAIN_PASSPHRASE_FILE
mkdir -p "$dir"
rm -rf "$dir/chain" "$dir/ov" "$dir/mnt"
mkdir -p "$dir/mnt"
head -c $((size * 1048576)) /dev/urandom >"$dir/disk.raw"
"$build/imgbackup" -q --name p1 "$dir/chain" "$dir/disk.raw"

median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
mount_with() {
	rm -rf "$dir/ov"
	bench_mount "$1/imgmount" "$dir" --overlay "$dir/ov" "$dir/chain" "$dir/mnt"
}
umount_it() { fusermount3 -u "$dir/mnt"; wait "$mpid" || true; }
# fio_run: IOPS of SECONDS of 4 KiB random writes
fio_run() {
	fio --name=w --filename="$dir/mnt/p1/disk.raw" --rw=randwrite --bs=4k --ioengine=psync \
		--fsync=64 --time_based --runtime="$secs" --size=$((size * 1048576)) \
		--output-format=terse --terse-version=3 | awk -F';' '{print $49}'
}

mine=() other=() cut_iops=() cut_s=() held=()
for r in $(seq "$runs"); do
	mount_with "$build"; mine+=("$(fio_run)"); umount_it
	if [ -n "$base" ]; then mount_with "$base"; other+=("$(fio_run)"); umount_it; fi
	mount_with "$build"
	fio_run >"$dir/fio.iops" &
	fpid=$!
	sleep $((secs / 2))
	s=$(date +%s.%N)
	"$build/imgbackup" --from-overlay "$dir/ov/p1" --name "cut$r" "$dir/chain" >"$dir/cut.out"
	e=$(date +%s.%N)
	wait $fpid
	umount_it
	cut_iops+=("$(cat "$dir/fio.iops")")
	cut_s+=("$(echo "$e - $s" | bc -l)")
	held+=("$(sed -n 's/.*writes held \([0-9.]*\) s.*/\1/p' "$dir/cut.out")")
done
echo
echo "overlay cut benchmark: ${size} MiB disk, 4 KiB random writes (psync, fsync every 64) for ${secs} s, nproc $(nproc), median of $runs"
printf '%-52s %10s\n' "run" "median"
printf '%-52s %10s\n' "write IOPS, this build" "$(printf '%s\n' "${mine[@]}" | median)"
[ -n "$base" ] && printf '%-52s %10s\n' "write IOPS, BASE_BUILD" "$(printf '%s\n' "${other[@]}" | median)"
printf '%-52s %10s\n' "write IOPS, this build, a cut taken mid-run" "$(printf '%s\n' "${cut_iops[@]}" | median)"
printf '%-52s %10s\n' "imgbackup --from-overlay, seconds" "$(printf '%s\n' "${cut_s[@]}" | median)"
printf '%-52s %10s\n' "writes held by the cut, seconds" "$(printf '%s\n' "${held[@]}" | median)"
cat "$dir/cut.out"
echo "all runs: this ${mine[*]}; base ${other[*]:-}; with cut ${cut_iops[*]}; cut s ${cut_s[*]}; held ${held[*]}"
