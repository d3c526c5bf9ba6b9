#!/usr/bin/env bash
# Live promote (imgpromote): time to converge against `cp` of the disk, and what the
# write-blocking mirror costs a guest's writes.  A chain of one point (SIZE_MIB of random
# data) is mounted with an overlay; DEST is a file on the same file system.
#   1. cp:      `cp` of the mounted disk.raw to a file, then sync (the baseline copy);
#   2. idle:    imgpromote with no writer (a fresh overlay): time until the switch;
#   3. before:  (a fresh overlay) fio 4 KiB random writes to disk.raw (psync, one job,
#               fsync every 64) for SECONDS_RUN: IOPS, mean and p99 completion latency;
#   4. during:  the same fio while imgpromote copies that disk (its overlay now holds
#               fio's writes): fio's figures over the copy, the promote's time under load;
#   5. after:   the same fio once switched (disk.raw passes through to DEST);
#   6. rated:   again from a fresh overlay, fio during a promote with --rate RATE (the
#               knob that trades convergence time for guest latency).
#
#   scripts/bench/bench_promote.sh [BENCH_DIR]   (default /var/tmp/imgchain-bench-promote)
# Env: SIZE_MIB (default 1024), SECONDS_RUN (default 10), RATE (default 64M), BUILD (./build)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-/var/tmp/imgchain-bench-promote}
size=${SIZE_MIB:-1024}
secs=${SECONDS_RUN:-10}
build=${BUILD:-$top/build}
rate=${RATE:-64M}
export IMGCHAIN_PASSPHRASE=bench IMGCHAIN_STATE_DIR="$dir/state"
unset IMGCHAIN_PASSPHRASE_FILE
command -v fio >/dev/null || { echo "bench_promote: fio is needed" >&2; exit 1; }
mkdir -p "$dir"
rm -rf "$dir/chain" "$dir/ov" "$dir/mnt" "$dir"/dest* "$dir/cp.img"
mkdir -p "$dir/mnt"
head -c $((size * 1048576)) /dev/urandom >"$dir/disk.raw"
"$build/imgbackup" -q --name p1 "$dir/chain" "$dir/disk.raw"

mpid=
mount_it() {
	"$build/imgmount" -f --overlay "$dir/ov" "$dir/chain" "$dir/mnt" 2>"$dir/mount.log" &
	mpid=$!
	for _ in $(seq 200); do mountpoint -q "$dir/mnt" && return 0; sleep 0.05; done
	echo "mount failed: $(cat "$dir/mount.log")" >&2
	exit 1
}
umount_it() { fusermount3 -u "$dir/mnt"; wait "$mpid" || true; }
trap 'fusermount3 -u "$dir/mnt" 2>/dev/null || true' EXIT
now() { date +%s.%N; }
# fio_run SECONDS OUT: "IOPS mean_us p99_us" of SECONDS of 4 KiB random writes
fio_run() {
	fio --name=w --filename="$dir/mnt/p1/disk.raw" --rw=randwrite --bs=4k --ioengine=psync \
		--fsync=64 --time_based --runtime="$1" --size=$((size * 1048576)) \
		--output-format=json >"$2.json"
	python3 - "$2.json" >"$2" <<'PY'
import json, sys
w = json.load(open(sys.argv[1]))["jobs"][0]["write"]
c = w["clat_ns"]
print("%.0f %.0f %.0f" % (w["iops"], c["mean"] / 1000, c["percentile"]["99.000000"] / 1000))
PY
}

# 1. cp
mount_it
sync
t0=$(now)
cp "$dir/mnt/p1/disk.raw" "$dir/cp.img"
sync
t_cp=$(echo "$(now) - $t0" | bc)
rm -f "$dir/cp.img"
# 2. idle
t0=$(now)
"$build/imgpromote" -q "$dir/mnt" p1 "$dir/dest-idle.img"
t_idle=$(echo "$(now) - $t0" | bc)
umount_it
rm -rf "$dir/ov" "$dir/dest-idle.img"
# 3. before, on a fresh overlay
mount_it
fio_run "$secs" "$dir/before"
# 4. during
t0=$(now)
"$build/imgpromote" -q --no-wait "$dir/mnt" p1 "$dir/dest-load.img" >/dev/null
fio_run "$(printf '%.0f' "$(echo "$t_idle * 0.8 + 1" | bc)")" "$dir/during" &
fpid=$!
"$build/imgpromote" -q "$dir/mnt" p1 "$dir/dest-load.img"
t_load=$(echo "$(now) - $t0" | bc)
wait "$fpid"
# 5. after the switch
fio_run "$secs" "$dir/after"
umount_it
rm -rf "$dir/ov" "$dir"/dest-*.img
# 6. rated
mount_it
t0=$(now)
"$build/imgpromote" -q --no-wait --rate "$rate" "$dir/mnt" p1 "$dir/dest-rated.img" >/dev/null
fio_run "$secs" "$dir/rated"
"$build/imgpromote" -q "$dir/mnt" p1 "$dir/dest-rated.img"
t_rated=$(echo "$(now) - $t0" | bc)
umount_it
rm -rf "$dir/ov" "$dir"/dest-*.img

read -r b_iops b_mean b_p99 <"$dir/before"
read -r d_iops d_mean d_p99 <"$dir/during"
read -r a_iops a_mean a_p99 <"$dir/after"
read -r r_iops r_mean r_p99 <"$dir/rated"
printf 'disk %d MiB (random data), DEST a file on the same file system\n' "$size"
printf 'cp of the mounted disk.raw + sync:   %6.2f s\n' "$t_cp"
printf 'promote, no writer (to the switch):  %6.2f s  (%.2fx cp)\n' "$t_idle" "$(echo "$t_idle / $t_cp" | bc -l)"
printf 'promote, fio writing meanwhile:      %6.2f s  (%.2fx cp)\n' "$t_load" "$(echo "$t_load / $t_cp" | bc -l)"
printf 'promote --rate %s, fio meanwhile:   %6.2f s  (%.2fx cp)\n' "$rate" "$t_rated" "$(echo "$t_rated / $t_cp" | bc -l)"
printf '4 KiB random writes (psync, fsync every 64): IOPS, mean and p99 latency (us)\n'
printf '  before the promote (overlay):  %6d  %8d  %8d\n' "$b_iops" "$b_mean" "$b_p99"
printf '  during the copy (mirrored):    %6d  %8d  %8d\n' "$d_iops" "$d_mean" "$d_p99"
printf '  after the switch (DEST):       %6d  %8d  %8d\n' "$a_iops" "$a_mean" "$a_p99"
printf '  during a --rate %s copy:      %6d  %8d  %8d\n' "$rate" "$r_iops" "$r_mean" "$r_p99"
