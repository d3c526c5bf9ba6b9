#!/bin/bash
# mount-errors.sh: a wrong passphrase exits 3 before anything is mounted; a missing,
# non-directory or busy mountpoint and a missing chain are clear errors (exit 1); the
# daemonized mount logs to syslog and stops cleanly on SIGTERM and on SIGINT.
. "$(dirname "$0")/mount-lib.sh"

make_disk_chain 64

rc=0
IMGCHAIN_PASSPHRASE=wrong imgmount "$CHAIN" "$MNT" 2>"$WORK/err" || rc=$?
((rc == 3)) || fail "wrong passphrase: exit $rc, want 3"
grep -qi passphrase "$WORK/err" || fail "wrong passphrase message: $(cat "$WORK/err")"
! mountpoint -q "$MNT" || fail "mounted with a wrong passphrase"

rc=0; imgmount "$CHAIN" "$WORK/nowhere" 2>"$WORK/err" || rc=$?
((rc == 1)) && grep -q nowhere "$WORK/err" || fail "missing mountpoint: exit $rc: $(cat "$WORK/err")"
touch "$WORK/file"
rc=0; imgmount "$CHAIN" "$WORK/file" 2>"$WORK/err" || rc=$?
((rc == 1)) && grep -q "not a directory" "$WORK/err" || fail "file as mountpoint: exit $rc: $(cat "$WORK/err")"
rc=0; imgmount "$WORK/nochain" "$MNT" 2>"$WORK/err" || rc=$?
((rc == 1)) || fail "missing chain: exit $rc"
rc=0; imgmount --cache-size lots "$CHAIN" "$MNT" 2>/dev/null || rc=$?
((rc == 2)) || fail "bad option: exit $rc, want 2"

# daemonized: returns once mounted; a second mount on it is refused as busy
imgmount "$CHAIN" "$MNT" || fail "daemon mode exit $?"
mountpoint -q "$MNT" || fail "not mounted after the daemon returned"
cmp "$MNT/mon/disk.raw" "$WORK/d0" || fail "daemonized mount reads wrong"
rc=0; imgmount "$CHAIN" "$MNT" 2>"$WORK/err" || rc=$?
((rc == 1)) && grep -q busy "$WORK/err" || fail "busy mountpoint: exit $rc: $(cat "$WORK/err")"
pid=$(pgrep -f "imgmount $CHAIN $MNT" | head -1)
[[ -n $pid ]] || fail "daemon not found"
kill -TERM "$pid"
for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
! kill -0 "$pid" 2>/dev/null || fail "daemon still running after SIGTERM"
! mountpoint -q "$MNT" || fail "still mounted after SIGTERM"

# foreground, SIGINT
mount_chain "$CHAIN"
kill -INT "$MOUNT_PID"
wait "$MOUNT_PID" || fail "SIGINT: exit $?"
MOUNT_PID=
! mountpoint -q "$MNT" || fail "still mounted after SIGINT"
echo "ok"
