#!/usr/bin/env bash
# s3:// against a local directory, in one run on the same realistic disk (issue 16):
#   imgbackup full to a local directory  vs  to a single-node Ceph RGW on this host
#   imgrestore of that point from the directory  vs  cold from the bucket (empty cache)
#   imginfo of the bucket (headers only) with an empty cache
#   a cold sequential read of the mounted point from the bucket (imgmount, records fetched on
#   demand), against the same read of a mount of the local directory
#   a merge of 7 incrementals (mkdisk_mutate rounds, about 1% each) in the bucket
#   (imgconsolidate --merge): the client's bytes sent and received against the bytes merged;
#   then the full merged into that point (--keep-last 1: a synthetic full), the same figures
# The RGW (scripts/ceph-rgw.sh, memstore: data in RAM) is started and stopped here.  Both
# sides run on the same loaded machine: figures are for comparison, not absolute.
#
#   scripts/bench/bench_s3.sh [BENCH_DIR]     (default /var/tmp/imgchain-bench)
# Env: SIZE_MIB (default 2048), BUILD (default ./build), IMGCHAIN_S3_THREADS (default 8)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-/var/tmp/imgchain-bench}
size=${SIZE_MIB:-2048}
build=${BUILD:-$top/build}
export PATH="$build:$PATH"
export IMGCHAIN_PASSPHRASE=bench
unset IMGCHAIN_PASSPHRASE_FILE
source "$top/scripts/bench/bench_lib.sh"
bench_disk "$dir" "$size"
work=$(mktemp -d "$dir/s3.XXXXXX")
trap '"$top/scripts/ceph-rgw.sh" stop "$work/ceph" || true; rm -rf "$work"' EXIT
export IMGCHAIN_STATE_DIR=$work/state IMGCHAIN_S3_CACHE=$work/cache
CEPH_RGW_MEM_MB=$((size * 2 + 1024)) "$top/scripts/ceph-rgw.sh" start "$work/ceph" >"$work/env"
source "$work/env"
"$build/tests/s3/test_s3" mkbucket s3://bench
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
data=$(du -B1 "$disk" | cut -f1)
cat "$disk" >/dev/null
local_b=$(t imgbackup -q --name full "$work/local" "$disk")
s3_b=$(t imgbackup -q --name full s3://bench/c "$disk")
stored=$(du -B1 "$work/local/00000001.img" | cut -f1)
local_r=$(t imgrestore -q "$work/local" full "$work/r1")
rm -rf "$IMGCHAIN_S3_CACHE"
s3_r=$(t imgrestore -q s3://bench/c full "$work/r2")
cmp "$work/r1" "$work/r2"
rm -rf "$IMGCHAIN_S3_CACHE"
s3_i=$(t imginfo s3://bench/c)
# cold sequential reads of the point through imgmount: the local chain, then the bucket
mnt=$work/mnt
mkdir -p "$mnt"
mread() {   # CHAIN: seconds to read full/disk.raw of a fresh mount
	local pid s e
	imgmount -f "$1" "$mnt" 2>"$work/mount.log" &
	pid=$!
	for _ in $(seq 400); do mountpoint -q "$mnt" && break; sleep 0.05; done
	s=$(date +%s.%N)
	dd if="$mnt/full/disk.raw" of=/dev/null bs=1M status=none
	e=$(date +%s.%N)
	fusermount3 -u "$mnt"
	wait "$pid"
	echo "$e - $s" | bc -l
}
sync
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
local_m=$(mread "$work/local")
rm -rf "$IMGCHAIN_S3_CACHE"
s3_m=$(mread s3://bench/c)
fetched=$(sed -n 's/.*: \([0-9]*\) bytes fetched from the bucket.*/\1/p' "$work/mount.log")

# 7 incrementals, then merged in the bucket
cp --sparse=always "$disk" "$work/d"
for i in 1 2 3 4 5 6 7; do
	mkdisk_mutate "$work/d" "$i" >/dev/null
	imgbackup -q --name "inc$i" s3://bench/c "$work/d"
done
cp --sparse=always "$work/d" "$work/d7"
s=$(date +%s.%N)
imgconsolidate --merge inc1..inc7 s3://bench/c >"$work/merge.out"
e=$(date +%s.%N)
merge_t=$(echo "$e - $s" | bc -l)
read -r sent recv < <(sed -n 's/.*client traffic: .*(\([0-9]*\) and \([0-9]*\) bytes).*/\1 \2/p' \
	"$work/merge.out")
merged=$("$build/tests/s3/test_s3" ls s3://bench c/00000008.img | awk '{print $2}')
rm -rf "$IMGCHAIN_S3_CACHE"
imgrestore -q s3://bench/c inc7 "$work/r7"
cmp "$work/r7" "$work/d7"
s=$(date +%s.%N)
imgconsolidate --keep-last 1 s3://bench/c >"$work/merge2.out"
e=$(date +%s.%N)
merge2_t=$(echo "$e - $s" | bc -l)
read -r sent2 recv2 < <(sed -n 's/.*client traffic: .*(\([0-9]*\) and \([0-9]*\) bytes).*/\1 \2/p' \
	"$work/merge2.out")
merged2=$("$build/tests/s3/test_s3" ls s3://bench c/00000008.img | awk '{print $2}')
rm -rf "$IMGCHAIN_S3_CACHE" "$work/r7"
imgrestore -q s3://bench/c inc7 "$work/r7"
cmp "$work/r7" "$work/d7"
mib() { echo "scale=1; $1 / 1048576" | bc -l; }
printf 'disk %s MiB (%s MiB of data), image %s MiB\n' "$size" "$(mib "$data")" "$(mib "$stored")"
printf 'backup   local %6.2f s  s3 %6.2f s  ratio (local time / s3 time) %.2f\n' \
	"$local_b" "$s3_b" "$(echo "$local_b / $s3_b" | bc -l)"
printf 'restore  local %6.2f s  s3 (cold) %6.2f s  ratio %.2f\n' \
	"$local_r" "$s3_r" "$(echo "$local_r / $s3_r" | bc -l)"
printf 'imginfo  s3 (cold) %.2f s\n' "$s3_i"
printf 'mount read (cold, sequential)  local %6.2f s (%s MiB/s)  s3 %6.2f s (%s MiB/s, %s MiB fetched)\n' \
	"$local_m" "$(echo "scale=0; $size / $local_m" | bc -l)" "$s3_m" \
	"$(echo "scale=0; $size / $s3_m" | bc -l)" "$(mib "${fetched:-0}")"
printf 'merge of 7 incrementals in the bucket: %.2f s, %s MiB merged, client sent %s KiB + received %s KiB = %.2f%% of it\n' \
	"$merge_t" "$(mib "$merged")" "$((sent / 1024))" "$((recv / 1024))" \
	"$(echo "($sent + $recv) * 100 / $merged" | bc -l)"
grep -E "bucket:|client traffic" "$work/merge.out"
printf 'full merged into it (synthetic full) in the bucket: %.2f s, %s MiB merged, client sent %s KiB + received %s KiB = %.2f%% of it\n' \
	"$merge2_t" "$(mib "$merged2")" "$((sent2 / 1024))" "$((recv2 / 1024))" \
	"$(echo "($sent2 + $recv2) * 100 / $merged2" | bc -l)"
grep -E "bucket:|client traffic" "$work/merge2.out"
