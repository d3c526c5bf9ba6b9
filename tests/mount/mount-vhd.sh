#!/bin/bash
# mount-vhd.sh: every point of a chain with a branch (and of a chain in 2 MiB blocks whose disk
# is no multiple of 512) shows disk.vhd and disk.vhdx: qemu-img reads both identical to the
# source (-F vpc, -F vhdx), `qemu-img check -f vhdx` is clean, an independent reader
# (mount-vhd-lib.sh) finds every structure and checksum valid, the VHD footer as the
# specification says and the VHDX compact (zero payload blocks in state zero, data blocks one
# after another, nothing else); a plain `cp` of disk.vhdx is that compact file and, standalone,
# still identical to the source; libvhdi (vhdiinfo, vhdimount) and 7-Zip extract byte-identical
# disks; a remount shows identical bytes and the identities are distinct per point.
. "$(dirname "$0")/mount-vhd-lib.sh"
requires qemu-img vhdiinfo vhdimount cmp
# 7-Zip: Debian's 7zip package installs 7zz, p7zip-full 7z
SEVENZ=$(command -v 7zz || command -v 7z) || skip "requires 7zz or 7z"

make_disk_chain 64
# a second chain, of 2 MiB blocks (the VHDX's payload blocks follow them): 5 MiB + 1000 bytes
# (VHD pads to 6 MiB, VHDX declares 5 MiB + 1024); its second 2 MiB block is zero in "one"
ODD=$WORK/odd
mkrandom_bytes "$WORK/o0" $((5 * 1048576 + 1000)) 11
zero_at "$WORK/o0" 2097152 2097152
cp "$WORK/o0" "$WORK/o1"
write_at "$WORK/o1" 2300000 5000 12
imgbackup -q -b 2M -n one "$ODD" "$WORK/o0"
imgbackup -q -n two "$ODD" "$WORK/o1"

mkdir -p "$WORK/vm"
vm_unmount() { ! mountpoint -q "$WORK/vm" || fusermount3 -uz "$WORK/vm"; }
cleanup_fn vm_unmount

# same_disk EXTRACTED SOURCE: the source's bytes, then only zeros
same_disk() {
	local n nonzero
	n=$(stat -c %s "$2")
	cmp -n "$n" "$1" "$2" || return 1
	[[ $(stat -c %s "$1") -ge $n ]] || return 1
	# counted to the end (a grep -q leaving early could SIGPIPE tr, and under pipefail
	# the negated pipeline would then pass on non-zero bytes)
	nonzero=$(tail -c +$((n + 1)) "$1" | tr -d '\0' | wc -c)
	((nonzero == 0)) || return 1
}

# check_point DIR SOURCE LABEL
check_point() {
	local dir=$1 src=$2 l=$3 f out
	ls "$dir" | grep -qx disk.vhd || fail "$l: no disk.vhd"
	ls "$dir" | grep -qx disk.vhdx || fail "$l: no disk.vhdx"
	python3 "$VHDX_PY" check-vhd "$dir/disk.vhd" "$src" || fail "$l: disk.vhd footer"
	python3 "$VHDX_PY" check-vhdx "$dir/disk.vhdx" "$src" || fail "$l: disk.vhdx layout"
	qemu-img info -f vpc "$dir/disk.vhd" >/dev/null || fail "$l: qemu-img info -f vpc"
	qemu-img compare -f raw -F vpc "$src" "$dir/disk.vhd" >/dev/null || fail "$l: disk.vhd differs"
	qemu-img check -f vhdx "$dir/disk.vhdx" >"$WORK/check.out" || fail "$l: qemu-img check: $(cat "$WORK/check.out")"
	qemu-img compare -f raw -F vhdx "$src" "$dir/disk.vhdx" >/dev/null || fail "$l: disk.vhdx differs"
	# a plain cp: the compact file, standalone
	cp "$dir/disk.vhdx" "$WORK/copy.vhdx"
	cp "$dir/disk.vhd" "$WORK/copy.vhd"
	cmp "$WORK/copy.vhdx" "$dir/disk.vhdx" || fail "$l: copy of disk.vhdx differs"
	python3 "$VHDX_PY" check-vhdx "$WORK/copy.vhdx" "$src" || fail "$l: the copy is not compact"
	qemu-img compare -f raw -F vhdx "$src" "$WORK/copy.vhdx" >/dev/null || fail "$l: standalone copy differs"
	qemu-img check -f vhdx "$WORK/copy.vhdx" >/dev/null || fail "$l: standalone copy: qemu-img check"
	# third-party readers
	for f in vhd vhdx; do
		out=$(vhdiinfo "$dir/disk.$f") || fail "$l: vhdiinfo disk.$f"
		grep -q "Media size.*($(stat -c %s "$src" | awk -v f=$f '{
			if (f == "vhd") print int(($1 + 1048575) / 1048576) * 1048576;
			else print int(($1 + 511) / 512) * 512 }') bytes)" <<<"$out" ||
			fail "$l: vhdiinfo disk.$f: $out"
		vhdimount "$WORK/copy.$f" "$WORK/vm" >/dev/null || fail "$l: vhdimount copy.$f"
		same_disk "$WORK/vm/vhdi1" "$src" || fail "$l: vhdimount copy.$f: not the source's bytes"
		fusermount3 -u "$WORK/vm"
		rm -rf "$WORK/7z"
		"$SEVENZ" x -t$f -o"$WORK/7z" "$WORK/copy.$f" >"$WORK/7z.out" 2>&1 ||
			fail "$l: 7-Zip x copy.$f: $(cat "$WORK/7z.out")"
		! grep -qiE 'warning|error' "$WORK/7z.out" || fail "$l: 7-Zip x copy.$f: $(cat "$WORK/7z.out")"
		same_disk "$WORK/7z"/* "$src" || fail "$l: 7-Zip's extraction of copy.$f is not the source"
	done
	python3 "$VHDX_PY" uuid "$dir/disk.vhd" >>"$WORK/uuids"
}

mount_chain "$CHAIN"
: >"$WORK/uuids"
for pd in $POINTS; do
	check_point "$MNT/${pd%%:*}" "$WORK/${pd#*:}" "${pd%%:*}"
	# the disks hold zero MiB blocks: the compact file is smaller than the disk
	(($(stat -c %s "$MNT/${pd%%:*}/disk.vhdx") < 64 << 20)) || fail "${pd%%:*}: disk.vhdx not compact"
done
[[ $(sort -u "$WORK/uuids" | wc -l) -eq 4 ]] || fail "VHD UUIDs are not distinct per point: $(cat "$WORK/uuids")"
sha256sum "$MNT"/*/disk.vhdx "$MNT"/*/disk.vhd >"$WORK/sums"
unmount_chain
mount_chain "$CHAIN"
sha256sum -c --quiet "$WORK/sums" || fail "disk.vhd or disk.vhdx changed across a remount"
unmount_chain

mount_chain "$ODD"
check_point "$MNT/one" "$WORK/o0" one
check_point "$MNT/two" "$WORK/o1" two
[[ $(stat -c %s "$MNT/one/disk.vhdx") == $(((4 + 2 + 2) << 20)) ]] ||
	fail "one/disk.vhdx: $(stat -c %s "$MNT/one/disk.vhdx") bytes, not 4 MiB of metadata + its two 2 MiB data blocks"
unmount_chain
echo "ok"
