#!/bin/bash
# killed_backup.sh: imgbackup killed with SIGKILL at 20 moments (CRYPTO.md case 12): after each,
# every earlier point is unchanged, lists alone (the partial point is ignored), authenticates
# with the key (imgverify --data) and, every ninth kill, restores; the dead process's
# lock does not block the next run, which removes the leftover .tmp-* files.  SIGINT and SIGTERM
# stop a backup with exit 1 and remove its temporary files at once.  A second imgbackup while one
# runs is refused with "locked" (exit 1).
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imgverify imginfo cmp python3

# small earlier points, so that checking them after every kill is cheap
mkrandom_bytes s1 1000000 one
expect_exit 0 imgbackup -q --name p1 C s1
cp s1 s2
write_at s2 500000 100 two
expect_exit 0 imgbackup -q --name p2 C s2

# a big source, slow to compress: 8 MiB at zstd level 19 on one thread (32 MiB for the runs
# that must still be running when the test acts on them)
_pool
cat .pool .pool >big
cat big big big big >bigger
write_at big 0 4096 big    # unlike any block of the pool

images() { sha_tree C | grep -E '\./([0-9]{8}\.img|imgchain\.key)$'; }
# wait_lock PID TRIES: poll every 20 ms, at most TRIES times, until C/lock names PID
wait_lock()
{
	local i
	for ((i = 0; i < $2; i++)); do
		grep -q "^pid $1 on " C/lock 2>/dev/null && return 0
		sleep 0.02
	done
	return 1
}
tree=$(images)

# how long a whole run takes here (in a scratch chain)
start=$EPOCHREALTIME
expect_exit 0 imgbackup -q --threads 1 --level 19 CAL big
dur_ms=$(( (${EPOCHREALTIME/./} - ${start/./}) / 1000 ))
rm -rf CAL
((dur_ms > 300)) || skip "a backup takes only ${dur_ms} ms here: too fast to interrupt"
echo "a whole backup takes $dur_ms ms"

# ---- SIGKILL at 20 moments: from lock and key derivation to the last records -------------------
kills=0 finished=0 delays=
for k in $(seq 0 19); do
	# 0, 10, 20 ms, then spread up to 90% of a whole run
	((k < 3)) && delay_ms=$((k * 10)) || delay_ms=$((dur_ms * (k - 2) * 90 / 17 / 100))
	imgbackup -q --threads 1 --level 19 --name killed C big 2>kill.err &
	pid=$!
	sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
	kill -KILL $pid 2>/dev/null || true
	set +e
	wait $pid 2>/dev/null    # (no "Killed" job notice)
	rc=$?
	set -e
	if ((rc == 0 || rc == 137)) && [[ -e C/00000003.img ]]; then
		# it won the race (or was killed after its commit, before exiting): a complete
		# point, which must verify; remove it for the next round
		finished=$((finished + 1))
		expect_exit 0 imgverify -q --data C killed
		rm C/00000003.img
		rm -rf "$IMGCHAIN_STATE_DIR"    # forget it was seen: no rollback alarm
	elif ((rc == 137)); then
		kills=$((kills + 1))
	else
		fail "imgbackup killed after $delay_ms ms exited $rc: $(cat kill.err)"
	fi
	[[ $(images) == "$tree" ]] || fail "kill after $delay_ms ms changed the earlier points"
	left=$(find C -name '.tmp-*' | wc -l)
	((left <= 2)) || fail "temporary files pile up after kill at $delay_ms ms: $(ls -A C)"
	# the partial point is ignored: the chain lists p1 and p2 only, and both authenticate
	# with the key (every block decrypted, every seal recomputed)
	points=$(imginfo --json C | python3 -c 'import json, sys; j = json.load(sys.stdin)
print(" ".join(p["name"] for p in j["points"]), "bad:", len(j["bad_files"]))')
	[[ $points == "p1 p2 bad: 0" ]] || fail "after a kill at $delay_ms ms the chain lists: $points"
	expect_exit 0 imgverify -q --data C
	if ((k % 9 == 0)); then
		restore_cmp C p1 s1
		restore_cmp C p2 s2
	fi
	delays="$delays $delay_ms"
done
echo "killed at (ms):$delays"
echo "$kills runs killed, $finished finished before the kill"
((kills >= 15)) || fail "only $kills of 20 runs were killed mid-way"
# one more, killed once it holds the lock (polled, not timed): the lock file keeps naming the
# dead holder, but the lock itself dies with it (the next backup below takes it)
imgbackup -q --threads 1 --level 19 --name killed C big 2>kill.err &
pid=$!
wait_lock $pid 500 || true
kill -KILL $pid 2>/dev/null || true
set +e
wait $pid 2>/dev/null
rc=$?
set -e
[[ -e C/00000003.img ]] && rm C/00000003.img && rm -rf "$IMGCHAIN_STATE_DIR"
grep -q "^pid $pid on " C/lock || fail "the lock file does not name the killed backup: $(cat C/lock)"

expect_exit 0 imgverify -q --data C
restore_cmp C p1 s1
restore_cmp C p2 s2
# the next backup succeeds and removes what the killed ones left
cp s2 s3
write_at s3 0 100 three
expect_exit 0 imgbackup -q --name p3 C s3
no_tmp_files C
restore_cmp C p3 s3
tree=$(images)

# ---- SIGINT and SIGTERM: exit 1, "interrupted", temporary files gone at once ------------------
for sig in INT TERM; do
	imgbackup --threads 1 --level 19 --name stopped C bigger >stop.out 2>stop.err &
	pid=$!
	for i in $(seq 200); do
		[[ -n $(find C -name '.tmp-*.img' -size +1k) ]] && break
		sleep 0.02
	done
	kill -$sig $pid
	set +e
	wait $pid
	rc=$?
	set -e
	[[ $rc -eq 1 ]] || fail "SIG$sig: imgbackup exited $rc: $(cat stop.err)"
	grep -q "^imgbackup: interrupted$" stop.err || fail "SIG$sig: $(cat stop.err)"
	no_tmp_files C
	[[ $(images) == "$tree" ]] || fail "SIG$sig changed the earlier points"
done

# ---- a second writer while one runs: refused, "locked" -----------------------------------------
imgbackup -q --threads 1 --level 19 --name first C bigger 2>first.err &
pid=$!
wait_lock $pid 200 || fail "the lock file does not name the running backup"
expect_exit 1 imgbackup --name second C s3
expect_msg "^imgbackup: C: chain is locked by another writer \(pid $pid on [^)]*\)$"
kill -INT $pid
wait $pid || true
[[ $(images) == "$tree" ]] || fail "the refused writer changed the chain"
no_tmp_files C
expect_exit 0 imgbackup -q --name second C s3
expect_exit 0 imgverify -q --data C
