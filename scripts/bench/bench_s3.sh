#!/usr/bin/env bash
# s3:// against a local directory, in one run on the same realistic disk (issue 16):
#   imgbackup full to a local directory  vs  to a single-node Ceph RGW on this host
#   imgrestore of that point from the directory  vs  cold from the bucket (empty cache)
#   imginfo of the bucket (headers only) with an empty cache
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
mib() { echo "scale=1; $1 / 1048576" | bc -l; }
printf 'disk %s MiB (%s MiB of data), image %s MiB\n' "$size" "$(mib "$data")" "$(mib "$stored")"
printf 'backup   local %6.2f s  s3 %6.2f s  ratio (local time / s3 time) %.2f\n' \
	"$local_b" "$s3_b" "$(echo "$local_b / $s3_b" | bc -l)"
printf 'restore  local %6.2f s  s3 (cold) %6.2f s  ratio %.2f\n' \
	"$local_r" "$s3_r" "$(echo "$local_r / $s3_r" | bc -l)"
printf 'imginfo  s3 (cold) %.2f s\n' "$s3_i"
