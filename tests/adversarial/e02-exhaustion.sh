#!/bin/bash
# e02-exhaustion.sh (issue 10, finding 4, memory and time of the block map): the storage inflates
# what a slot claims, checksums fixed, to make readers allocate or loop for nothing.
#   disk_size 2^46 (2^30 blocks of 64 KiB) on an incremental of 16 blocks: keyless imgverify walks the
#     entries, not the blocks, and allocates nothing per block (it cannot tell: "no problems");
#     imgrestore and a mount check the seal (streaming over the indexes) before any per-block
#     memory and refuse the point (seal mismatch, exit 4 / EIO).
#   a sparse 1 GiB index (2^24 entries of zeros, disk_size raised to match): read and checked a
#     chunk at a time, it fails at its first entry; nothing near its size is allocated.
# Each run: peak RSS (/usr/bin/time -f %M, or the daemon's VmHWM) under 100 MB, under 3 s.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
[[ -x /usr/bin/time ]] || skip "requires /usr/bin/time"

MAX_KB=102400
MAX_S=3

# bounded CODE CMD...: expect_exit CODE CMD, with its peak RSS and elapsed time bounded
bounded()
{
	local code=$1 kb s
	shift
	expect_exit "$code" /usr/bin/time -o "$TESTDIR/time.out" -f "%M %e" "$@"
	read -r kb s < <(tail -n 1 "$TESTDIR/time.out")
	echo "$*: exit $code, peak RSS $kb KiB, $s s"
	((kb < MAX_KB)) || fail "$*: peak RSS $kb KiB (limit $MAX_KB)"
	python3 -c "import sys; sys.exit(float('$s') >= $MAX_S)" || fail "$*: took $s s (limit $MAX_S)"
}

# mount_eio_hwm POINT REGEX: on a mount, reading POINT's disk.raw fails with EIO, the daemon
# logs REGEX, and its peak RSS (VmHWM) stays bounded
mount_eio_hwm()
{
	local kb
	if ! fuse_usable; then
		echo "note: FUSE not usable here, imgmount case not run"
		return 0
	fi
	mount_chain C
	python3 - "$TESTDIR/mnt/$1/disk.raw" <<'EOF' || fail "mount: '$1' was served"
import errno, os, sys
try:
    os.pread(os.open(sys.argv[1], os.O_RDONLY), 4096, 0)
except OSError as e:
    assert e.errno == errno.EIO, e
    sys.exit(0)
sys.exit("read")
EOF
	kb=$(awk '/^VmHWM/ {print $2}' /proc/$MOUNT_PID/status)
	echo "imgmount: opening '$1': peak RSS $kb KiB"
	((kb < MAX_KB)) || fail "imgmount: peak RSS $kb KiB (limit $MAX_KB)"
	grep -Eq -- "$2" "$TESTDIR/mount.log" ||
		fail "imgmount's log does not match /$2/: $(cat "$TESTDIR/mount.log")"
	unmount_chain
}

mkrandom_bytes s 1048576 s
cp s s2
write_at s2 $((3 * B)) 100 two
expect_exit 0 imgbackup -q --name full C s
expect_exit 0 imgbackup -q --name inc C s2
cp -a C good

# ---- disk_size 2^46 on the incremental (its parent's 16 blocks end far before) -----------------------------------------------------------------------------
icimg_py C/00000002.img <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
i.slot["disk_size"] = 1 << 46
i.write_slot()
EOF
snap
bounded 0 imgverify C
bounded 4 imgverify --data C
expect_msg "^imgverify: C/00000002.img: restore point 'inc': seal mismatch"
bounded 4 imgrestore C inc out
expect_msg "^imgrestore: C/00000002.img: restore point 'inc': seal mismatch"
[[ ! -e out ]] || fail "a failed restore left DEST"
bounded 4 imgbackup -q --name next C s2
expect_msg "^imgbackup: C/00000002.img: restore point 'inc': seal mismatch"
no_tmp_files C
unchanged "reading an inflated disk size"
mount_eio_hwm inc "restore point 'inc': .*seal mismatch"
unchanged "mounting an inflated disk size"

# ---- a sparse 1 GiB index ---------------------------------------------------------------------
rm -rf C
cp -a good C
icimg_py C/00000001.img <<'EOF'
import os, sys, icimg
i = icimg.Image(sys.argv[1])
s = i.slot
n = 1 << 24
s["disk_size"] = n * 65536
s["index_offset"] = (len(i.data) + 4095) // 4096 * 4096
s["n_zero"] = n - s["n_data"]
s["index_count"] = n
s["data_end"] = s["index_offset"] + 64 * n
os.truncate(sys.argv[1], s["data_end"])
i.write_slot()
EOF
snap
msg="C/00000001.img: index checksum mismatch \(index damaged at entry 0\)"
bounded 4 imgverify C
expect_msg "^imgverify: $msg$"
bounded 4 imgverify --data C
expect_msg "^imgverify: $msg$"
bounded 4 imgrestore C full out
expect_msg "^imgrestore: $msg$"
[[ ! -e out ]] || fail "a failed restore left DEST"
unchanged "reading a sparse index"
mount_eio_hwm full "$msg"
unchanged "mounting a sparse index"
