#!/bin/bash
# mount-vmdk.sh: the VMDK files of a mount, read by third parties (qemu-img, libvmdk's
# vmdkinfo and vmdkmount, 7-Zip), not by our own decoder:
#   1. disk-sparse.vmdk is compact: its size (stat before any open, and a plain `cp` of it)
#      is exactly the metadata plus one 64 KiB grain per non-zero grain of the point,
#      within 1.1x of qemu-img's own monolithicSparse of the same disk; the copy, as a
#      standalone file, is the point's disk for qemu-img (compare, check), libvmdk and
#      7-Zip (byte for byte, no warning: "There are data after the end of archive" was
#      7-Zip's word for the zero grains the old layout kept at the end); a full whose disk
#      ends with zeros and an incremental that zeroed and wrote grains;
#   2. the same bytes on a remount;
#   3. a disk whose size is not a multiple of 512: disk.raw byte for byte, disk-flat.vmdk
#      padded to the sector disk.vmdk counts, both VMDKs accepted by libvmdk, 7-Zip and
#      qemu-img;
#   4. with --overlay: a hypervisor's write into a hole of disk-sparse.vmdk appends one grain
#      at the end of the compact file (a copy still compares equal to the written disk,
#      for qemu-img and libvmdk), and a write of the odd disk's last sector through
#      disk.vmdk reads back through disk-flat.vmdk and disk.raw.
. "$(dirname "$0")/mount-lib.sh"
requires qemu-img qemu-io vmdkinfo vmdkmount 7zz cmp

GRAIN=65536

