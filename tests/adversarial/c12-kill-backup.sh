#!/bin/bash
# c12-kill-backup.sh (CRYPTO.md case 12): imgbackup killed with SIGKILL at two deterministic
# moments: right after it took the lock (before any image file), and mid-way (its temporary image
# holds records; the process is stopped with SIGSTOP first, so the moment does not depend on
# timing).  While it is stopped, readers see only the earlier points; after the kill the earlier
# images and the key file are byte-identical, the chain verifies with the key, no point appeared,
# and the next backup is not blocked by the dead process's lock and removes its leftovers.
# (The sweep over 20 kill times is tests/cmd/killed_backup.sh.)
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
