#!/bin/bash
# bad_input.sh: unknown point names, missing or wrong chain directories, sources that are empty,
# directories or missing, and malformed --changed-blocks files: each a clear message naming the
# culprit, exit 1, and nothing created or changed.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imginfo imgverify timeout mkfifo

mkrandom_bytes src 300000 src
expect_exit 0 imgbackup -q --name p1 C src
tree=$(sha_tree C)

# ---- unknown point names ------------------------------------------------------------------------
expect_exit 1 imgrestore C nosuch out
expect_msg "^imgrestore: C: no restore point named 'nosuch'$"
[[ ! -e out ]] || fail "imgrestore of an unknown point created DEST"
expect_exit 1 imgverify C nosuch
expect_msg "^imgverify: C: no restore point named 'nosuch'$"
expect_exit 1 imgverify --data C nosuch
expect_msg "no restore point named 'nosuch'"
expect_exit 1 imgbackup --parent nosuch C src
expect_msg "^imgbackup: C: no restore point named 'nosuch'$"
[[ $(sha_tree C) == "$tree" ]] || fail "the chain changed"

# ---- chain directories that are missing, empty or not directories ----------------------------
expect_exit 1 imgrestore nodir p1 out
expect_msg "^imgrestore: nodir: No such file or directory$"
expect_exit 1 imginfo nodir
expect_msg "^imginfo: nodir: No such file or directory$"
expect_exit 1 imgverify nodir
expect_msg "^imgverify: nodir: No such file or directory$"
expect_exit 1 imgverify --data nodir
expect_msg "nodir: No such file or directory"
mkdir empty
expect_exit 1 imginfo empty
expect_msg "^imginfo: empty: no restore points \(not a chain\?\)$"
expect_exit 1 imgverify empty
expect_msg "empty: no restore points"
expect_exit 1 imgrestore empty p1 out
expect_msg "empty: no restore point named 'p1'"
: >afile
expect_exit 1 imgbackup afile src
expect_msg "^imgbackup: afile: not a directory$"
expect_exit 1 imginfo afile
expect_msg "afile: Not a directory"
expect_exit 1 imgbackup nodir/sub src
expect_msg "nodir/sub: create chain directory: No such file or directory"
[[ ! -e nodir ]] || fail "a failed backup created nodir"
[[ -z $(ls -A empty) ]] || fail "imginfo or imgverify wrote into an empty directory"

# ---- sources ----------------------------------------------------------------------------------
: >zero-length
expect_exit 1 imgbackup NEW zero-length
expect_msg "^imgbackup: zero-length: source is empty$"
mkdir adir
expect_exit 1 imgbackup NEW adir
expect_msg "^imgbackup: adir: not a regular file or block device$"
expect_exit 1 imgbackup NEW missing-source
expect_msg "^imgbackup: missing-source: No such file or directory$"
[[ ! -e NEW ]] || fail "a failed first backup left a chain directory"
expect_exit 1 imgbackup C zero-length
expect_msg "zero-length: source is empty"
expect_exit 1 imgbackup C adir
expect_msg "adir: not a regular file or block device"
[[ $(sha_tree C) == "$tree" ]] || fail "the chain changed"
no_tmp_files C

# ---- --changed-blocks files ---------------------------------------------------------------------
cp src src2
write_at src2 70000 10 x
bad_lines=("65536" "abc 10" "65536 10 20" "-5 10" "65536 -10" "65536 10x" "0x 10")
for line in "${bad_lines[@]}"; do
	printf '# a comment\n\n0 4096\n%s\n' "$line" >cb.txt
	expect_exit 1 imgbackup --changed-blocks cb.txt C src2
	expect_msg "^imgbackup: cb.txt:4: expected \"OFFSET LENGTH\" in bytes$"
done
printf '0 4096\n299000 1001\n' >cb.txt
expect_exit 1 imgbackup --changed-blocks cb.txt C src2
expect_msg "^imgbackup: cb.txt:2: range 299000\+1001 is past the end of the source \(300000 bytes\)$"
printf '300001 0\n' >cb.txt
expect_exit 1 imgbackup --changed-blocks cb.txt C src2
expect_msg "cb.txt:1: range 300001\+0 is past the end"
expect_exit 1 imgbackup --changed-blocks no-such-list C src2
expect_msg "^imgbackup: no-such-list: No such file or directory$"
[[ $(sha_tree C) == "$tree" ]] || fail "the chain changed"
no_tmp_files C
# the good form, with comments, blank lines, hex and tabs
printf '# changed\n\n  0x10000\t16\n299999 1\n' >cb.txt
expect_exit 0 imgbackup --name p2 --changed-blocks cb.txt C src2
restore_cmp C p2 src2

# a FIFO is refused at once: opening it without a writer must not block (timeout exits 124;
# 30 s, not less: under valgrind on a loaded machine the tool alone took more than 3 s)
mkfifo fifo
expect_exit 1 timeout 30 imgbackup NEW fifo
expect_msg "^imgbackup: fifo: not a regular file or block device$"
[[ ! -e NEW ]] || fail "a failed first backup left a chain directory"
