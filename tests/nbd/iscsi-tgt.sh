#!/bin/bash
# iscsi-tgt.sh: the iSCSI path for initiators that speak no NBD (ESXi, Hyper-V, Windows):
# Debian's userspace target tgt serves points' disk.raw from a read-only imgmount, one LUN per
# point, and qemu's iSCSI client (libiscsi, qemu-block-extra) checks it:
#   1. `qemu-img compare` of each LUN (iscsi:// URI) against the point's source: byte for byte;
#   2. the target reports the LUNs read-only (the mount is read-only, tgt falls back);
#   3. the test disk (tests/lib/mkbootdisk.sh) boots over iSCSI (snapshot=on) and prints the
#      point's marker.
# tgtd runs in the foreground on a private portal and control port, stopped by the test.
# Skips (77) when tgt, qemu's iSCSI driver, qemu-system-x86_64 or the kernel is missing.
source "$(dirname "${BASH_SOURCE[0]}")/../mount/mount-lib.sh"
source "$top_srcdir/tests/lib/mkbootdisk.sh"
requires tgtd tgtadm iscsi-ls qemu-img mtype
requires_root
[[ -e /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so ]] || ls /usr/lib/*/qemu/block-iscsi.so >/dev/null 2>&1 ||
	skip "qemu's iSCSI driver (qemu-block-extra) is not installed"
command -v qemu-system-x86_64 >/dev/null 2>&1 || skip "qemu-system-x86_64 is not installed"
BOOTDISK_CACHE=${BOOTDISK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/imgchain-bootdisk}
export BOOTDISK_CACHE
bootdisk_fetch_kernel "$BOOTDISK_CACHE" >/dev/null || skip "cannot fetch the Debian cloud kernel"
export BOOTDISK_TIMEOUT=${BOOTDISK_TIMEOUT:-120}

MA="imgchain iscsi boot: point A"
MB="imgchain iscsi boot: point B"
bootdisk_chain "$CHAIN" "$MA" "$MB"
mount_chain "$CHAIN"

CTL=$((1000 + $$ % 8000))
PORT=$((20000 + $$ % 20000))
IQN=iqn.2026-12.org.imgchain.test:chain
tgtd -f -C "$CTL" --iscsi portal=127.0.0.1:$PORT >"$WORK/tgtd.log" 2>&1 &
TGT_PID=$!
stop_tgt() {
	tgtadm -C "$CTL" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1
	tgtadm -C "$CTL" --lld iscsi --op delete --mode system >/dev/null 2>&1
	local i
	for ((i = 0; i < 100; i++)); do kill -0 "$TGT_PID" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$TGT_PID" 2>/dev/null || true
	wait "$TGT_PID" 2>/dev/null || true
}
cleanup_fn stop_tgt
tgt() { tgtadm -C "$CTL" --lld iscsi "$@" || fail "tgtadm $*: $(tail -3 "$WORK/tgtd.log")"; }
for ((i = 0; i < 100; i++)); do
	tgtadm -C "$CTL" --lld iscsi --op show --mode target >/dev/null 2>&1 && break
	kill -0 "$TGT_PID" 2>/dev/null || fail "tgtd died: $(cat "$WORK/tgtd.log")"
	sleep 0.1
done
tgt --op new --mode target --tid 1 -T "$IQN"
tgt --op new --mode logicalunit --tid 1 --lun 1 -b "$MNT/pa/disk.raw"
tgt --op new --mode logicalunit --tid 1 --lun 2 -b "$MNT/pb/disk.raw"
tgt --op bind --mode target --tid 1 -I 127.0.0.1

# 1. byte for byte through libiscsi
iscsi-ls "iscsi://127.0.0.1:$PORT" | grep -qF "$IQN" || fail "iscsi-ls does not list $IQN"
qemu-img compare -f raw -F raw "iscsi://127.0.0.1:$PORT/$IQN/1" srcA.raw >/dev/null || fail "LUN 1 (pa) differs from its source"
qemu-img compare -f raw -F raw "iscsi://127.0.0.1:$PORT/$IQN/2" srcB.raw >/dev/null || fail "LUN 2 (pb) differs from its source"
# 2. read-only LUNs
[[ $(tgtadm -C "$CTL" --lld iscsi --op show --mode target | grep -c 'Readonly: Yes') -ge 2 ]] ||
	fail "the LUNs are not read-only"
# 3. boot over iSCSI
bootdisk_expect iscsi-pb "iscsi://127.0.0.1:$PORT/$IQN/2" raw "$MB" "" snapshot=on
stop_tgt
unmount_chain
