#!/bin/bash
# selftest_disks.sh: the test-disk helpers (mkdisk.sh, mkbootdisk.sh) make what other tests rely on.
#
# Data disk: a 64 MiB disk mutated twice stays fsck-clean, each mutation changes 0.1-5% of the
# 64 KiB blocks including one newly all-zero block, mutations are reproducible, and
# mkdisk_changed_ranges reports exactly the blocks that cmp finds different.
# Boot disk: boots under qemu (TCG) showing its marker, shows a new marker after
# bootdisk_set_marker, leaves the disk alone with snapshot=on, and records writable boots.
# Exit 77 (skip) when a tool is missing or no kernel can be had; the reason goes to stderr.
source "${top_srcdir:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}/tests/lib/functions.sh"
# shellcheck source=tests/lib/mkdisk.sh
. "$top_srcdir/tests/lib/mkdisk.sh"
# shellcheck source=tests/lib/mkbootdisk.sh
. "$top_srcdir/tests/lib/mkbootdisk.sh"

requires sfdisk mkfs.ext4 debugfs e2fsck mkfs.fat fsck.fat mcopy mdir python3 cmp awk

tmp=$TESTDIR

BLOCK=65536

# Indices of the BLOCK-sized blocks where OLD and NEW differ, found by cmp -l: slow, but shares
# nothing with mkdisk_changed_ranges, which it checks.
cmp_blocks() {
	{ cmp -l "$1" "$2" || true; } | awk -v b=$BLOCK '{ print int(($1 - 1) / b) }' | uniq
}

# The block indices that mkdisk_changed_ranges reports, one per line; fails on misalignment.
range_blocks() {
	mkdisk_changed_ranges "$1" "$2" | awk -v b=$BLOCK '
		$1 % b != 0 { print "misaligned range: " $0 > "/dev/stderr"; exit 1 }
		{ for (i = $1 / b; i * b < $1 + $2; i++) print i }'
}

block_is_zero() {
	dd if="$1" bs=$BLOCK skip="$2" count=1 status=none | cmp -s -n $BLOCK - /dev/zero
}

# Checks one mutation OLD -> NEW.
check_mutation() {
	local old=$1 new=$2 nblocks changed zeroed=0 i
	changed=$(cmp_blocks "$old" "$new")
	nblocks=$(($(stat -c %s "$new") / BLOCK))
	local count
	count=$(grep -c . <<<"$changed" || true)
	awk -v c="$count" -v n="$nblocks" 'BEGIN { exit !(c >= 0.001 * n && c <= 0.05 * n) }' \
		|| fail "$new: $count of $nblocks blocks changed, outside 0.1%-5%"
	for i in $changed; do
		if block_is_zero "$new" "$i" && ! block_is_zero "$old" "$i"; then
			zeroed=$((zeroed + 1))
		fi
	done
	((zeroed >= 1)) || fail "$new: no block became all-zero"
	diff <(echo "$changed") <(range_blocks "$old" "$new") >"$tmp/ranges.diff" \
		|| fail "$new: mkdisk_changed_ranges disagrees with cmp: $(head -c 400 "$tmp/ranges.diff")"
	mkdisk_fsck "$new" || fail "$new: file systems not clean after mutation"
	echo "ok: $(basename "$new"): $count/$nblocks blocks changed, $zeroed newly zero"
}

# --- data disk ---------------------------------------------------------------------------------

start=$SECONDS
mkdisk_create "$tmp/d0.img" 64 || fail "mkdisk_create"
echo "ok: 64 MiB disk created in $((SECONDS - start)) s"
[[ $(stat -c %s "$tmp/d0.img") == $((64 << 20)) ]] || fail "d0.img is not 64 MiB"
mkdisk_fsck "$tmp/d0.img" || fail "fresh disk not clean"

layout=$(mkdisk_layout "$tmp/d0.img")
grep -q '^1 [0-9]* [0-9]* c$' <<<"$layout" || fail "no FAT32 partition first: $layout"
grep -q '^2 [0-9]* [0-9]* 83$' <<<"$layout" || fail "no ext4 partition second: $layout"
read -r _ tail_off tail_size < <(grep '^tail ' <<<"$layout")
((tail_size > 0)) || fail "no unpartitioned space at the end"
cmp -s -n "$tail_size" -i "$tail_off:0" "$tmp/d0.img" /dev/zero || fail "the tail is not zero"
ext_off=$(awk '$4 == "83" { print $2 }' <<<"$layout")
fat_off=$(awk '$4 == "c" { print $2 }' <<<"$layout")
debugfs -R 'stat /var/lib/app/db.bin' "$tmp/d0.img?offset=$ext_off" 2>/dev/null | grep -q 'Size: ' \
	|| fail "ext4 partition lacks /var/lib/app/db.bin"
