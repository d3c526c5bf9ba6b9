# bench_lib.sh: what the benchmarks share (sourced, not run): the realistic test disks of
# tests/lib/mkdisk.sh, made once and cached in the bench directory.
#   bench_disk DIR SIZE_MIB       sets disk=DIR/disk-SIZEm.raw (mkdisk_create, once)
#   bench_disk_1pct DIR SIZE_MIB  also sets new=DIR/disk-SIZEm-1pct.raw: that disk after one
#                                 mkdisk_mutate round (about 1% of its 64 KiB blocks), once
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/tests/lib/mkdisk.sh"

bench_disk()
{
	mkdir -p "$1"
	disk="$1/disk-${2}m.raw"
	if [ ! -f "$disk" ]; then
		echo "bench: creating a ${2} MiB disk of real files (once, cached in $1)"
		mkdisk_create "$disk.tmp" "$2"
		mv "$disk.tmp" "$disk"
	fi
}

bench_disk_1pct()
{
	bench_disk "$1" "$2"
	new="$1/disk-${2}m-1pct.raw"
	if [ ! -f "$new" ]; then
		cp --sparse=always "$disk" "$new.tmp"
		mkdisk_mutate "$new.tmp" 1
		mv "$new.tmp" "$new"
	fi
}

# bench_mount IMGMOUNT DIR ARGS...: IMGMOUNT -f ARGS... in the background, its messages in
# DIR/mount.log; sets mpid; exits when the mount is not ready after 20 s
bench_mount()
{
	local bin=$1 d=$2 _
	shift 2
	"$bin" -f "$@" 2>"$d/mount.log" &
	mpid=$!
	for _ in $(seq 400); do mountpoint -q "$d/mnt" && return 0; sleep 0.05; done
	echo "mount failed: $(cat "$d/mount.log")" >&2
	exit 1
}
