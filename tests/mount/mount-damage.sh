#!/bin/bash
# mount-damage.sh: flip one bit in one block record of the full image (found through the
# image's index): reading that block's range gives EIO and the daemon logs the point and
# position; every other byte of the disk still reads correctly.
. "$(dirname "$0")/mount-lib.sh"

make_disk_chain 64
# Pick the 20th data block of the full image (its index read through tests/lib/icimg.py).
read -r POS OFF < <(icimg_py "$CHAIN/00000001.img" <<'PY'
import sys, icimg
e = icimg.Image(sys.argv[1]).data_entries()[20]
at = e["offset"] + e["stored_len"] // 2
with open(sys.argv[1], "r+b") as f:
    f.seek(at)
    b = f.read(1)
    f.seek(at)
    f.write(bytes([b[0] ^ 0x04]))
print(e["pos"], at)
PY
)
B=65536
mount_chain "$CHAIN"

python3 - "$MNT/mon/disk.raw" "$WORK/d0" "$POS" <<'PY' || fail "damaged range"
import errno, os, sys
B = 65536
fd, src, pos = os.open(sys.argv[1], os.O_RDONLY), open(sys.argv[2], "rb").read(), int(sys.argv[3])
def expect_eio(off, n):
    try:
        os.pread(fd, n, off)
    except OSError as e:
        assert e.errno == errno.EIO, e
        return
    raise SystemExit("read of %d bytes at %d did not fail" % (n, off))
expect_eio(pos * B, B)
expect_eio(pos * B + 4000, 10)
# a read that starts before the damage ends short of it (the page cache returns what it
# has, then the next read fails) or fails: never damaged bytes
try:
    got = os.pread(fd, 3 * B, (pos - 1) * B)
    assert len(got) <= B and got == src[(pos - 1) * B:(pos - 1) * B + len(got)], "bytes past the damage"
    expect_eio((pos - 1) * B + len(got), 2 * B)
except OSError as e:
    assert e.errno == errno.EIO, e
# everything else, in pieces that stop at the damaged block, reads correctly
for start, end in ((0, pos * B), ((pos + 1) * B, len(src))):
    off = start
    while off < end:
        n = min(1 << 20, end - off)
        got = os.pread(fd, n, off)
        assert got == src[off:off + n], "wrong bytes at %d" % off
        off += n
PY
grep -q "restore point 'mon', block $POS " "$WORK/mount.log" || fail "damage not logged with point and position"
! cmp -s "$MNT/mon/disk-flat.vmdk" "$WORK/d0" || fail "cmp read through the damaged block"
unmount_chain
echo "ok"
