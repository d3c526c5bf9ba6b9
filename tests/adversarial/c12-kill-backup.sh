#!/bin/bash
# c12-kill-backup.sh (doc/SECURITY.md case 12): imgbackup killed with SIGKILL at two deterministic
# moments: right after it took the lock (before any image file), and mid-way (its temporary image
# holds records; the process is stopped with SIGSTOP first, so the moment does not depend on
# timing).  While it is stopped, readers see only the earlier points; after the kill the earlier
# images and the key file are byte-identical, the chain verifies with the key, no point appeared,
# and the next backup is not blocked by the dead process's lock and removes its leftovers.
# Then a sweep of 20 timed kills (skipped with a note where a backup is too fast to interrupt)
# with the same checks and every partial point ignored; SIGINT and SIGTERM stop a backup with
# exit 1 and remove its temporary files at once; a second writer while one runs is refused with
# "locked" (exit 1).  (Was also tests/cmd/killed_backup.sh.)
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain

_pool
cat .pool .pool .pool .pool .pool .pool >big    # 24 MiB, slow at level 19 on one thread
images() { sha_tree C | grep -E '\./([0-9]{8}\.img|imgchain\.key)$'; }
tree=$(images)

# start_backup: imgbackup of big in the background (BACKUP: its pid)
start_backup()
{
	imgbackup -q --threads 1 --level 19 --name killed C big 2>kill.err &
	BACKUP=$!
}

# wait_for WHAT CMD...: poll CMD until it succeeds while the backup runs
wait_for()
{
	local what=$1 i
	shift
	for ((i = 0; i < 3000; i++)); do
		"$@" && return 0
		kill -0 $BACKUP 2>/dev/null || fail "the backup ended before $what: $(cat kill.err)"
		sleep 0.01
	done
	fail "$what never happened"
}

kill_backup()
{
	kill -KILL $BACKUP
	set +e
	{ wait $BACKUP; } 2>/dev/null
	local rc=$?
	set -e
	[[ $rc -eq 137 ]] || fail "the killed backup exited $rc"
}

after_kill()
{
	[[ $(images) == "$tree" ]] || fail "$1: the earlier images or the key file changed"
	[[ $(point_count C) -eq 3 ]] || fail "$1: a point appeared"
	expect_exit 0 imgverify -q --data C
	restore_cmp C p2 s2
}

# ---- 1. killed holding the lock, before any image file ------------------------------------------
start_backup
lock_named() { grep -q "^pid $BACKUP on " C/lock 2>/dev/null; }
wait_for "taking the lock" lock_named
kill -STOP $BACKUP
kill_backup
after_kill "killed after taking the lock"

# ---- 2. killed mid-way: its temporary image holds records ----------------------------------------
start_backup
partial() { [[ -n $(find C -name ".tmp-4-$BACKUP.img" -size +256k) ]]; }
wait_for "writing records" partial
kill -STOP $BACKUP
# stopped mid-way: keyless readers ignore the partial file; a second writer is refused
expect_exit 0 imgverify -q C
[[ $(point_count C) -eq 3 ]] || fail "a reader saw the partial point"
expect_exit 1 imgbackup --name second C s2
expect_msg "^imgbackup: C: chain is locked by another writer \(pid $BACKUP on [^)]*\)$"
kill_backup
[[ -e C/.tmp-4-$BACKUP.img ]] || fail "no partial image was left to clean up"
after_kill "killed mid-way"

# ---- the next backup: the dead lock does not block it, the leftovers go -------------------------
cp s2 s4
write_at s4 $((5 * B)) 100 four
expect_exit 0 imgbackup -q --name p4 C s4
no_tmp_files C
restore_cmp C p4 s4
expect_exit 0 imgverify -q --data C

# ---- the sweep: SIGKILL at 20 moments, from lock and key derivation to the last records ----------
# a big source, slow to compress: 8 MiB at zstd level 19 on one thread (32 MiB for the runs that
# must still be running when the test acts on them)
cat .pool .pool >sweep
cat sweep sweep sweep sweep >sweep4
write_at sweep 0 4096 big    # unlike any block of the pool
tree=$(images)
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
# the chain lists p1..p4 alone, no bad file
listed() { imginfo --json C >lst.json && json_get lst.json \
	'" ".join(sorted(p["name"] for p in j["points"])) + " bad: %d" % len(j["bad_files"])'; }