# mkdisk FILE BYTES SEED [ZERO_EVERY]: data in 64 KiB grains, every third one zero, the
# last quarter zero (the tail 7-Zip complained about), a few single bytes in zero grains.
mkdisk() {
	python3 - "$@" <<'PY'
import random, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
d = bytearray(size)
G = 65536
for g in range(0, (size * 3 // 4) // G):
    if g % 3 == 1:
        continue
    d[g * G:(g + 1) * G] = r.randbytes(G) if g % 5 else ((b"text %d\n" % g) * G)[:G]
for _ in range(5):
    d[r.randrange(0, size)] = 0x42
d[size - 1] = 0x17                  # the last byte: a short last grain holds data
open(path, "wb").write(d)
PY
}

# change FILE SEED: zero some data grains, write into some zero ones (an incremental)
change() {
	python3 - "$@" <<'PY'
import random, sys
path, seed = sys.argv[1], int(sys.argv[2])
r = random.Random(seed)
d = bytearray(open(path, "rb").read())
G = 65536
for g in range(0, len(d) // G, 4):
    d[g * G:(g + 1) * G] = bytes(G)
for _ in range(6):
    at = r.randrange(0, len(d) - 4096)
    d[at:at + 4096] = r.randbytes(4096)
open(path, "wb").write(d)
PY
}

# stored_size SOURCE SPARSE: what the compact file must weigh: its metadata (the header's
# overHead) plus a grain per non-zero 64 KiB of SOURCE.
stored_size() {
	python3 - "$@" <<'PY'
import struct, sys
src, sparse = sys.argv[1:3]
G = 65536
with open(sparse, "rb") as f:
    h = f.read(512)
assert h[:4] == b"KDMV", h[:4]
overhead = struct.unpack_from("<Q", h, 64)[0] * 512
n = 0
with open(src, "rb") as f:
    while True:
        b = f.read(G)
        if not b:
            break
        n += bool(b.strip(b"\0"))
print(overhead + n * G)
PY
}

# padded SOURCE OUT: SOURCE with zeros to a whole sector (the disk a VMDK describes)
padded() {
	cp "$1" "$2"
	truncate -s $(( ($(stat -c %s "$1") + 511) / 512 * 512 )) "$2"
}

VM=$WORK/vm
mkdir -p "$VM"
vm_unmount() { ! mountpoint -q "$VM" || fusermount3 -u "$VM" || fusermount3 -uz "$VM"; }
cleanup_fn vm_unmount

# third_party FILE DISK: libvmdk and 7-Zip read FILE as exactly DISK (sector padded), without
# a warning; qemu-img checks and compares it.
third_party() {
	local f=$1 want=$2 what=$1
	vmdkinfo "$f" >"$WORK/vmdkinfo.out" 2>&1 || fail "vmdkinfo $what: $(cat "$WORK/vmdkinfo.out")"
	! grep -qiE 'error|unable|warning' "$WORK/vmdkinfo.out" || fail "vmdkinfo $what: $(cat "$WORK/vmdkinfo.out")"
	vmdkmount "$f" "$VM" >"$WORK/vmdkmount.out" 2>&1 || fail "vmdkmount $what: $(cat "$WORK/vmdkmount.out")"
	cmp "$VM/vmdk1" "$want" || fail "libvmdk reads $what differently from its disk"
	fusermount3 -u "$VM"
	7zz t "$f" >"$WORK/7z.out" 2>&1 || fail "7zz t $what: $(cat "$WORK/7z.out")"
	grep -q '^Everything is Ok' "$WORK/7z.out" || fail "7zz t $what: $(cat "$WORK/7z.out")"
	! grep -qiE 'warning|data after the end|error' "$WORK/7z.out" || fail "7zz t $what: $(cat "$WORK/7z.out")"
	7zz x -so "$f" 2>"$WORK/7z.err" | cmp - "$want" || fail "7-Zip extracts $what differently from its disk"
	! grep -qiE 'warning|error' "$WORK/7z.err" || fail "7zz x $what: $(cat "$WORK/7z.err")"
	qemu-img check -f vmdk "$f" >/dev/null || fail "qemu-img check $what"
	qemu-img compare -f raw -F vmdk "$want" "$f" >/dev/null || fail "qemu-img compare $what"
}

# ---- the chains: full + incremental (16 MiB); an odd-size disk (5 MiB + 777 bytes) -----
mkdisk "$WORK/full" $((16 << 20)) 1
cp "$WORK/full" "$WORK/inc" && change "$WORK/inc" 2
mkdisk "$WORK/odd" $(((5 << 20) + 777)) 3
imgbackup -q -n full "$CHAIN" "$WORK/full"
imgbackup -q -n inc "$CHAIN" "$WORK/inc"
imgbackup -q -n odd "$WORK/oddchain" "$WORK/odd"
for p in full inc odd; do padded "$WORK/$p" "$WORK/$p.pad"; done

# ---- 1. compact, and a standalone disk for every reader -----------------------------------
mount_chain "$CHAIN"
for p in full inc; do
	# the size before any open (getattr builds the point's view), then a plain cp
	size=$(stat -c %s "$MNT/$p/disk-sparse.vmdk")
	mkdir -p "$WORK/cp/$p"
	cp "$MNT/$p/disk-sparse.vmdk" "$WORK/cp/$p/"
	c=$WORK/cp/$p/disk-sparse.vmdk
	want=$(stored_size "$WORK/$p" "$c")
	[[ $(stat -c %s "$c") == "$want" && $size == "$want" ]] ||
		fail "$p: disk-sparse.vmdk is $size bytes (copy: $(stat -c %s "$c")), not the $want of metadata and data grains"
	((want < $(stat -c %s "$WORK/$p") * 3 / 4)) || fail "$p: $want bytes is not compact"
	cmp "$c" "$MNT/$p/disk-sparse.vmdk" || fail "$p: the copy differs from the mount's file"
	qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse "$WORK/$p" "$WORK/q-$p.vmdk"
	q=$(stat -c %s "$WORK/q-$p.vmdk")
	((want * 10 <= q * 11)) || fail "$p: $want bytes, more than 1.1x qemu-img's $q"
	# libvmdk opens the extent the embedded descriptor names: the copy keeps its name
	third_party "$c" "$WORK/$p.pad"
	third_party "$MNT/$p/disk-sparse.vmdk" "$WORK/$p.pad"
done
sha256sum "$MNT"/{full,inc}/disk-sparse.vmdk >"$WORK/sparse.sums"
unmount_chain

# ---- 2. a remount shows the same bytes ---------------------------------------------------
mount_chain "$CHAIN"
sha256sum -c --quiet "$WORK/sparse.sums" || fail "disk-sparse.vmdk changed across a remount"
unmount_chain

# ---- 3. a disk of 5 MiB + 777 bytes --------------------------------------------------------
mount_chain "$WORK/oddchain"
m=$MNT/odd
[[ $(stat -c %s "$m/disk.raw") == $(stat -c %s "$WORK/odd") ]] || fail "odd: disk.raw size"
cmp "$m/disk.raw" "$WORK/odd" || fail "odd: disk.raw differs from its source"
[[ $(stat -c %s "$m/disk-flat.vmdk") == $(stat -c %s "$WORK/odd.pad") ]] || fail "odd: disk-flat.vmdk is not whole sectors"
cmp "$m/disk-flat.vmdk" "$WORK/odd.pad" || fail "odd: disk-flat.vmdk is not the disk padded with zeros"
grep -aq "^RW $(( $(stat -c %s "$WORK/odd.pad") / 512 )) VMFS \"disk-flat.vmdk\"$" "$m/disk.vmdk" ||
	fail "odd: disk.vmdk's extent: $(grep -a '^RW' "$m/disk.vmdk")"
third_party "$m/disk.vmdk" "$WORK/odd.pad"
third_party "$m/disk-sparse.vmdk" "$WORK/odd.pad"
qemu-img compare -f raw -F raw "$WORK/odd.pad" "$m/disk.raw" >/dev/null || fail "odd: qemu-img compare disk.raw"
unmount_chain

# ---- 4. writes through the overlay -----------------------------------------------------------
OV=$WORK/overlay
mount_chain "$CHAIN" --overlay "$OV"
s=$MNT/full/disk-sparse.vmdk
size0=$(stat -c %s "$s")
hole=$((15 << 20))          # in the zero last quarter
qemu-io -f vmdk -c "write -P 0xc3 $hole 64k" "$s" >/dev/null || fail "qemu-io write into a hole of the sparse file"
size1=$(stat -c %s "$s")
((size1 == size0 + GRAIN)) || fail "the write into a hole took $((size1 - size0)) bytes, not one grain at the end"
cp "$WORK/full.pad" "$WORK/full.written"
python3 -c 'import sys; f=open(sys.argv[1], "r+b"); f.seek(int(sys.argv[2])); f.write(b"\xc3" * 65536)' \
	"$WORK/full.written" "$hole"
mkdir -p "$WORK/cpw"
cp "$s" "$WORK/cpw/"
third_party "$WORK/cpw/disk-sparse.vmdk" "$WORK/full.written"
unmount_chain

mount_chain "$WORK/oddchain" --overlay "$WORK/oddov"
m=$MNT/odd
last=$(( $(stat -c %s "$WORK/odd.pad") - 512 ))
qemu-io -f vmdk -c "write -P 0x99 $last 512" "$m/disk.vmdk" >/dev/null || fail "qemu-io write of the last sector"
qemu-io -f vmdk -c "read -P 0x99 $last 512" "$m/disk.vmdk" >/dev/null || fail "the last sector did not read back"
[[ $(stat -c %s "$m/disk-flat.vmdk") == $(stat -c %s "$WORK/odd.pad") ]] || fail "odd: disk-flat.vmdk changed size"
cmp <(tail -c 512 "$m/disk-flat.vmdk") <(head -c 512 /dev/zero | tr '\0' '\231') || fail "odd: the write is not in disk-flat.vmdk"
cmp <(tail -c +$((last + 1)) "$m/disk.raw") <(head -c 512 /dev/zero | tr '\0' '\231') ||
	fail "odd: the write is not in disk.raw"
qemu-img check -f vmdk "$m/disk.vmdk" >/dev/null || fail "odd: qemu-img check after the write"
unmount_chain
echo "ok"
