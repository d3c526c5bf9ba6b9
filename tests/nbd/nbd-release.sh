#!/bin/bash
# nbd-release.sh: collaborative release (FORMAT.md 10.7) between the NBD export and imgmount,
# both ways, sharing one overlay directory:
#   1. nbdkit point=tue overlay=DIR owns tue (its record says nbdkit); a second nbdkit
#      without take-over= refuses to start naming it (exit 1)
#   2. imgmount --take-over, opening tue's disk for writing, gets it: the export's later
#      writes fail, new connections are read-only, the mount shows what was written over NBD
#   3. nbdkit take-over=yes starts while imgmount holds tue: the mount commits and turns
#      read-only (EROFS), the export is writable and shows what was written through the mount
#   4. nbdkit take-over=yes without point=: a writable client's open takes tue from that export
source "$(dirname "$0")/nbd-lib.sh"
requires python3 nbdcopy

make_disk_chain 16
OV=$WORK/overlay

# 1. the export owns tue
start_nbd a point=tue overlay="$OV"
apid=$(cat "$WORK/a.pid")
qemu-io -f raw -c 'write -P 0x11 1M 64k' "$(nbd_uri a tue)" >/dev/null || fail "write over NBD"
[[ $(sed -n 's/^server //p' "$OV/tue/owner") == nbdkit && $(sed -n 's/^pid //p' "$OV/tue/owner") == "$apid" ]] ||
	fail "the record does not name the export: $(cat "$OV/tue/owner")"
expect_exit 1 nbdkit -f -U "$WORK/x.sock" "$NBD_PLUGIN" "$CHAIN" passphrase-file="$PASSFILE" point=tue overlay="$OV"
expect_msg "overlay $OV/tue is in use by another process: nbdkit \(host [^,]+, pid $apid\) on NBD export of $CHAIN since .*take-over=yes"

# 2. imgmount takes it over (the export keeps serving, read-only)
mount_chain "$CHAIN" --overlay "$OV" --take-over --take-over-wait 120
mpid=$MOUNT_PID
[[ $(qemu-io -f raw -c 'read -P 0x11 1M 64k' "$(nbd_uri a tue)") != *failed* ]] || fail "NBD readback"
printf 'through the mount' | dd of="$MNT/tue/disk.raw" bs=1 seek=$((2 << 20)) conv=notrunc,fsync status=none ||
	fail "the mount could not take tue over: $(cat "$MOUNT_LOG")"
grep -qE "released by nbdkit \(host [^,]+, pid $apid\)" "$MOUNT_LOG" || fail "mount log: $(cat "$MOUNT_LOG")"
grep -qE "released to imgmount \(host [^,]+, pid $mpid\) on $MNT" "$WORK/a.log" || fail "nbdkit log: $(cat "$WORK/a.log")"
[[ $(sed -n 's/^pid //p' "$OV/tue/owner") == "$mpid" ]] || fail "the record does not name the mount"
cmp <(dd if="$MNT/tue/disk.raw" bs=64k skip=16 count=1 status=none) <(python3 -c 'import sys; sys.stdout.buffer.write(b"\x11" * 65536)') ||
	fail "the mount does not show the write made over NBD"
! qemu-io -f raw -c 'write -P 0x33 3M 4k' "$(nbd_uri a tue)" >"$WORK/w.out" 2>&1 ||
	! grep -q "failed" "$WORK/w.out" || true
grep -qiE "failed|error|read-only|permission" "$WORK/w.out" || fail "a write over NBD after the release: $(cat "$WORK/w.out")"
nbdinfo --json "$(nbd_uri a tue)" >"$WORK/info.json" || fail "nbdinfo after the release"
python3 -c 'import json, sys; e = json.load(open(sys.argv[1]))["exports"][0]; sys.exit(0 if e["is_read_only"] else 1)' \
	"$WORK/info.json" || fail "a new connection is still writable after the release"