nreal=$(debugfs -R 'ls -p /usr/bin' "$tmp/d0.img?offset=$ext_off" 2>/dev/null | grep -c '^/' || true)
((nreal > 10)) || fail "ext4 partition has only $nreal entries in /usr/bin"
MTOOLS_SKIP_CHECK=1 mdir -i "$tmp/d0.img@@$fat_off" ::/readme.txt >/dev/null \
	|| fail "FAT partition lacks readme.txt"

cp --sparse=always "$tmp/d0.img" "$tmp/d1.img"
start=$SECONDS
mkdisk_mutate "$tmp/d1.img" 1 || fail "mkdisk_mutate step 1"
echo "ok: mutation in $((SECONDS - start)) s"
check_mutation "$tmp/d0.img" "$tmp/d1.img"
cp --sparse=always "$tmp/d1.img" "$tmp/d2.img"
mkdisk_mutate "$tmp/d2.img" 2 || fail "mkdisk_mutate step 2"
check_mutation "$tmp/d1.img" "$tmp/d2.img"

cp --sparse=always "$tmp/d0.img" "$tmp/d1-again.img"
mkdisk_mutate "$tmp/d1-again.img" 1 || fail "mkdisk_mutate step 1, again"
cmp -s "$tmp/d1.img" "$tmp/d1-again.img" || fail "step 1 is not reproducible"
echo "ok: mutations are reproducible"

# Identical disks: no ranges. Disks of different sizes: the extra zeros do not count.
[[ -z $(mkdisk_changed_ranges "$tmp/d1.img" "$tmp/d1-again.img") ]] || fail "ranges on equal disks"
truncate -s $((65 << 20)) "$tmp/d1-again.img"
diff <(mkdisk_changed_ranges "$tmp/d0.img" "$tmp/d1.img") \
	<(mkdisk_changed_ranges "$tmp/d0.img" "$tmp/d1-again.img") >/dev/null \
	|| fail "zeros past the end of the shorter disk were reported"
rm -f "$tmp"/d*.img

# Offsets past 2 GiB (mawk's %d stops at 2^31 - 1: a mutation of a 6 GiB disk wrote its "tail"
# bytes into the ext4 and left it unclean). Only the partition table: a sparse 6 GiB file.
truncate -s 6G "$tmp/big.img"
printf 'label: dos\nstart=2048, size=786432, type=c\nstart=788480, size=11401216, type=83\n' |
	sfdisk --no-reread --no-tell-kernel -q "$tmp/big.img" >/dev/null || fail "sfdisk of big.img"
layout=$(mkdisk_layout "$tmp/big.img")
[[ $layout == $'1 1048576 402653184 c\n2 403701760 5837422592 83\ntail 6241124352 201326592' ]] \
	|| fail "layout of a 6 GiB disk: $layout"
rm -f "$tmp/big.img"
echo "ok: layout of a 6 GiB disk"

# --- boot disk ---------------------------------------------------------------------------------

requires qemu-system-x86_64 busybox syslinux cpio gzip timeout flock mtype
[[ -r /usr/lib/syslinux/mbr/mbr.bin ]] || skip "syslinux-common is not installed (mbr.bin)"
cache=${BOOTDISK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imgchain-bootdisk}
bootdisk_fetch_kernel "$cache" >/dev/null || skip "no Debian cloud kernel could be fetched into $cache"
export BOOTDISK_CACHE=$cache

boot_expect() {
	local disk=$1 marker=$2 line t0=$SECONDS
	shift 2
	line=$(BOOTDISK_LOG="$tmp/console.log" bootdisk_boot "$disk" raw "$@") \
		|| fail "boot of $disk did not print a marker (console in $tmp/console.log)"
	[[ $line == "IMGCHAIN-MARKER: $marker" ]] || fail "expected marker '$marker', got '$line'"
	echo "ok: booted ${*:-writable} in $((SECONDS - t0)) s: $line"
}

bootdisk_create "$tmp/boot.img" "first-$$" || fail "bootdisk_create"
boot_expect "$tmp/boot.img" "first-$$"

cp --sparse=always "$tmp/boot.img" "$tmp/boot.before"
bootdisk_set_marker "$tmp/boot.img" "second marker" || fail "bootdisk_set_marker"
nchanged=$(mkdisk_changed_ranges "$tmp/boot.before" "$tmp/boot.img" | awk -v b=$BLOCK '{ n += $2 / b } END { print n + 0 }')
((nchanged >= 1 && nchanged <= 8)) || fail "bootdisk_set_marker changed $nchanged blocks"

cp --sparse=always "$tmp/boot.img" "$tmp/boot.before"
boot_expect "$tmp/boot.img" "second marker" snapshot=on
cmp -s "$tmp/boot.before" "$tmp/boot.img" || fail "a snapshot=on boot changed the disk"
boot_expect "$tmp/boot.img" "second marker"

log=$(bootdisk_read_guest_write "$tmp/boot.img") || fail "the guest wrote nothing"
expected=$(printf 'boot 1 marker first-%s\nboot 2 marker second marker' "$$")
[[ $log == "$expected" ]] || fail "GUEST.LOG is '$log', expected '$expected'"
echo "ok: guest writes survived"
echo "PASS"
