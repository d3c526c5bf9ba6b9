#!/bin/bash
# e06-overlay-binding.sh (issue 10, finding 6): an overlay is bound to the exact point it was
# made on (the chain id and the point's seal), not to its name and size.  A writable mount
# writes into p2; p2 is merged away and a new point takes the name p2 with other bytes of the
# same size: a remount with the same overlay directory refuses the overlay with a message
# naming it and both points, serves the new p2's own bytes read-only (a write open gets
# EROFS), and leaves the overlay's files as they were (sha256).  The positive case: after a
# merge that keeps p2 (p1..p2: same content, same seal), the overlay still applies.  An
# overlay of version 1 (before the binding: only the size recorded) is refused the same way.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
requires imgconsolidate imgmount sha256sum
fuse_usable || skip "FUSE is not usable here"
make_chain

OV=$TESTDIR/overlay
MSG_OFF=$((5 * B + 123))

# 1. a write into p2 through the overlay; expected: s2 with those bytes
mount_chain C --overlay "$OV"
printf 'written into the first p2' |
	dd of="$TESTDIR/mnt/p2/disk.raw" bs=1 seek=$MSG_OFF conv=notrunc,fsync status=none ||
	fail "write into p2 through the overlay"
unmount_chain
cp s2 s2w
printf 'written into the first p2' | dd of=s2w bs=1 seek=$MSG_OFF conv=notrunc status=none
[[ -f $OV/p2/disk.raw.map && -f $OV/p2/disk.raw.data ]] || fail "no overlay files for p2"

# 2. the positive case: p1 merged into p2 keeps p2's content and seal: the overlay applies
expect_exit 0 env -u IMGCHAIN_PASSPHRASE imgconsolidate -q --merge p1..p2 C
snap "$OV"
mount_chain C --overlay "$OV"
cmp "$TESTDIR/mnt/p2/disk.raw" s2w || fail "the overlay of p2 was lost by a merge that kept p2"
! grep -q "not applied" "$TESTDIR/mount.log" || fail "overlay refused after a merge that kept p2: $(cat "$TESTDIR/mount.log")"
unmount_chain
unchanged "a mount reading the overlay"

# 3. p2 merged away (into p4), a new point named p2 with other bytes of the same size
expect_exit 0 imgbackup -q --name p4 --parent p2 C s2
expect_exit 0 env -u IMGCHAIN_PASSPHRASE imgconsolidate -q --merge p2..p4 C
cp s1 s5
write_at s5 $((5 * B)) $B five
write_at s5 $((11 * B + 7)) 5000 five11
expect_exit 0 imgbackup -q --name p2 C s5
restore_cmp C p2 s5
snap "$OV/p2"
mount_chain C --overlay "$OV"
cmp "$TESTDIR/mnt/p2/disk.raw" s5 || fail "the new p2 does not read its own bytes"
# disk-flat.vmdk: the disk, then zeros to a whole sector (disk.vmdk counts sectors)
cmp "$TESTDIR/mnt/p2/disk-flat.vmdk" <(cat s5; head -c $(( (512 - $(stat -c %s s5) % 512) % 512 )) /dev/zero) ||
	fail "the new p2's flat VMDK does not read its own bytes"
python3 - "$TESTDIR/mnt/p2/disk.raw" <<'EOF' || fail "the new p2 was writable over the old overlay"
import errno, os, sys
try:
    os.open(sys.argv[1], os.O_WRONLY)
except OSError as e:
    assert e.errno == errno.EROFS, e
    sys.exit(0)
sys.exit("opened for writing")
EOF
[[ $(stat -c %a "$TESTDIR/mnt/p2/disk.raw") == 444 ]] ||
	fail "p2/disk.raw is not shown read-only: $(stat -c %a "$TESTDIR/mnt/p2/disk.raw")"
# the other points stay writable
printf x | dd of="$TESTDIR/mnt/p4/disk.raw" bs=1 seek=10 conv=notrunc,fsync status=none ||
	fail "p4 is not writable"
re="[^ ]*/overlay/p2/disk\.raw\.map: overlay made on restore point 'p2' \(seq 2, seal [0-9a-f]{16}\), not on restore point 'p2' \(seq 5, seal [0-9a-f]{16}\): not applied, 'p2' is served read-only"
grep -Eq -- "$re" "$TESTDIR/mount.log" || fail "no refusal message: $(cat "$TESTDIR/mount.log")"
(($(grep -c "not applied" "$TESTDIR/mount.log") == 1)) ||
	fail "the refusal was not logged exactly once: $(cat "$TESTDIR/mount.log")"
unmount_chain
unchanged "the refused overlay"

# 4. an overlay of version 1 (made before overlays were bound: only the size recorded) on
# p4: refused as well, never migrated, left as it was; p4 reads its own bytes
icimg_py "$OV/p4/disk.raw.map" <<'EOF'
import struct, sys, icimg
path = sys.argv[1]
m = bytearray(open(path, "rb").read())
n = 0
for off in (0, 4096):
    if m[off:off + 8] != b"ICOVLMAP":
        continue
    struct.pack_into("<I", m, off + 8, 1)
    m[off + 56:off + 4096] = bytes(4096 - 56)
    struct.pack_into("<Q", m, off + 56, icimg.xxh64(m[off:off + 4096]))
    n += 1
assert n, "no header in %s" % path
open(path, "r+b").write(m)
EOF
snap "$OV"
mount_chain C --overlay "$OV"
cmp "$TESTDIR/mnt/p4/disk.raw" s2 || fail "p4 does not read its own bytes beside a version 1 overlay"
! (printf y | dd of="$TESTDIR/mnt/p4/disk.raw" bs=1 seek=10 conv=notrunc status=none) 2>/dev/null ||
	fail "p4 was writable over a version 1 overlay"
re="[^ ]*/overlay/p4/disk\.raw\.map: overlay of version 1, which does not record what it was made on: refused for restore point 'p4' \(seq 4, seal [0-9a-f]{16}\): not applied, 'p4' is served read-only"
grep -Eq -- "$re" "$TESTDIR/mount.log" || fail "no refusal of the version 1 overlay: $(cat "$TESTDIR/mount.log")"
unmount_chain
unchanged "the refused version 1 overlay"
echo "PASS: e06-overlay-binding"
