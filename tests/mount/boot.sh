#!/bin/bash
# boot.sh: instant recovery for real. A bootable disk (tests/lib/mkbootdisk.sh: syslinux, a
# Debian cloud kernel, an initramfs that prints the marker stored on the disk, appends a line to
# GUEST.LOG when the disk is writable, and powers off) is backed up with marker A, changed to
# marker B and backed up again. Through imgmount:
#   1. read-only mount: both points boot under qemu-system-x86_64 (TCG) from disk.vmdk and from
#      disk-sparse.vmdk (format=vmdk, snapshot=on) and each prints its own marker; disk.raw of
#      each point is still its source byte for byte afterwards;
#   2. --overlay DIR: point A boots writable from disk.vmdk and point B from disk-sparse.vmdk
#      (no snapshot); the guests report their write;
#   3. unmount, remount with the same DIR: the guests' writes are back (GUEST.LOG read from a
#      copy of A's disk.raw and of B's disk-sparse.vmdk), a second boot of A sees its first one,
#      and the parts of the disks the guests did not write are the backup's;
#   4. a read-only mount shows the backups as they were, and the sha256 of every chain file
#      never changed (checked after every step).
# The same for disk.vhd (format=vpc) and disk.vhdx (format=vhdx): A boots read-only from disk.vhd
# and writable from disk.vhdx, B read-only from disk.vhdx and writable from disk.vhd; after the
# remount each guest's GUEST.LOG is in that file (qemu-img convert) and the VHDX checks clean.
# Skips (77) only when the kernel cannot be fetched or qemu-system-x86_64 is missing.
source "${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}/tests/lib/functions.sh"
source "$top_srcdir/tests/lib/mkbootdisk.sh"

command -v qemu-system-x86_64 >/dev/null 2>&1 || skip "qemu-system-x86_64 is not installed"
for t in imgbackup imgmount fusermount3 mountpoint qemu-img sha256sum mtype; do
	command -v "$t" >/dev/null 2>&1 || fail "missing tool: $t"
done
[[ -c /dev/fuse ]] || fail "/dev/fuse is missing"
BOOTDISK_CACHE=${BOOTDISK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imgchain-bootdisk}
export BOOTDISK_CACHE
bootdisk_fetch_kernel "$BOOTDISK_CACHE" >/dev/null || skip "cannot fetch the Debian cloud kernel"
export BOOTDISK_TIMEOUT=${BOOTDISK_TIMEOUT:-90}

T0=$SECONDS
CHAIN=$TESTDIR/chain
OV=$TESTDIR/overlay
mkdir -p "$MNT"

check_chain() {
	sha_tree "$CHAIN" >"$TESTDIR/chain.now"
	cmp -s "$TESTDIR/chain.sha" "$TESTDIR/chain.now" ||
		{ diff "$TESTDIR/chain.sha" "$TESTDIR/chain.now" >&2 || true; fail "chain files changed ($1)"; }
}

# boot NAME POINT FILE EXPECTED_MARKER EXPECTED_WRITE [DRIVE_OPT...]: boot $MNT/POINT/FILE (a
# vmdk, or by its extension vpc or vhdx), check the guest printed EXPECTED_MARKER and "IMGCHAIN-GUEST-WRITE: EXPECTED_WRITE".
boot() {
	local name=$1 point=$2 file=$3 marker=$4 write=$5 out s=$SECONDS fmt=vmdk
	shift 5
	case $file in *.vhd) fmt=vpc ;; *.vhdx) fmt=vhdx ;; esac
	out=$(BOOTDISK_LOG=$TESTDIR/console-$name.log bootdisk_boot "$MNT/$point/$file" $fmt "$@") || {
		[[ -f $TESTDIR/console-$name.log ]] && tail -n 30 "$TESTDIR/console-$name.log" >&2
		fail "$name: $point/$file did not boot"
	}
	[[ $out == "IMGCHAIN-MARKER: $marker" ]] || fail "$name: $point/$file printed '$out', expected marker '$marker'"
	grep -aq "IMGCHAIN-GUEST-WRITE: $write\$" "$TESTDIR/console-$name.log" ||
		fail "$name: guest did not report 'IMGCHAIN-GUEST-WRITE: $write': $(grep -a 'IMGCHAIN-' "$TESTDIR/console-$name.log" | tr '\n' ' ')"
	! grep -aq 'IMGCHAIN-ERROR' "$TESTDIR/console-$name.log" ||
		fail "$name: guest error: $(grep -a IMGCHAIN-ERROR "$TESTDIR/console-$name.log" | tr '\n' ' ')"
	echo "boot.sh: $name: $point/$file ${*:-writable} -> $out ($((SECONDS - s)) s)"
}

MA="imgchain boot test: point A"
MB="imgchain boot test: point B"

# ---- the chain: A, then B -------------------------------------------------------------------
bootdisk_create src.raw "$MA" || fail "bootdisk_create failed"
cp --sparse=always src.raw srcA.raw
imgbackup -q -n pa "$CHAIN" src.raw || fail "imgbackup of point A failed"
bootdisk_set_marker src.raw "$MB" || fail "bootdisk_set_marker failed"
cmp -s src.raw srcA.raw && fail "the marker change did not change the disk"
cp --sparse=always src.raw srcB.raw
imgbackup -q -n pb "$CHAIN" src.raw || fail "imgbackup of point B failed"
rm -f src.raw
sha_tree "$CHAIN" >"$TESTDIR/chain.sha"
[[ -s $TESTDIR/chain.sha ]] || fail "the chain has no files"

