#!/bin/bash
# mount-exit-open.sh: imgmount stopped (SIGTERM) while files are still open through it.
# The kernel never sends the release of a file still open at unmount, so the daemon must
# close what is left itself: it exits 0, a write made through a descriptor that is still
# open (never fsynced, never closed) is in the overlay after a remount, and a sanitizer
# build reports no leak (each open handle, disk file or extra file, was lost at exit
# before: CI's asan phase, e03-plants).  No directory is held open: libfuse itself leaks
# its own handle of a directory whose release never came.
. "$(dirname "$0")/mount-lib.sh"

make_disk_chain 64
OV=$WORK/ov
mount_chain "$CHAIN" --overlay "$OV"

msg="written through a descriptor still open at exit"
exec 3<>"$MNT/tue/disk.raw" || fail "open tue/disk.raw for writing"
printf '%s' "$msg" >&3 || fail "write through the open descriptor"
exec 4<"$MNT/wed/disk-flat.vmdk" || fail "open wed/disk-flat.vmdk"
head -c 4096 <&4 >/dev/null || fail "read through the open descriptor"
printf 'extra\n' >"$MNT/tue/note.txt" || fail "create an extra file"
exec 5<"$MNT/tue/note.txt" || fail "open the extra file"
exec 7<"$MNT/branch/disk.vmdk" || fail "open branch/disk.vmdk"

kill -TERM "$MOUNT_PID"
wait "$MOUNT_PID" || fail "imgmount exited with status $? with files open: $(cat "$MOUNT_LOG")"
MOUNT_PID=
exec 3>&- 4<&- 5<&- 7<&-
for ((i = 0; i < 100; i++)); do
	mountpoint -q "$MNT" || break
	sleep 0.1
done
! mountpoint -q "$MNT" || fail "still mounted after the daemon exited"
check_sanitizers "$MOUNT_LOG"

mount_chain "$CHAIN" --overlay "$OV"
got=$(head -c ${#msg} "$MNT/tue/disk.raw")
[[ $got == "$msg" ]] || fail "the write of a descriptor open at exit is lost: '$got'"
cmp -s <(tail -c +$((${#msg} + 1)) "$MNT/tue/disk.raw") <(tail -c +$((${#msg} + 1)) "$WORK/d1") ||
	fail "tue/disk.raw differs beyond the write"
[[ $(cat "$MNT/tue/note.txt") == extra ]] || fail "the extra file is lost"
cmp -s "$MNT/wed/disk.raw" "$WORK/d2" || fail "wed/disk.raw differs from its source"
unmount_chain
echo "files open at exit: closed by the daemon, the write kept, nothing leaked"
