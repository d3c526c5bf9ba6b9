#!/bin/bash
# e04-seq-range.sh (issue 10, finding 3): sequence numbers stay inside the format's range
# (1..99999999, the largest that fits the %08u file name) whatever lies in the chain directory,
# and a point reported as written is listed and restorable.
#   1. 99999999.img holding garbage: the next backup refuses (exit 1) naming that file, writes
#      nothing (it used to write 100000000.img, which no reader lists, with exit 0).
#   2. A real point at the top (a slot saying 99999999, checksums fixed): the same refusal.
#   3. A slot claiming 100000000 (checksums fixed): refused as a bad slot; the next backup is
#      numbered after the file's name, listed and restorable.
#   4. A file already at the exact name the next backup needs (a copy of another image, whose
#      slot claims an older seq): the name is not reused, the point goes to the next one.
#   5. A junk file appearing at that name while the backup runs (stopped with SIGSTOP, so the
#      moment is deterministic): the commit never replaces it (exit 1 naming it), no point is
#      reported, the junk is byte-identical and no temporary file is left.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain

# points CODE: the names of the points imginfo lists (it exits CODE: 4 with a damaged file)
points()
{
	expect_exit "$1" imginfo --json C
	python3 -c 'import json, sys; print(" ".join(sorted(p["name"] for p in json.load(sys.stdin)["points"])))' \
		<"$TESTDIR/last.out"
}

# set_seq IMAGE SEQ: the slot claims SEQ (checksums fixed)
set_seq()
{
	icimg_py "$1" "$2" <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
i.slot["seq"] = int(sys.argv[2])
i.write_slot()
EOF
}

# ---- 1. garbage at the top name -----------------------------------------------------------------
fresh
head -c 8192 /dev/urandom >C/99999999.img
snap
expect_exit 1 imgbackup -q --name p4 C s2
expect_msg "^imgbackup: C: no sequence number left for a new point: C/99999999.img claims 99999999, the largest the format allows"
unchanged "a backup refused at the top of the range"
[[ $(points 4) == "p1 p2 p3" ]] || fail "a point appeared"
expect_exit 4 imgverify C
expect_msg "C/99999999.img: "

# ---- 2. a real point claiming the top -----------------------------------------------------------
fresh
set_seq C/00000003.img 99999999
mv C/00000003.img C/99999999.img
[[ $(points 0) == "p1 p2 p3" ]] || fail "keyless, p3 is listed at 99999999"    # (its seal fails)
snap
expect_exit 1 imgbackup -q --accept-rollback --parent p1 --name p4 C s2
expect_msg "no sequence number left for a new point: C/99999999.img claims 99999999"
unchanged "a backup refused after a point at the top"

# ---- 3. a slot beyond the range -------------------------------------------------------------------
fresh
set_seq C/00000003.img 100000000
expect_exit 4 imgverify C
expect_msg "C/00000003.img: bad slot: sequence above 99999999"
expect_exit 0 imgbackup -q --accept-rollback --name p4 C s2
[[ -f C/00000004.img ]] || fail "the backup did not write 00000004.img: $(ls C)"
[[ $(points 4) == "p1 p2 p4" ]] || fail "expected p1, p2, p4 listed"
restore_cmp C p4 s2

# ---- 4. a file at the next name, visible to the scan --------------------------------------------
fresh
cp C/00000002.img C/00000004.img    # claims seq 2 inside: a duplicate, ignored by readers
junk=$(sha256sum <C/00000004.img)
expect_exit 0 imgbackup -q --name p4 C s2
[[ -f C/00000005.img ]] || fail "the backup did not skip the name 00000004.img: $(ls C)"
[[ $(sha256sum <C/00000004.img) == "$junk" ]] || fail "the file at 00000004.img was changed"
restore_cmp C p4 s2

# ---- 5. junk appearing at the name while the backup runs ----------------------------------------
fresh
_pool
cat .pool .pool .pool .pool .pool .pool >big    # 24 MiB, slow at level 19 on one thread
imgbackup -q --threads 1 --level 19 --name late C big 2>late.err &
BACKUP=$!
cleanup_fn kill_quiet $BACKUP KILL
for ((i = 0; i < 3000; i++)); do
	[[ -n $(find C -name ".tmp-4-$BACKUP.img" -size +256k) ]] && break
	kill -0 $BACKUP 2>/dev/null || fail "the backup ended too early: $(cat late.err)"
	sleep 0.01
done
kill -STOP $BACKUP
head -c 5000 /dev/urandom >C/00000004.img
junk=$(sha256sum <C/00000004.img)
snap
kill -CONT $BACKUP
set +e
wait $BACKUP
rc=$?
set -e
[[ $rc -eq 1 ]] || fail "the backup exited $rc with a file at its name: $(cat late.err)"
grep -Eq "^imgbackup: C/00000004.img: a file is there already, not written by this run: left as it is" late.err ||
	fail "the message does not name the file: $(cat late.err)"
[[ $(sha256sum <C/00000004.img) == "$junk" ]] || fail "the junk file at 00000004.img was replaced"
no_tmp_files C
expect_exit 4 imgrestore C late out
[[ ! -e out ]] || fail "a point 'late' was restored"
restore_cmp C p3 s3
echo "sequence numbers stay in range"
