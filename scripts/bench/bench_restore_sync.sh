#!/usr/bin/env bash
# Block-sync restore against a full restore, on the realistic 2 GiB disk of bench_backup.sh:
# point p1 = the disk, p2 = the disk after one round of mkdisk_mutate (about 1% of the 64 KiB
# blocks differ).  DEST is a fully allocated file holding p1 (as a disk would), flushed and in
# the page cache before each timed run; every run ends with fsync.
#   imgrestore C p2 NEW               full restore into a new (sparse) file
#   imgrestore --sync C p2 DEST       DEST read and digested, the differing blocks written
#   imgrestore --sync-from p1 C p2 DEST   the indexes compared, DEST not read
#   imgrestore --sync-from p2 C p2 DEST2  nothing differs: the fixed cost (KDF, seals, indexes)
# Each time is the median of RUNS interleaved runs; bytes written are the tool's summary.
#
#   scripts/bench/bench_restore_sync.sh [BENCH_DIR]   (default /var/tmp/imgchain-bench-sync)
# Env: RUNS (default 3), SIZE_MIB (default 2048), BUILD (default ./build)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-/var/tmp/imgchain-bench-sync}
runs=${RUNS:-3}
size=${SIZE_MIB:-2048}
build=${BUILD:-$top/build}
export PATH="$build:$PATH"
export IMGCHAIN_PASSPHRASE=bench IMGCHAIN_STATE_DIR="$dir/state"
unset IMGCHAIN_PASSPHRASE_FILE
source "$top/scripts/bench/bench_lib.sh"
bench_disk_1pct "$dir" "$size"
changed=$(mkdisk_changed_ranges "$disk" "$new" | awk '{s+=$2} END{print s+0}')
if [ ! -d "$dir/chain" ]; then
	imgbackup -q --name p1 "$dir/chain" "$disk"
	imgbackup -q --name p2 "$dir/chain" "$new"
fi

median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
# t OUT CMD...: seconds of CMD, its stdout into OUT
t() { local o=$1 s e; shift; s=$(date +%s.%N); "$@" >"$o"; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
# dest FILE POINTFILE: FILE a fully allocated copy of POINTFILE, flushed, in the page cache
dest() { rm -f "$1"; cp --sparse=never "$2" "$1"; sync "$1"; cat "$1" >/dev/null; }
written() { sed -n 's/.*, written \([0-9.]* [KMGT]*i*B\).*/\1/p' "$1"; }

full=() syn=() from=() noop=()
for r in $(seq "$runs"); do
	rm -f "$dir/full.raw"
	cat "$dir"/chain/*.img >/dev/null
	full+=("$(t "$dir/full.out" imgrestore "$dir/chain" p2 "$dir/full.raw")")
	cmp "$dir/full.raw" "$new"
	dest "$dir/dest.raw" "$disk"
	syn+=("$(t "$dir/sync.out" imgrestore --sync "$dir/chain" p2 "$dir/dest.raw")")
	cmp "$dir/dest.raw" "$new"
	dest "$dir/dest.raw" "$disk"
	from+=("$(t "$dir/from.out" imgrestore --sync-from p1 "$dir/chain" p2 "$dir/dest.raw")")
	cmp "$dir/dest.raw" "$new"
	noop+=("$(t "$dir/noop.out" imgrestore --sync-from p2 "$dir/chain" p2 "$dir/dest.raw")")
done
rm -f "$dir/full.raw" "$dir/dest.raw"
F=$(printf '%s\n' "${full[@]}" | median)
S=$(printf '%s\n' "${syn[@]}" | median)
R=$(printf '%s\n' "${from[@]}" | median)
N=$(printf '%s\n' "${noop[@]}" | median)
mb() { echo "scale=1; $1 / 1048576" | bc -l; }
echo
echo "imgchain sync restore benchmark: ${size} MiB disk, $(mb "$(du -B1 "$new" | cut -f1)") MiB allocated," \
	"differing $(mb "$changed") MiB ($(echo "scale=2; 100 * $changed / ($size * 1048576)" | bc -l)% of the disk)," \
	"nproc $(nproc), median of $runs"
printf '%-46s %9s  %s\n' "run" "seconds" "written (summary)"
printf '%-46s %9.2f  %s\n' "imgrestore, full, into a new file" "$F" "(the data blocks)"
printf '%-46s %9.2f  %s\n' "imgrestore --sync onto p1" "$S" "$(written "$dir/sync.out")"
printf '%-46s %9.2f  %s\n' "imgrestore --sync-from p1 onto p1" "$R" "$(written "$dir/from.out")"
printf '%-46s %9.2f  %s\n' "imgrestore --sync-from p2 onto p2 (fixed cost)" "$N" "$(written "$dir/noop.out")"
cat "$dir/full.out" "$dir/sync.out" "$dir/from.out"
echo "--sync / full:       $(echo "scale=3; $S / $F" | bc -l)  (target <= 0.35)"
echo "--sync-from / full:  $(echo "scale=3; $R / $F" | bc -l)  (target <= 0.1)"
echo "without the fixed cost (passphrase KDF, seals, indexes): --sync / full" \
	"$(echo "scale=3; ($S - $N) / ($F - $N)" | bc -l), --sync-from / full $(echo "scale=3; ($R - $N) / ($F - $N)" | bc -l)"