# how long a whole run takes here: the very run of the sweep (the same incremental into C, its
# point removed after), the fastest of three, so that a run slowed by a burst of load elsewhere
# does not spread the kills past the end of most runs (a full into a scratch chain, timed
# before, took 1.5x the sweep's incremental: 6 of 20 runs ended before their kill in CI)
dur_ms=
for i in 1 2 3; do
	start=$EPOCHREALTIME
	expect_exit 0 imgbackup -q --threads 1 --level 19 --name killed C sweep
	d=$(( (${EPOCHREALTIME/./} - ${start/./}) / 1000 ))
	[[ -n $dur_ms ]] && ((d >= dur_ms)) || dur_ms=$d
	rm C/00000005.img
	rm -rf "$IMGCHAIN_STATE_DIR"
done
[[ $(images) == "$tree" ]] || fail "the timed runs changed the earlier points"
if ((dur_ms <= 300)); then
	echo "note: a backup takes only ${dur_ms} ms here: too fast to interrupt, no sweep"
else
	echo "a whole backup takes $dur_ms ms"
	kills=0 finished=0 delays=
	for k in $(seq 0 19); do
		# 0, 10, 20 ms, then spread up to 90% of a whole run
		((k < 3)) && delay_ms=$((k * 10)) || delay_ms=$((dur_ms * (k - 2) * 90 / 17 / 100))
		imgbackup -q --threads 1 --level 19 --name killed C sweep 2>kill.err &
		pid=$!
		sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
		kill -KILL $pid 2>/dev/null || true
		set +e
		wait $pid 2>/dev/null    # (no "Killed" job notice)
		rc=$?
		set -e
		if ((rc == 0 || rc == 137)) && [[ -e C/00000005.img ]]; then
			# it won the race (or was killed after its commit, before exiting): a complete
			# point, which must verify; remove it for the next round
			finished=$((finished + 1))
			expect_exit 0 imgverify -q --data C killed
			rm C/00000005.img
			rm -rf "$IMGCHAIN_STATE_DIR"    # forget it was seen: no rollback alarm
			# the machine got faster than when timed: the later kills come earlier
			dur_ms=$((dur_ms * 3 / 4))
		elif ((rc == 137)); then
			kills=$((kills + 1))
		else
			fail "imgbackup killed after $delay_ms ms exited $rc: $(cat kill.err)"
		fi
		[[ $(images) == "$tree" ]] || fail "kill after $delay_ms ms changed the earlier points"
		left=$(find C -name '.tmp-*' | wc -l)
		((left <= 2)) || fail "temporary files pile up after kill at $delay_ms ms: $(ls -A C)"
		# the partial point is ignored: the chain lists p1..p4 only, and they authenticate
		# with the key (every block decrypted, every seal recomputed)
		[[ $(listed) == "p1 p2 p3 p4 bad: 0" ]] ||
			fail "after a kill at $delay_ms ms the chain lists: $(listed)"
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
fi
# one more, killed once it holds the lock (polled, not timed): the lock file keeps naming the
# dead holder, but the lock itself dies with it (the next backup below takes it)
imgbackup -q --threads 1 --level 19 --name killed C sweep 2>kill.err &
pid=$!
wait_lock $pid 500 || true
kill -KILL $pid 2>/dev/null || true
set +e
wait $pid 2>/dev/null
rc=$?
set -e
[[ -e C/00000005.img ]] && rm C/00000005.img && rm -rf "$IMGCHAIN_STATE_DIR"
grep -q "^pid $pid on " C/lock || fail "the lock file does not name the killed backup: $(cat C/lock)"
expect_exit 0 imgverify -q --data C
restore_cmp C p1 s1
restore_cmp C p2 s2
# the next backup succeeds and removes what the killed ones left
cp s2 s5
write_at s5 0 100 five
expect_exit 0 imgbackup -q --name p5 C s5
no_tmp_files C
restore_cmp C p5 s5
tree=$(images)

# ---- SIGINT and SIGTERM: exit 1, "interrupted", temporary files gone at once ------------------
for sig in INT TERM; do
	imgbackup --threads 1 --level 19 --name stopped C sweep4 >stop.out 2>stop.err &
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

# ---- a second writer while one runs (not stopped): refused, "locked" ---------------------------
imgbackup -q --threads 1 --level 19 --name first C sweep4 2>first.err &
pid=$!
wait_lock $pid 200 || fail "the lock file does not name the running backup"
expect_exit 1 imgbackup --name second C s5
expect_msg "^imgbackup: C: chain is locked by another writer \(pid $pid on [^)]*\)$"
kill -INT $pid
wait $pid || true
[[ $(images) == "$tree" ]] || fail "the refused writer changed the chain"
no_tmp_files C
expect_exit 0 imgbackup -q --name second C s5
expect_exit 0 imgverify -q --data C
