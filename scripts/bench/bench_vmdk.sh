#!/usr/bin/env bash
# Size benchmark of the compact disk-sparse.vmdk (issue 12, section 1): on realistic disks
# (tests/lib/mkdisk.sh: FAT + ext4 of real files, a zero tail), for each size in SIZES_MIB:
#   - the disk's data: 64 KiB grains that are not all zero (what any sparse format must keep);
#   - disk-sparse.vmdk as the mount shows it (stat) and a plain `cp` of it off the mount
#     (apparent and allocated size of the copy, and the cp's wall time, first open included);
#   - `qemu-img convert -O vmdk -o subformat=monolithicSparse` of the same disk (the target:
#     the copy within 1.1x of its size);
#   - the layout before issue 12 (every grain at its own offset: metadata + the whole disk),
#     computed from the header.
# The copy is checked: `qemu-img compare` against the source disk.  Disks and chains are
# built once and cached in BENCH_DIR/vmdk.  Sizes are exact; the cp time is one run.
#
#   scripts/bench/bench_vmdk.sh [BENCH_DIR]     (default /var/tmp/imgchain-bench)
# Env: SIZES_MIB ("512 2048"), BUILD (./build: imgbackup, imgmount)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-/var/tmp/imgchain-bench}
sizes=${SIZES_MIB:-512 2048}
build=${BUILD:-$top/build}
export PATH="$build:$PATH"
export IMGCHAIN_PASSPHRASE=bench
unset IMGCHAIN_PASSPHRASE_FILE IMGCHAIN_KDF
export LC_ALL=C
source "$top/tests/lib/mkdisk.sh"

die() { echo "bench_vmdk: $*" >&2; exit 1; }
for t in imgbackup imgmount qemu-img fusermount3 mountpoint python3; do
	command -v "$t" >/dev/null 2>&1 || die "missing tool: $t"
done
[[ -c /dev/fuse ]] || die "/dev/fuse is missing"

mkdir -p "$dir/vmdk"
cache=$(cd "$dir/vmdk" && pwd)
export IMGCHAIN_STATE_DIR=$cache/state
run=$(mktemp -d "$cache/run.XXXXXX")
MNT=$run/mnt
mkdir -p "$MNT"
IM_PID=
stop_im() {
	if grep -qF " $MNT " /proc/self/mounts 2>/dev/null; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null || true
	fi
	if [[ -n $IM_PID ]]; then
		kill "$IM_PID" 2>/dev/null || true
		wait "$IM_PID" 2>/dev/null || true
		IM_PID=
	fi
}
trap 'stop_im; rm -rf "$run"' EXIT

mib() { python3 -c "import sys; print('%.1f' % (int(sys.argv[1]) / 1048576))" "$1"; }

# data_bytes DISK: bytes of the 64 KiB grains that are not all zero
data_bytes() {
	python3 - "$1" <<'PY'
import sys
G = 65536
n = 0
with open(sys.argv[1], "rb") as f:
    while True:
        b = f.read(G)
        if not b:
            break
        n += bool(b.strip(b"\0"))
print(n * G)
PY
}

# old_layout SPARSE DISK_BYTES: the size of the layout before issue 12 (overHead + every grain)
old_layout() {
	python3 - "$1" "$2" <<'PY'
import struct, sys
h = open(sys.argv[1], "rb").read(512)
oh, grain = struct.unpack_from("<Q", h, 64)[0], struct.unpack_from("<Q", h, 20)[0]
cap = (int(sys.argv[2]) + 511) // 512
print((oh + (cap + grain - 1) // grain * grain) * 512)
PY
}

printf '%-9s %10s %10s %12s %12s %12s %10s %8s %10s\n' disk data stat cp-apparent cp-allocated \
	qemu-sparse ratio cp-s old-layout
for s in $sizes; do
	disk=$cache/disk-$s.raw
	chain=$cache/chain-$s
	if [[ ! -f $disk ]]; then
		echo "bench_vmdk: building a ${s} MiB disk (once)" >&2
		mkdisk_create "$disk.tmp" "$s" >/dev/null
		mv "$disk.tmp" "$disk"
		rm -rf "$chain"
	fi
	[[ -d $chain ]] || imgbackup -q -n p "$chain" "$disk"
	qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse "$disk" "$run/q.vmdk"
	q=$(stat -c %s "$run/q.vmdk")
	data=$(data_bytes "$disk")
	imgmount -f "$chain" "$MNT" 2>"$run/mount.log" &
	IM_PID=$!
	for ((i = 0; i < 400; i++)); do mountpoint -q "$MNT" && break; sleep 0.05; done
	mountpoint -q "$MNT" || die "imgmount did not mount: $(cat "$run/mount.log")"
	st=$(stat -c %s "$MNT/p/disk-sparse.vmdk")
	mkdir -p "$run/copy"
	t0=$(date +%s.%N)
	cp "$MNT/p/disk-sparse.vmdk" "$run/copy/"
	t1=$(date +%s.%N)
	stop_im
	c=$run/copy/disk-sparse.vmdk
	qemu-img compare -q -f raw -F vmdk "$disk" "$c" || die "the copy of ${s} MiB is not the disk"
	ca=$(stat -c %s "$c")
	cb=$(( $(stat -c %b "$c") * $(stat -c %B "$c") ))
	old=$(old_layout "$c" "$(stat -c %s "$disk")")
	printf '%-9s %10s %10s %12s %12s %12s %10s %8s %10s\n' "${s}MiB" "$(mib "$data")" "$(mib "$st")" \
		"$(mib "$ca")" "$(mib "$cb")" "$(mib "$q")" \
		"$(python3 -c "import sys; print('%.3fx' % (int(sys.argv[1]) / int(sys.argv[2])))" "$ca" "$q")" \
		"$(python3 -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$t1")" \
		"$(mib "$old")"
	rm -rf "$run/copy" "$run/q.vmdk"
done
echo "(MiB; ratio = cp-apparent / qemu-sparse, target <= 1.1x; old-layout = before issue 12)"
