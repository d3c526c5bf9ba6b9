#!/bin/bash
# promote-release.sh: a promoted disk is never handed over (issue 15 sections 3 and 4
# together).  Once a disk is promoted (copying or switched) its overlay is no longer the
# disk of record, so a release to another server would let two processes write DEST (the
# old owner's mirror or copier, the newcomer's copy) or let the newcomer serve the stale
# overlay.  The owner refuses such a request: the newcomer (nbdkit take-over=yes) gives up
# with an error naming the owner, the mount keeps writing DEST, and DEST is unchanged by
# the attempt.
. "$(dirname "$0")/promote-lib.sh"
requires nbdkit qemu-img qemu-io
PLUGIN=$top_builddir/nbdkit-imgchain-plugin.so
[[ -f $PLUGIN ]] || skip "no nbdkit plugin built"
printf '%s\n' "$IMGCHAIN_PASSPHRASE" >"$WORK/passphrase"

mount_chain "$CHAIN" --overlay "$OV"
printf 'before the promote' | dd of="$MNT/tue/disk.raw" bs=1 seek=4096 conv=notrunc status=none
imgpromote -q "$MNT" tue "$DEST" || fail "imgpromote"
# after the switch: a write goes to DEST alone
printf 'after the switch!' | dd of="$MNT/tue/disk.raw" bs=1 seek=8192 conv=notrunc,fsync status=none
cmp "$MNT/tue/disk.raw" "$DEST" || fail "the mount differs from DEST"
destsum=$(sha256sum <"$DEST")

# a newcomer asks for the overlay: refused, the owner keeps it
expect_exit 1 timeout 60 nbdkit -f -U "$WORK/nbd.sock" "$PLUGIN" "$CHAIN" point=tue overlay="$OV" \
	take-over=yes take-over-wait=3 passphrase-file="$WORK/passphrase"
expect_msg "did not release it"
[[ $(sha256sum <"$DEST") == "$destsum" ]] || fail "DEST changed during the refused take-over"
grep -q "promoted" "$MOUNT_LOG" || fail "the mount's log does not say why it kept the overlay"
printf 'still the owner' | dd of="$MNT/tue/disk.raw" bs=1 seek=12288 conv=notrunc,fsync status=none ||
	fail "the mount no longer writes after a refused take-over"
cmp "$MNT/tue/disk.raw" "$DEST" || fail "the mount differs from DEST after the refused take-over"
unmount_chain

# the owner gone, a new server serves DEST (not the overlay)
start_nbd
qemu-img convert -f raw -O raw "nbd+unix:///?socket=$WORK/nbd.sock" "$WORK/nbd.out" ||
	fail "qemu-img convert from the export"
cmp "$WORK/nbd.out" "$DEST" || fail "the NBD export does not serve DEST"
kill "$npid"
wait "$npid" || true
echo "a promoted disk is kept by its owner and served from DEST after it"
