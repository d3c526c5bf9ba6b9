#!/usr/bin/env bash
# Backup throughput, side by side in one run on the same realistic 2 GiB disk:
#   imgbackup full  vs  qemu-img convert -O qcow2 -c -o compression_type=zstd
#   imgbackup incremental (about 1% of blocks changed): full read, and --changed-blocks
# Each figure is the median of RUNS interleaved runs with the source in the page cache
# (both tools read the same cached file).  Prints figures and the ratios the targets use.
#
#   scripts/bench/bench_backup.sh [BENCH_DIR]     (default /var/tmp/imgchain-bench)
# Env: RUNS (default 3), SIZE_MIB (default 2048), BUILD (default ./build)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-/var/tmp/imgchain-bench}
runs=${RUNS:-3}
size=${SIZE_MIB:-2048}
build=${BUILD:-$top/build}
export PATH="$build:$PATH"
export IMGCHAIN_PASSPHRASE=bench
unset IMGCHAIN_PASSPHRASE_FILE
source "$top/scripts/bench/bench_lib.sh"
bench_disk_1pct "$dir" "$size"
mkdisk_changed_ranges "$disk" "$new" > "$dir/changed.txt"
changed=$(awk '{s+=$2} END{print s+0}' "$dir/changed.txt")
data=$(du -B1 "$disk" | cut -f1)

median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
# kdf CMD...: run an imgbackup (not quiet) and print the seconds its summary gives the KDF
kdf() { "$@" | sed -n 's/.*passphrase KDF \([0-9.]*\) s.*/\1/p'; }

full_ic=() full_q=() inc=() inc_cbt=() kdfs=()
for r in $(seq "$runs"); do
	cat "$disk" "$new" > /dev/null
	rm -rf "$dir/chain" "$dir/z.qcow2"
	full_ic+=("$(t imgbackup -q --name full "$dir/chain" "$disk")")
	full_q+=("$(t qemu-img convert -O qcow2 -c -o compression_type=zstd "$disk" "$dir/z.qcow2")")
	inc+=("$(t imgbackup -q --name inc "$dir/chain" "$new")")
	inc_cbt+=("$(t imgbackup -q --name cbt --parent full --changed-blocks "$dir/changed.txt" "$dir/chain" "$new")")
	kdfs+=("$(kdf imgbackup --name "kdf$r" --parent full --changed-blocks "$dir/changed.txt" "$dir/chain" "$new")")
done
K=$(printf '%s\n' "${kdfs[@]}" | median)
F=$(printf '%s\n' "${full_ic[@]}" | median)
Q=$(printf '%s\n' "${full_q[@]}" | median)
I=$(printf '%s\n' "${inc[@]}" | median)
C=$(printf '%s\n' "${inc_cbt[@]}" | median)
chain_bytes=$(du -B1 -s "$dir/chain" | cut -f1)
qcow_bytes=$(stat -c %s "$dir/z.qcow2")
mb() { echo "scale=1; $1 / 1048576 / $2" | bc -l; }
pct() { echo "scale=1; 100 * $1 / $2" | bc -l; }
echo
echo "imgchain backup benchmark: ${size} MiB disk, $(mb "$data" 1) MiB allocated, changed $(mb "$changed" 1) MiB ($(pct "$changed" "$((size * 1048576))")% of the disk), nproc $(nproc), median of $runs"
printf '%-44s %9s %12s\n' "run" "seconds" "MiB/s (disk)"
printf '%-44s %9.2f %12s\n' "imgbackup full (zstd -1 + XChaCha20, fsync)" "$F" "$(mb $((size * 1048576)) "$F")"
printf '%-44s %9.2f %12s\n' "qemu-img convert -c zstd qcow2 (no fsync)" "$Q" "$(mb $((size * 1048576)) "$Q")"
printf '%-44s %9.2f %12s\n' "imgbackup incremental, 1% changed" "$I" "$(mb $((size * 1048576)) "$I")"
printf '%-44s %9.2f %12s\n' "imgbackup incremental, --changed-blocks" "$C" "$(mb $((size * 1048576)) "$C")"
echo "sizes: imgchain chain $(mb "$chain_bytes" 1) MiB (3 points), qcow2 $(mb "$qcow_bytes" 1) MiB"
echo "ratio full rate imgbackup/qemu-img:  $(echo "scale=2; $Q / $F" | bc -l)   (target >= 2)"
echo "incremental / full time:             $(echo "scale=3; $I / $F" | bc -l)  (target < 0.25)"
echo "changed-blocks / full time:          $(echo "scale=3; $C / $F" | bc -l)  (target < 0.05)"
echo "every run includes the Argon2id passphrase KDF, a fixed cost of $K s (median) whatever the disk size;"
echo "without it: incremental / full $(echo "scale=3; ($I - $K) / ($F - $K)" | bc -l), changed-blocks / full $(echo "scale=3; ($C - $K) / ($F - $K)" | bc -l)"