# ---- 1. read-only mount, snapshot=on boots of both points, both VMDK flavours ---------------
mount_chain "$CHAIN"
[[ -d $MNT/pa && -d $MNT/pb ]] || fail "mount lists: $(ls "$MNT" | tr '\n' ' ')"
[[ $(readlink "$MNT/latest") == pb ]] || fail "latest -> $(readlink "$MNT/latest")"
boot ro-a-vmdk pa disk.vmdk "$MA" "ok 1" snapshot=on
boot ro-a-sparse pa disk-sparse.vmdk "$MA" "ok 1" snapshot=on
boot ro-b-vmdk pb disk.vmdk "$MB" "ok 1" snapshot=on
boot ro-b-sparse pb disk-sparse.vmdk "$MB" "ok 1" snapshot=on
boot ro-a-vhd pa disk.vhd "$MA" "ok 1" snapshot=on
boot ro-b-vhdx pb disk.vhdx "$MB" "ok 1" snapshot=on
# The guests wrote into qemu's temporary snapshot only.
cmp "$MNT/pa/disk.raw" srcA.raw || fail "pa/disk.raw differs from point A's source after the boots"
cmp "$MNT/pb/disk.raw" srcB.raw || fail "pb/disk.raw differs from point B's source after the boots"
unmount_chain
check_chain "read-only boots"

# ---- 2. writable boots through --overlay ------------------------------------------------------
mount_chain "$CHAIN" --overlay "$OV"
boot rw-a-vmdk pa disk.vmdk "$MA" "ok 1"
boot rw-b-sparse pb disk-sparse.vmdk "$MB" "ok 1"
boot rw-a-vhdx pa disk.vhdx "$MA" "ok 1"
boot rw-b-vhd pb disk.vhd "$MB" "ok 1"
unmount_chain
check_chain "writable boots"
[[ -n $(find "$OV" -type f -size +0 -print -quit) ]] || fail "the overlay directory $OV holds no data"

# ---- 3. remount with the same overlay: the guests' writes are back ---------------------------
mount_chain "$CHAIN" --overlay "$OV"
cp "$MNT/pa/disk.raw" a-after.raw || fail "cannot copy pa/disk.raw"
gl=$(bootdisk_read_guest_write a-after.raw) || fail "pa/disk.raw has no GUEST.LOG after the remount"
[[ $(tr -d '\r' <<<"$gl") == "boot 1 marker $MA" ]] || fail "pa GUEST.LOG: '$gl'"
# disk-flat.vmdk is the same disk as disk.raw
cmp "$MNT/pa/disk-flat.vmdk" a-after.raw || fail "pa/disk-flat.vmdk differs from pa/disk.raw under the overlay"
qemu-img convert -f vmdk -O raw "$MNT/pb/disk-sparse.vmdk" b-after.raw || fail "cannot convert pb/disk-sparse.vmdk"
gl=$(bootdisk_read_guest_write b-after.raw) || fail "pb/disk-sparse.vmdk has no GUEST.LOG after the remount"
[[ $(tr -d '\r' <<<"$gl") == "boot 1 marker $MB" ]] || fail "pb GUEST.LOG: '$gl'"
qemu-img check -f vmdk "$MNT/pb/disk-sparse.vmdk" >/dev/null || fail "qemu-img check of the written pb/disk-sparse.vmdk"
# Outside the FAT partition (MBR, syslinux boot code, the 1 MiB tail) the guest wrote nothing:
# those bytes are still the backup's.
fat_end=$((64 * 1048576 - 1048576))
for f in a-after.raw:srcA.raw b-after.raw:srcB.raw; do
	cmp -n 512 "${f%%:*}" "${f#*:}" || fail "${f%%:*}: the MBR changed"
	cmp -i "$fat_end:$fat_end" "${f%%:*}" "${f#*:}" || fail "${f%%:*}: the disk tail changed"
done
cmp -s a-after.raw srcA.raw && fail "pa/disk.raw shows no write at all"
qemu-img check -f vhdx "$MNT/pa/disk.vhdx" >/dev/null || fail "qemu-img check of the written pa/disk.vhdx"
# hv_log FILE FORMAT MARKER: the guest's write is in that file of the mount
hv_log() {
	qemu-img convert -f "$2" -O raw "$MNT/$1" hv-after.raw || fail "cannot convert $1"
	gl=$(bootdisk_read_guest_write hv-after.raw) || fail "$1 has no GUEST.LOG after the remount"
	[[ $(tr -d '\r' <<<"$gl") == "boot 1 marker $3" ]] || fail "$1 GUEST.LOG: '$gl'"
	rm -f hv-after.raw
}
hv_log pa/disk.vhdx vhdx "$MA"
hv_log pb/disk.vhd vpc "$MB"
# the guest sees its earlier write: its log now gets a second line
boot rw-a-again pa disk.vmdk "$MA" "ok 2"
unmount_chain
check_chain "remount"

# ---- 4. read-only again: the backups as they were ------------------------------------------
mount_chain "$CHAIN"
cmp "$MNT/pa/disk.raw" srcA.raw || fail "read-only mount: pa/disk.raw is not point A's backup"
cmp "$MNT/pb/disk.raw" srcB.raw || fail "read-only mount: pb/disk.raw is not point B's backup"
qemu-img compare -f raw -F vmdk srcB.raw "$MNT/pb/disk-sparse.vmdk" >/dev/null ||
	fail "read-only mount: pb/disk-sparse.vmdk is not point B's backup"
unmount_chain
check_chain "final"
echo "ok ($((SECONDS - T0)) s)"
