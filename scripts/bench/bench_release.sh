#!/usr/bin/env bash
# The overlay hand-over (FORMAT.md 10.7): how long an imgmount --take-over waits for its
# disk, by how much the owner had written without syncing (the release commits it).  A chain
# of one point (bench_lib's SIZE_MIB disk of real files); per run, mount A (its own mount namespace) writes
# DIRTY MiB of 1 MiB blocks to p1/disk.raw without fsync, then mount B (another namespace,
# same overlay directory, --take-over) opens p1/disk.raw for writing: the time of that open
# is the hand-over (request written, the owner's next poll (every 200 ms), its commit, the
# record, the lock).  DIRTY "free": A never opens p1 (no hand-over: the open's own cost,
# the view with the seal checked and the overlay made, is the baseline).  Medians of RUNS
# per DIRTY value; runs interleaved.
#
#   scripts/bench/bench_release.sh [BENCH_DIR]   (default /var/tmp/imgchain-bench-release)
# Env: RUNS (default 5), DIRTY (MiB values or free, default "free 0 16 256"), SIZE_MIB (default 512),
#      BUILD (./build).  Root (unshare -m).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-/var/tmp/imgchain-bench-release}
runs=${RUNS:-5}
dirties=${DIRTY:-"free 0 16 256"}
size=${SIZE_MIB:-512}
build=${BUILD:-$top/build}
source "$top/scripts/bench/bench_lib.sh"
export IMGCHAIN_PASSPHRASE=bench IMGCHAIN_STATE_DIR="$dir/state"
unset IMGCHAIN_PASSPHRASE_FILE
bench_disk "$dir" "$size"
rm -rf "$dir/chain" "$dir/ov"
mkdir -p "$dir/mnt"
"$build/imgbackup" -q --name p1 "$dir/chain" "$disk"

median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
ns_mount() { # NAME OPTIONS...: its pid in $npid
	local name=$1 pid
	shift
	unshare -m --propagation private "$build/imgmount" -f "$@" "$dir/chain" "$dir/mnt" \
		>/dev/null 2>"$dir/$name.log" </dev/null &
	pid=$!
	npid=$pid
	for _ in $(seq 400); do
		nsenter -t "$pid" -m mountpoint -q "$dir/mnt" && return 0
		sleep 0.05
	done
	echo "mount $name failed: $(cat "$dir/$name.log")" >&2
	exit 1
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

declare -A took=()
for r in $(seq "$runs"); do
	for d in $dirties; do
		rm -rf "$dir/ov"
		ns_mount a --overlay "$dir/ov"
		a=$npid
		ns_mount b --overlay "$dir/ov" --take-over --take-over-wait 600
		b=$npid
		[[ $d == free ]] || nsenter -t "$a" -m dd if=/dev/zero of="$dir/mnt/p1/disk.raw" bs=1M \
			count=1 conv=notrunc,fsync status=none
		[[ $d == free || $d == 0 ]] || nsenter -t "$a" -m dd if="$disk" of="$dir/mnt/p1/disk.raw" \
			bs=1M count="$d" seek=1 conv=notrunc status=none
		s=$(date +%s.%N)
		nsenter -t "$b" -m python3 -c 'import os, sys; os.close(os.open(sys.argv[1], os.O_RDWR))' \
			"$dir/mnt/p1/disk.raw"
		e=$(date +%s.%N)
		[[ $d == free ]] || grep -q "released by" "$dir/b.log" || { echo "no hand-over: $(cat "$dir/b.log")" >&2; exit 1; }
		took[$d]+="$(echo "$e - $s" | bc -l) "
		stop "$a"
		stop "$b"
	done
done
echo "hand-over (imgmount --take-over, open for writing), SIZE_MIB=$size, medians of $runs:"
for d in $dirties; do
	# shellcheck disable=SC2086
	printf '  %4s (MiB unsynced on the owner): %.3f s   (runs: %s)\n' "$d" \
		"$(printf '%s\n' ${took[$d]} | median)" "${took[$d]}"
done
