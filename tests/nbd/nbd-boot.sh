#!/bin/bash
# nbd-boot.sh: instant recovery on a remote hypervisor: the test disk (tests/lib/mkbootdisk.sh)
# boots under qemu-system-x86_64 (TCG) from the NBD export, as a Proxmox/libvirt host would:
#   1. read-only: points A and B (the default export, the newest) boot with snapshot=on and
#      print their own markers;
#   2. point=pa overlay=DIR: A boots writable and reports its write; after a restart of nbdkit
#      a second boot sees the first one ("ok 2");
#   3. imgmount --overlay on the same DIR shows the guest's two writes in pa/disk.raw, and the
#      chain's files never changed.
# Skips (77) only when the kernel cannot be fetched or qemu-system-x86_64 is missing.
source "$(dirname "$0")/nbd-lib.sh"
source "$top_srcdir/tests/lib/mkbootdisk.sh"

command -v qemu-system-x86_64 >/dev/null 2>&1 || skip "qemu-system-x86_64 is not installed"
requires mtype sha256sum
BOOTDISK_CACHE=${BOOTDISK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imgchain-bootdisk}
export BOOTDISK_CACHE
bootdisk_fetch_kernel "$BOOTDISK_CACHE" >/dev/null || skip "cannot fetch the Debian cloud kernel"
export BOOTDISK_TIMEOUT=${BOOTDISK_TIMEOUT:-120}
OV=$WORK/overlay

MA="imgchain nbd boot: point A"
MB="imgchain nbd boot: point B"
bootdisk_chain "$CHAIN" "$MA" "$MB"
sha_tree "$CHAIN" >"$WORK/chain.sha"

# 1. read-only
start_nbd ro
bootdisk_expect ro-a "$(nbd_uri ro pa)" raw "$MA" "ok 1" snapshot=on
bootdisk_expect ro-default "$(nbd_uri ro)" raw "$MB" "ok 1" snapshot=on
stop_nbd ro

# 2. writable through the overlay, across a restart of nbdkit
start_nbd rw point=pa overlay="$OV"
bootdisk_expect rw-a "$(nbd_uri rw pa)" raw "$MA" "ok 1"
stop_nbd rw
start_nbd rw point=pa overlay="$OV"
bootdisk_expect rw-a-again "$(nbd_uri rw pa)" raw "$MA" "ok 2"
stop_nbd rw

# 3. the same overlay through imgmount
mount_chain "$CHAIN" --overlay "$OV"
cp "$MNT/pa/disk.raw" a-after.raw || fail "cannot copy pa/disk.raw"
unmount_chain
gl=$(bootdisk_read_guest_write a-after.raw) || fail "pa/disk.raw has no GUEST.LOG"
[[ $(tr -d '\r' <<<"$gl" | grep -c "marker $MA") == 2 ]] || fail "pa GUEST.LOG through imgmount: '$gl'"
cmp -n 512 a-after.raw srcA.raw || fail "the MBR changed"
sha_tree "$CHAIN" | cmp -s - "$WORK/chain.sha" || fail "the chain's files changed"