[[ $(dd if="$MNT/tue/disk.raw" bs=4k skip=768 count=1 status=none | od -An -tx1 | head -1) != *33* ]] ||
	fail "the export wrote after the release"
stop_nbd a
[[ $(sed -n 's/^pid //p' "$OV/tue/owner") == "$mpid" ]] || fail "the export's exit changed the mount's record"

# 3. an export with take-over=yes starts while the mount holds tue
exec 7<>"$MNT/tue/disk.raw"     # the mount's writer keeps the file open
start_nbd c point=tue overlay="$OV" take-over=yes take-over-wait=120
cpid=$(cat "$WORK/c.pid")
grep -qE "released by imgmount \(host [^,]+, pid $mpid\) on $MNT" "$WORK/c.log" || fail "nbdkit log: $(cat "$WORK/c.log")"
[[ $(sed -n 's/^server //p' "$OV/tue/owner") == nbdkit && $(sed -n 's/^pid //p' "$OV/tue/owner") == "$cpid" ]] ||
	fail "after a daemon's start the record names pid $(sed -n 's/^pid //p' "$OV/tue/owner"), not $cpid"
! printf 'late' | dd of="$MNT/tue/disk.raw" bs=1 seek=$((5 << 20)) conv=notrunc status=none 2>"$WORK/m.err" ||
	fail "the mount could still open tue for writing"
grep -q "Read-only file system" "$WORK/m.err" || fail "$(cat "$WORK/m.err")"
! printf 'late' >&7 2>"$WORK/m7.err" || fail "a write through the mount's open file after the release succeeded"
exec 7>&-
grep -qE "released to nbdkit \(host [^,]+, pid $cpid\)" "$MOUNT_LOG" || fail "mount log: $(cat "$MOUNT_LOG")"
nbdcopy "$(nbd_uri c tue)" "$WORK/c.raw" || fail "nbdcopy"
[[ $(dd if="$WORK/c.raw" bs=1 skip=$((2 << 20)) count=17 status=none) == "through the mount" ]] ||
	fail "the export does not show the mount's write"
qemu-io -f raw -c 'read -P 0x11 1M 64k' -c 'write -P 0x44 4M 64k' -c 'read -P 0x44 4M 64k' "$(nbd_uri c tue)" >"$WORK/c.out" ||
	fail "the new owner cannot write: $(cat "$WORK/c.out")"
! grep -q "Pattern verification failed" "$WORK/c.out" || fail "$(cat "$WORK/c.out")"

# 4. without point=, a writable client's open asks the owner (here the export c)
start_nbd d overlay="$OV" take-over=yes take-over-wait=120
dpid=$(cat "$WORK/d.pid")
qemu-io -f raw -c 'write -P 0x55 6M 64k' -c 'read -P 0x44 4M 64k' "$(nbd_uri d tue)" >"$WORK/d.out" ||
	fail "a writable client of d: $(cat "$WORK/d.out") $(cat "$WORK/d.log")"
! grep -q "Pattern verification failed" "$WORK/d.out" || fail "d does not show c's write"
grep -qE "released by nbdkit \(host [^,]+, pid $cpid\)" "$WORK/d.log" || fail "nbdkit d log: $(cat "$WORK/d.log")"
grep -qE "released to nbdkit \(host [^,]+, pid $dpid\)" "$WORK/c.log" || fail "nbdkit c log: $(cat "$WORK/c.log")"
! qemu-io -f raw -c 'write -P 0x66 7M 4k' "$(nbd_uri c tue)" >"$WORK/c2.out" 2>&1 ||
	grep -qiE "failed|error" "$WORK/c2.out" || fail "c still writes after the release: $(cat "$WORK/c2.out")"
stop_nbd c      # first: it inherited the descriptor 7 on the mount
[[ $(sed -n 's/^pid //p' "$OV/tue/owner") == "$dpid" ]] || fail "c's exit changed d's record"
stop_nbd d
[[ ! -e $OV/tue/owner ]] || fail "the export left its record behind"
unmount_chain
