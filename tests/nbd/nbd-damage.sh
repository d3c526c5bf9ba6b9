#!/bin/bash
# nbd-damage.sh: reads over NBD are authenticated block by block, as through the mount.  One
# bit is flipped in a record of wed's own image; through the export of wed:
#   1. every 64 KiB block read alone: exactly the damaged block fails (EIO), every other block
#      reads its source's bytes;
#   2. a request spanning the damaged block and good ones fails as a whole (never partial data
#      presented as good), and fails again on a new connection;
#   3. nbdkit's log names the image file and the block;
#   4. points whose path does not hold that image (mon, tue, branch) still compare equal.
source "$(dirname "$0")/nbd-lib.sh"
# nbdsh's python module (python3-libnbd) is the system python's
NBDPY=/usr/bin/python3
"$NBDPY" -c 'import nbd' 2>/dev/null || skip "python3-libnbd (nbdsh's module) is not installed"

make_disk_chain 64
img=$CHAIN/$(printf '%08d.img' 3)
[[ -f $img ]] || fail "test setup: wed's image $img is missing"
read -r roff rlen rpos < <(image_record_offset "$img" 5)
flip_bit "$img" $((roff + rlen / 2)) 3
start_nbd dmg

"$NBDPY" - "$(nbd_uri dmg wed)" "$WORK/d2" "$rpos" <<'PY' || fail "block-by-block reads of the damaged point"
import errno, sys, nbd
uri, src, bad = sys.argv[1], sys.argv[2], int(sys.argv[3])
bs = 65536
data = open(src, "rb").read()
h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
assert size == len(data), (size, len(data))
failed = []
for b in range((size + bs - 1) // bs):
    n = min(bs, size - b * bs)
    try:
        got = h.pread(n, b * bs)
    except nbd.Error as e:
        assert e.errnum == errno.EIO, (b, e)
        failed.append(b)
        continue
    assert got == data[b * bs:b * bs + n], "block %d differs from the source" % b
assert failed == [bad], "failed blocks %r, expected [%d]" % (failed, bad)
# a request over the bad block and its neighbours fails as a whole, also unaligned
for off, n in (((bad - 1) * bs, 3 * bs), (bad * bs + 1000, 2000)):
    try:
        h.pread(n, off)
    except nbd.Error as e:
        assert e.errnum == errno.EIO, e
    else:
        raise SystemExit("a read over the damaged block at %d+%d succeeded" % (off, n))
h.shutdown()
# again on a new connection
h = nbd.NBD()
h.connect_uri(uri)
try:
    h.pread(bs, bad * bs)
    raise SystemExit("the damaged block read fine on a second connection")
except nbd.Error as e:
    assert e.errnum == errno.EIO, e
h.pread(bs, (bad + 1) * bs if bad + 1 < size // bs else 0)
PY
grep -q "$(basename "$img").*$rpos\|$rpos.*$(basename "$img")" "$WORK/dmg.log" ||
	fail "nbdkit's log does not name $(basename "$img") and block $rpos: $(cat "$WORK/dmg.log")"
for pd in mon:d0 tue:d1 branch:d3; do
	qemu-img compare -f raw -F raw "$(nbd_uri dmg "${pd%%:*}")" "$WORK/${pd#*:}" >/dev/null ||
		fail "export ${pd%%:*} (not on the damaged path) differs from ${pd#*:}"
done
stop_nbd dmg
