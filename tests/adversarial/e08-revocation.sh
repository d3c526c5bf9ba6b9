#!/bin/bash
# e08-revocation.sh (issue 10, finding 7): revocation, a rolled-back key file, points gone.
#   1. 'imgkey revoke' starts key generation 1 and keeps only the slot that unlocked: the revoked
#      passphrase no longer opens the key file (exit 3); an old copy of the key file still opens
#      with it but holds generation 0 only (what new points will not use).
#   2. The old copy put back in place (a rolled-back key file): every keyed tool of the key holder
#      refuses it (exit 4, "rolled back: this machine last saw key generation 1"), nothing
#      written; --accept-rollback accepts it; the revoked holder's own forged "revocation" of the
#      old copy does not open with the kept passphrase (exit 3).
#   3. Points remembered by the state but gone (a leaf deleted by the storage, a point merged
#      away): imgverify --data reports each once on stdout, exit 0, then forgets it.
#   4. The mount daemon's /proc/PID/environ holds no IMGCHAIN_PASSPHRASE once it has read it.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
requires imgkey imgconsolidate
make_chain

printf '%s\n' "$IMGCHAIN_PASSPHRASE" >first.txt
echo "second passphrase, to be revoked" >second.txt
expect_exit 0 imgkey add --new-passphrase-file second.txt C
expect_out "^added key slot 1$"
cp C/imgchain.key old.key
expect_exit 0 imgkey check --passphrase-file second.txt C
expect_out "^key slot 1 opens key generations 0 to 0$"

# ---- 1. revoke slot 1 (unlocked with the first passphrase, slot 0) ----
images=$(sha_tree C | grep '\.img$')
expect_exit 2 imgkey revoke C 8
expect_exit 1 imgkey revoke C 0
expect_msg "key slot 0 is the one this passphrase opens: to revoke it, unlock with a passphrase you keep"
cmp -s C/imgchain.key old.key || fail "a refused revoke changed the key file"
expect_exit 0 imgkey revoke C 1
expect_out "^new key generation 1: points made from now on need it"
expect_out "^kept key slot 0 "
expect_out "^dropped key slot\(s\) 1: "
[[ $(sha_tree C | grep '\.img$') == "$images" ]] || fail "imgkey revoke changed an image"
(($(stat -c %s C/imgchain.key) == 1120 + 72)) || fail "the revoked key file is not 1192 bytes"
expect_exit 0 imgkey list C
expect_out "^key generations: 0 to 1 "
expect_out "^slots:     1 of 8 used$"
expect_exit 0 imgkey check C
expect_out "^key slot 0 opens key generations 0 to 1$"
expect_exit 3 imgkey check --passphrase-file second.txt C
expect_msg "wrong passphrase"
IMGCHAIN_PASSPHRASE_FILE=second.txt expect_exit 3 imgverify -q --data C
# existing points stay readable with the new key file (generation 0 is reachable from 1)
expect_exit 0 imgverify -q --data C
restore_cmp C p2 s2
# the old copy opens with the revoked passphrase, but only generation 0
mkdir O && cp old.key O/imgchain.key
IMGCHAIN_STATE_DIR=$TESTDIR/elsewhere expect_exit 0 imgkey check --passphrase-file second.txt O
expect_out "^key slot 1 opens key generations 0 to 0$"

# ---- 2. the old copy put back: a rolled-back key file ----
cp -a C newkey-chain
cp old.key C/imgchain.key
snap
expect_exit 4 imgverify -q --data C
expect_msg "^imgverify: C/imgchain.key: rolled back: this machine last saw key generation 1, the key file holds only generations 0 to 0"
expect_exit 4 imgrestore C p2 out
[[ ! -e out ]] || fail "a restore from a rolled-back key file created DEST"
expect_msg "rolled back: this machine last saw key generation 1"
expect_exit 4 imgbackup -q --name p4 C s2
expect_msg "rolled back: this machine last saw key generation 1"
expect_exit 4 imgkey add --new-passphrase-file second.txt C
expect_msg "rolled back: this machine last saw key generation 1"
expect_exit 4 imgkey check --passphrase-file second.txt C
mount_refused 4 "rolled back: this machine last saw key generation 1" C
no_tmp_files C
unchanged "a rolled-back key file"
# the revoked holder re-"revokes" the old copy: a generation 1 of their own, which the kept
# passphrase does not open
cp old.key C/imgchain.key
IMGCHAIN_STATE_DIR=$TESTDIR/attacker expect_exit 0 imgkey revoke --passphrase-file second.txt C
expect_exit 3 imgverify -q --data C
expect_msg "wrong passphrase"
# --accept-rollback accepts the old copy, and the state follows it
cp old.key C/imgchain.key
expect_exit 0 imgverify -q --data --accept-rollback C
expect_exit 0 imgverify -q --data C
# the genuine newer key file is a step forward again: accepted
cp newkey-chain/imgchain.key C/imgchain.key
expect_exit 0 imgverify -q --data C
cp old.key C/imgchain.key
expect_exit 4 imgverify -q --data C
expect_msg "rolled back"
cp newkey-chain/imgchain.key C/imgchain.key

# ---- 3. remembered points that are gone ----
expect_exit 0 imgverify --data C
expect_no_msg "gone"
! grep -q "gone" "$TESTDIR/last.out" || fail "a report of gone points with every point present"
# the storage deletes p2 (a leaf, not the newest): keyless and keyed checks pass, the report
# names it, once
rm C/00000002.img
expect_exit 0 imgverify -q C
expect_exit 0 imgverify --data C
expect_out "^C: remembered restore point 'p2' \(sequence 2\) is gone \(merged away by a retention merge, or deleted\)$"
expect_out "^C: 1 remembered point\(s\) gone: a report, not an error"
expect_out "no problems$"
expect_exit 0 imgverify --data C
! grep -q "gone" "$TESTDIR/last.out" || fail "a gone point was reported twice"
# a retention merge: p1 merged into p3 (keyless), p1 reported gone
expect_exit 0 imgconsolidate -q --merge p1..p3 C
expect_exit 0 imgverify -q --data C
expect_out "^C: remembered restore point 'p1' \(sequence 1\) is gone"
grep -q "'p3'" "$TESTDIR/last.out" && fail "p3 is reported gone"
restore_cmp C p3 s3

# ---- 4. the mount daemon forgets IMGCHAIN_PASSPHRASE ----
if fuse_usable; then
	mount_chain C
	[[ -r /proc/$MOUNT_PID/environ ]] || fail "no /proc/$MOUNT_PID/environ"
	# read once, then grep the text (tr | grep -q under pipefail: grep leaving at its match
	# before tr wrote the rest of a large environment killed tr with SIGPIPE, and the
	# pipeline "failed": CI's asan phase, once)
	daemon_env=$(tr '\0' '\n' <"/proc/$MOUNT_PID/environ")
	if grep -q "IMGCHAIN_PASSPHRASE\|$IMGCHAIN_PASSPHRASE" <<<"$daemon_env"; then
		fail "the mount daemon's environment still holds the passphrase"
	fi
	grep -q "^IMGCHAIN_STATE_DIR=" <<<"$daemon_env" ||
		fail "the check reads the wrong process (no IMGCHAIN_STATE_DIR in its environment)"
	unmount_chain
else
	echo "note: FUSE not usable here, the daemon's environment not checked"
fi
exit 0
