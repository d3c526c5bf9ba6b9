#!/bin/bash
# mount-helper.sh: imgmount as mount(8) runs it.  An installed copy (make install-exec
# DESTDIR=..., bound over /usr/local/sbin in a private mount namespace, as mount(8)
# gives its helpers a fixed PATH) is mounted by `mount -t fuse.imgmount` through
# fuse3's mount.fuse and by a temporary fstab (`mount -T FILE MOUNTPOINT`) with
# passphrase_file=, allow_other, nofail and log=: it daemonizes, logs to the file,
# serves the right bytes (to another user too, with allow_other), and `umount` ends
# it.  A wrong passphrase fails the mount and mounts nothing.  Our own helper script
# (installed where mount.fuse is missing) is run the way mount(8) runs helpers.
if [[ -z ${IMGMOUNT_HELPER_NS:-} ]]; then
	[[ $(id -u) -eq 0 ]] || { echo "SKIP: mount(8) tests need root"; exit 77; }
	command -v unshare >/dev/null && unshare -m --propagation private true 2>/dev/null ||
		{ echo "SKIP: cannot make a private mount namespace (unshare -m)"; exit 77; }
	IMGMOUNT_HELPER_NS=1 exec unshare -m --propagation private "$BASH" "$0" "$@"
fi
. "$(dirname "$0")/mount-lib.sh"
requires mount umount findmnt setpriv make
[[ -x /sbin/mount.fuse || -x /usr/sbin/mount.fuse ]] || skip "fuse3's mount.fuse is not installed"

make_disk_chain 16
INST=$WORK/inst
make -s -C "$top_builddir" install-exec DESTDIR="$INST" MOUNT_HELPER=yes >"$WORK/install.out" 2>&1 ||
	{ cat "$WORK/install.out"; fail "make install-exec failed"; }
