#!/bin/bash
# c13-diskfull.sh (doc/SECURITY.md case 13): the chain on a small tmpfs.  A backup that does not fit
# and a consolidation that does not fit each fail with exit 1 and "No space left on device", leave
# no temporary file, no journal and no new point, and every stored image is byte-identical and still
# restores.  A file system full to the last byte: even a small backup fails the same way, and a
# first backup of a new chain leaves no directory behind.  With space again both complete.  (Was
# also tests/cmd/diskfull.sh; the consolidation sweep is tests/consolidate/enospc.sh.)
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
requires imgconsolidate mount umount fallocate df
requires_root
mkdir fs
mount -t tmpfs -o size=6m,mode=0700 imgchain-adv "$TESTDIR/fs" 2>/dev/null || skip "cannot mount a tmpfs"
cleanup_fn umount -l "$TESTDIR/fs"

make_chain
cp -a C fs/C
rm -rf C
ln -s fs/C C
snap C/ "$IMGCHAIN_STATE_DIR"

# fill FREE_KIB: leave about FREE_KIB KiB free on the tmpfs
fill()
{
	local avail
	avail=$(df --output=avail -B1024 fs | tail -1)
	((avail <= $1)) || fallocate -l $(((avail - $1) * 1024)) fs/filler
}

# ---- a full backup of 5.5 MB into the ~4.8 MB left ------------------------------------------------
mkrandom_bytes s4 5500000 four
expect_exit 1 imgbackup --name p4 --full C s4
expect_msg "^imgbackup: C/\.tmp-4-[0-9]+\.(img|idx): write at offset [0-9]+: No space left on device$"
expect_clean_rc
no_tmp_files C/
unchanged "a backup that ran out of space"
restore_cmp C p2 s2

# ---- a consolidation with 40 KiB free: it needs a new image for p3 -------------------------------
fill 40
mv C/imgchain.key key.away
set +e
env -u IMGCHAIN_PASSPHRASE imgconsolidate -q --merge p1..p2 C >last.out 2>last.err
rc=$?
set -e
mv key.away C/imgchain.key
[[ $rc -eq 1 ]] || fail "consolidation on a full disk exited $rc: $(cat last.err)"
expect_msg "No space left on device"
expect_clean_rc
[[ ! -e C/journal ]] || fail "a journal was left: $(cat C/journal)"
no_tmp_files C/
unchanged "a consolidation that ran out of space"
restore_cmp C p1 s1
restore_cmp C p2 s2
restore_cmp C p3 s3

# ---- full to the last byte: even a small backup fails cleanly; a new chain leaves nothing --------
dd if=/dev/zero of=fs/filler2 bs=65536 status=none 2>/dev/null || true
snap C/ "$IMGCHAIN_STATE_DIR"
cp s2 s6
write_at s6 0 100 six
expect_exit 1 imgbackup --name p6 C s6
expect_msg "No space left on device"
expect_clean_rc
no_tmp_files C/
unchanged "a small backup on a full disk"
expect_exit 0 imgverify -q C
expect_exit 1 imgbackup --name n1 fs/new s1
expect_msg "No space left on device"
[[ ! -e fs/new ]] || fail "a failed first backup left fs/new: $(ls -la fs/new)"
rm fs/filler2

# ---- space again: both complete ----------------------------------------------------------------
rm fs/filler
mv C/imgchain.key key.away
env -u IMGCHAIN_PASSPHRASE imgconsolidate -q --merge p1..p2 C || fail "consolidation with space failed"
mv key.away C/imgchain.key
cp s2 s5
write_at s5 0 100 five
expect_exit 0 imgbackup -q --name p5 C s5
no_tmp_files C/
restore_cmp C p5 s5
restore_cmp C p2 s2
restore_cmp C p3 s3
expect_exit 0 imgverify -q --data C
