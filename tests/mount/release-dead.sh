#!/bin/bash
# release-dead.sh: the hand-over's failure cases (FORMAT.md 10.7), mounts in mount namespaces
# of their own sharing one overlay directory:
#   1. an owner killed (SIGKILL) leaves its record and a free lock: the next mount takes the
#      overlay without asking, says the owner left, replaces the record, keeps its synced data
#   2. planted records with the lock free (garbage, 64 KiB, a FIFO, a symlink) are replaced
#      with a warning, nothing followed or hung on
#   3. a planted record while the owner holds the lock: a newcomer is refused cleanly (the
#      damage named); a planted garbage request is dropped by the owner, which keeps writing
#   4. an owner that does not answer (SIGSTOP): --take-over-wait bounds the wait, the error
#      names the owner, the request is withdrawn; the owner, resumed, still writes
. "$(dirname "$0")/release-lib.sh"
requires python3 cmp mkfifo

make_disk_chain 16
OV=$WORK/overlay

write_blk() # NAME POINT BLOCK BYTE: one synced 4 KiB block of BYTE
{
	python3 -c 'import sys; sys.stdout.buffer.write(bytes([int(sys.argv[1])]) * 4096)' "$4" |
		in_ns "$1" dd of="$NSMNT/$2/disk.raw" bs=4096 seek="$3" conv=notrunc,fsync status=none
}
read_blk() # NAME POINT BLOCK: the block's first byte, decimal
{
	in_ns "$1" dd if="$NSMNT/$2/disk.raw" bs=4096 skip="$3" count=1 status=none |
		python3 -c 'import sys; print(sys.stdin.buffer.read(1)[0])'
}

# 1. a dead owner
ns_mount a --overlay "$OV"
apid=${NS_PID[a]}
write_blk a tue 10 17
[[ $(owner_field "$OV/tue" pid) == "$apid" ]] || fail "no record of A"
kill -KILL "$apid"
wait "$apid" 2>/dev/null || true
NS_PID[a]=
[[ $(owner_field "$OV/tue" pid) == "$apid" ]] || fail "the dead owner's record is gone already"
ns_mount b --overlay "$OV"
bpid=${NS_PID[b]}
write_blk b tue 11 18 || fail "the overlay of a dead owner could not be taken: $(cat "$WORK/b.log")"
grep -qE "overlay $OV/tue: its previous owner imgmount \(host [^,]+, pid $apid\) on $NSMNT since .* left without releasing it \(lock free\): record replaced" "$WORK/b.log" ||
	fail "B's log: $(cat "$WORK/b.log")"
[[ $(owner_field "$OV/tue" pid) == "$bpid" ]] || fail "the record was not replaced: $(cat "$OV/tue/owner")"
[[ $(read_blk b tue 10) == 17 && $(read_blk b tue 11) == 18 ]] || fail "data of the dead owner lost"

# 2. planted records, lock free (wed, mon, branch are nobody's)
python3 -c 'import os; open("'"$OV"'/g", "wb").write(os.urandom(3000))'
mkdir -p "$OV/wed" "$OV/mon" "$OV/branch"
mv "$OV/g" "$OV/wed/owner"
write_blk b wed 3 5 || fail "a garbage record made wed unwritable: $(cat "$WORK/b.log")"
grep -qE "$OV/wed/owner: damaged owner record: .*: replaced" "$WORK/b.log" || fail "no word of the garbage: $(cat "$WORK/b.log")"
[[ $(owner_field "$OV/wed" pid) == "$bpid" ]] || fail "garbage record not replaced"
head -c 65536 /dev/zero | tr '\0' 'x' >"$OV/mon/owner"
write_blk b mon 3 6 || fail "a 64 KiB record made mon unwritable"
grep -qE "$OV/mon/owner: damaged owner record: larger than 4096 bytes: replaced" "$WORK/b.log" || fail "no word of the big record"
mkfifo "$OV/branch/owner"
timeout 60 bash -c "$(declare -f write_blk in_ns); NS_PID=([b]=$bpid); NSMNT=$NSMNT; write_blk b branch 3 7" ||
	fail "a FIFO as the record hung or failed the open: $(cat "$WORK/b.log")"