BIN=$(cd "$INST" && find . -path '*/bin/imgmount' | head -1)
[[ -n $BIN ]] || fail "no imgmount installed under $INST"
BIN=$INST/${BIN#./}
HELPER=$INST/sbin/mount.fuse.imgmount
[[ -x $HELPER ]] || fail "make install-exec MOUNT_HELPER=yes installed no $HELPER"
# this namespace only: the installed imgmount first in mount(8)'s PATH
mount --bind "$(dirname "$BIN")" /usr/local/sbin || fail "cannot bind the install over /usr/local/sbin"
printf '%s\n' "$IMGCHAIN_PASSPHRASE" >"$WORK/pass"
chmod 600 "$WORK/pass"
unset IMGCHAIN_PASSPHRASE       # only passphrase_file= may unlock the chain now
chmod 755 "$WORK"

# daemon_pid LOG: the pid the daemon logs its lines with
daemon_pid() {
	sed -n 's/.* imgmount\[\([0-9]*\)\] info: .* mounted on .*/\1/p' "$1" | tail -1
}

# check_mounted LOG: a fuse.imgmount mount of $CHAIN on $MNT serving the sources, its
# daemon in the background logging to LOG; remember its pid for cleanup
check_mounted() {
	mountpoint -q "$MNT" || fail "not mounted"
	[[ $(findmnt -n -o FSTYPE "$MNT") == fuse.imgmount ]] || fail "type $(findmnt -n -o FSTYPE "$MNT")"
	[[ $(findmnt -n -o SOURCE "$MNT") == "imgchain:$CHAIN" ]] || fail "source $(findmnt -n -o SOURCE "$MNT")"
	MOUNT_PID=$(daemon_pid "$1")
	[[ -n $MOUNT_PID ]] && kill -0 "$MOUNT_PID" || fail "no daemon logged in $1"
	grep -q "$CHAIN mounted on $MNT: 4 restore points, read-only" "$1" || fail "log line missing"
	for pd in $POINTS; do
		cmp "$MNT/${pd%%:*}/disk.raw" "$WORK/${pd#*:}" || fail "${pd%%:*} differs"
	done
}

# umount_daemon LOG: umount(8), then the daemon ends by itself and says so in LOG
umount_daemon() {
	local i
	umount "$MNT" || fail "umount failed"
	for ((i = 0; i < 200; i++)); do
		kill -0 "$MOUNT_PID" 2>/dev/null || break
		sleep 0.05
	done
	! kill -0 "$MOUNT_PID" 2>/dev/null || fail "imgmount still running after umount"
	MOUNT_PID=
	! mountpoint -q "$MNT" || fail "still mounted"
	grep -q "$MNT: unmounting" "$1" || fail "no unmount line in $1"
	check_sanitizers "$1"
}

# 1. mount -t fuse.imgmount, options the way mount(8) passes them
mount -t fuse.imgmount -o "ro,passphrase_file=$WORK/pass,log=$WORK/d1.log,cache_size=32M" \
	"$CHAIN" "$MNT" 2>"$WORK/mount.err" || { cat "$WORK/mount.err"; fail "mount -t fuse.imgmount failed"; }
[[ ! -s $WORK/mount.err ]] || { cat "$WORK/mount.err"; fail "mount printed something"; }
check_mounted "$WORK/d1.log"
umount_daemon "$WORK/d1.log"

# 2. a temporary fstab: mount by mountpoint; mount-only options (nofail, x-*, defaults)
#    never reach FUSE; allow_other lets another user read
cat >"$WORK/fstab" <<EOF
# imgchain backups
$CHAIN $MNT fuse.imgmount defaults,passphrase_file=$WORK/pass,allow_other,nofail,x-systemd.device-timeout=9,log=$WORK/d2.log 0 0
EOF
mount -T "$WORK/fstab" "$MNT" 2>"$WORK/mount.err" || { cat "$WORK/mount.err"; fail "mount -T fstab failed"; }
check_mounted "$WORK/d2.log"
findmnt -n -o OPTIONS "$MNT" | grep -q allow_other || fail "allow_other not in effect"
got=$(setpriv --reuid=65534 --regid=65534 --clear-groups sha256sum <"$MNT/tue/disk.raw" | cut -d' ' -f1) ||
	fail "another user cannot read with allow_other"
[[ $got == $(sha256sum <"$WORK/d1" | cut -d' ' -f1) ]] || fail "another user read wrong bytes"
umount_daemon "$WORK/d2.log"

# 3. a wrong passphrase: mount fails with imgmount's message, nothing is mounted
printf 'not the passphrase\n' >"$WORK/bad"
if mount -t fuse.imgmount -o "passphrase_file=$WORK/bad" "$CHAIN" "$MNT" 2>"$WORK/mount.err"; then
	fail "mount with a wrong passphrase succeeded"
fi
grep -q "imgmount: .*passphrase" "$WORK/mount.err" || { cat "$WORK/mount.err"; fail "no passphrase message"; }
! mountpoint -q "$MNT" || fail "mounted with a wrong passphrase"
# bad own -o options: usage (2) and a log file that cannot be opened (1), nothing mounted
expect_status() {
	local want=$1 st=0; shift
	"$@" 2>"$WORK/err" || st=$?
	[[ $st -eq $want ]] || { cat "$WORK/err"; fail "$* exited $st, not $want"; }
	! mountpoint -q "$MNT" || fail "$* mounted"
}
expect_status 2 "$BIN" "$CHAIN" "$MNT" -o "passphrase_file=$WORK/pass,cache_size=lots"
grep -q "bad -o cache_size=lots" "$WORK/err" || fail "no message for cache_size=lots"
expect_status 1 "$BIN" "$CHAIN" "$MNT" -o "passphrase_file=$WORK/pass,log=$WORK/no/such/dir/log"
grep -q "log file $WORK/no/such/dir/log: No such file or directory" "$WORK/err" || fail "no message for the log file"

# 4. our helper, run as mount(8) runs /sbin/mount.fuse.TYPE; -f only pretends
grep -q "^imgmount=${BIN#"$INST"}\$" "$HELPER" || fail "helper does not run the installed imgmount"
sed "s|^imgmount=.*|imgmount=$BIN|" "$HELPER" >"$WORK/helper"
"$BASH" "$WORK/helper" "$CHAIN" "$MNT" -f -o "passphrase_file=$WORK/pass" || fail "helper -f failed"
! mountpoint -q "$MNT" || fail "helper -f mounted"
"$BASH" "$WORK/helper" "$CHAIN" "$MNT" -n -o "rw,nofail,_netdev" -o "passphrase_file=$WORK/pass,log=$WORK/d3.log" \
	-t fuse.imgmount || fail "helper failed"
check_mounted "$WORK/d3.log"
umount_daemon "$WORK/d3.log"
echo "ok"
