#!/bin/bash
# cdp-boot.sh: the project's test guest (tests/lib/mkbootdisk.sh) boots twice under qemu (TCG)
# from NBD through the imgcdp filter in front of nbdkit's file plugin, writing to its disk each
# time (GUEST.LOG) and powering off.  `imgrestore --at` the moment between the two boots gives
# the disk as it was then, byte for byte, and that disk boots and shows exactly one earlier
# boot; the moment before the first boot gives the untouched disk.
# Skips (77) only when the kernel cannot be fetched or qemu-system-x86_64 is missing.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/lib/mkbootdisk.sh"
source "$top_srcdir/tests/cdp/cdp-lib.sh"

command -v qemu-system-x86_64 >/dev/null 2>&1 || skip "qemu-system-x86_64 is not installed"
requires mtype
BOOTDISK_CACHE=${BOOTDISK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imgchain-bootdisk}
export BOOTDISK_CACHE
bootdisk_fetch_kernel "$BOOTDISK_CACHE" >/dev/null || skip "cannot fetch the Debian cloud kernel"
export BOOTDISK_TIMEOUT=${BOOTDISK_TIMEOUT:-180}
M="imgchain cdp boot test"

# boot NAME DISK FORMAT N [DRIVE_OPT...]: the guest prints the marker and "ok N"
boot()
{
	local name=$1 disk=$2 format=$3 n=$4 out
	shift 4
	out=$(BOOTDISK_LOG=$TESTDIR/console-$name.log bootdisk_boot "$disk" "$format" "$@") || {
		[[ -f $TESTDIR/console-$name.log ]] && tail -n 30 "$TESTDIR/console-$name.log" >&2
		fail "$name: did not boot"
	}
	[[ $out == "IMGCHAIN-MARKER: $M" ]] || fail "$name: printed '$out'"
	grep -aq "IMGCHAIN-GUEST-WRITE: ok $n\$" "$TESTDIR/console-$name.log" ||
		fail "$name: guest did not report 'ok $n': $(grep -a 'IMGCHAIN-' "$TESTDIR/console-$name.log" | tr '\n' ' ')"
}

bootdisk_create disk "$M" || fail "bootdisk_create failed"
expect_exit 0 imgbackup -q C disk                       # the chain and its key
printf '%s\n' "$IMGCHAIN_PASSPHRASE" >pass
cdp_start
cdp_io flush; cdp_mark 0
boot nbd-1 "$URI" raw 1; cdp_mark 1                     # the guest's shutdown flushed
boot nbd-2 "$URI" raw 2; cdp_mark 2
cdp_stop
! cmp -s snap.0 snap.1 && ! cmp -s snap.1 snap.2 || fail "the guest's boots changed nothing"
for k in 0 1 2; do
	expect_exit 0 imgrestore -P pass --at "${T[$k]}" C "r.$k"
	cmp "r.$k" "snap.$k" || fail "checkpoint $k: the restored disk differs"
done
boot restored-1 r.1 raw 2 snapshot=on                    # it had booted once
boot restored-0 r.0 raw 1 snapshot=on                    # untouched