grep -qE "$OV/branch/owner: not a regular file \(FIFO\): refused: replaced" "$WORK/b.log" || fail "no word of the FIFO: $(cat "$WORK/b.log")"
[[ -f $OV/branch/owner && ! -p $OV/branch/owner ]] || fail "the FIFO is still the record"
ns_stop b
for p in tue wed mon branch; do
	[[ ! -e $OV/$p/owner ]] || fail "a clean stop left $p's record"
done
# a symlink as the record is never followed (its target stays as it was)
echo precious >"$WORK/target"
ln -s "$WORK/target" "$OV/tue/owner"
ns_mount a --overlay "$OV"
apid=${NS_PID[a]}
write_blk a tue 12 19
[[ $(cat "$WORK/target") == precious && ! -L $OV/tue/owner ]] || fail "the symlinked record was followed"
[[ $(owner_field "$OV/tue" pid) == "$apid" ]] || fail "no record of A"

# 3. planted while A holds tue: a newcomer sees the damage named, A is not disturbed
head -c 5000 /dev/urandom >"$OV/tue/owner"
ns_mount c --overlay "$OV"
! write_blk c tue 13 20 2>"$WORK/c.err" || fail "C wrote while A holds tue"
grep -qE "overlay $OV/tue is in use by another process: an unknown process \($OV/tue/owner: damaged owner record: larger than 4096 bytes\)" "$WORK/c.log" ||
	fail "C's refusal: $(cat "$WORK/c.log")"
printf 'imgchain-release 1\nhost x\n\377\377\n' >"$OV/tue/owner.request"
wait_log a "$OV/tue/owner.request: damaged release request: line 3: .*ignored and removed"
[[ ! -e $OV/tue/owner.request ]] || fail "the garbage request stays"
write_blk a tue 14 21 || fail "A stopped writing after a garbage request"
# a well-formed request from a process that is gone is not obeyed either
cat >"$WORK/request" <<REQ
imgchain-release 1
host $(hostname | tr -c 'A-Za-z0-9._\n-' '-')
boot $(cat /proc/sys/kernel/random/boot_id)
pidns $(stat -L -c %i /proc/self/ns/pid)
pid 4000000
start 1
since $(date +%s)
server imgmount
where /nowhere
token 0123456789abcdef0123456789abcdef
wait 30
REQ
mv "$WORK/request" "$OV/tue/owner.request"
wait_log a "release request of imgmount \(host [^,]+, pid 4000000\) on /nowhere .* is left over.*ignored and removed"
write_blk a tue 15 22 || fail "A obeyed a request of a dead process"
ns_stop c
# the planted record stays until A takes tue again: a clean stop leaves what is not its own
ns_stop a
ns_mount a --overlay "$OV"
apid=${NS_PID[a]}
write_blk a tue 16 25
grep -qE "$OV/tue/owner: damaged owner record: larger than 4096 bytes: replaced" "$WORK/a.log" ||
	fail "A's second start: $(cat "$WORK/a.log")"

# 4. an owner that does not answer: a bounded wait, an error naming it
ns_mount d --overlay "$OV" --take-over --take-over-wait 2
kill -STOP "$apid"
t0=$(date +%s)
! write_blk d tue 16 23 2>"$WORK/d.err" || fail "D wrote while A, stopped, holds tue"
t1=$(date +%s)
kill -CONT "$apid"
grep -q "busy" "$WORK/d.err" || fail "D's error: $(cat "$WORK/d.err")"
((t1 - t0 <= 20)) || fail "the wait took $((t1 - t0)) s (bound: 2 s)"
echo "unanswered take-over gave up after $((t1 - t0)) s (take-over-wait 2)"
grep -qE "overlay $OV/tue is in use by another process: imgmount \(host [^,]+, pid $apid\) on $NSMNT since .*, which did not release it within 2 s" "$WORK/d.log" ||
	fail "D's error does not name A: $(cat "$WORK/d.log")"
[[ ! -e $OV/tue/owner.request ]] || fail "D left its request behind"
sleep 1     # A's watcher runs again: nothing to answer
write_blk a tue 17 24 || fail "A lost tue after an unanswered request"
[[ $(owner_field "$OV/tue" pid) == "$apid" ]] || fail "the record changed"
ns_stop d
ns_stop a
