#!/bin/bash
# passphrase.sh: a wrong passphrase exits 3 with "wrong passphrase" and writes nothing, for
# imgbackup, imgrestore and imgverify --data; the sources of the passphrase and their order
# (--passphrase-file, IMGCHAIN_PASSPHRASE_FILE, IMGCHAIN_PASSPHRASE, terminal); no passphrase
# and no terminal is a clear error; the key file of another chain gives "wrong key" (exit 3).
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imgverify imginfo setsid

good=$IMGCHAIN_PASSPHRASE
printf '%s\n' "$good" >good.txt
printf 'not the passphrase\n' >bad.txt
printf '\n' >empty.txt

mkrandom_bytes src 1000000 src
cp src src1
expect_exit 0 imgbackup -q --name p1 C src
write_at src 0 100 change
cp src src2
expect_exit 0 imgbackup -q --name p2 C src2
tree=$(sha_tree C)

# ---- a wrong passphrase: exit 3, nothing written ---------------------------------------------
export IMGCHAIN_PASSPHRASE="not the passphrase"
expect_exit 3 imgbackup --name p3 C src
expect_msg "^imgbackup: C/imgchain.key: wrong passphrase"
expect_exit 3 imgrestore C p1 out
expect_msg "^imgrestore: C/imgchain.key: wrong passphrase"
[[ ! -e out ]] || fail "imgrestore with a wrong passphrase created DEST"
no_tmp_files .
expect_exit 3 imgverify --data C
expect_msg "^imgverify: C/imgchain.key: wrong passphrase"
[[ $(sha_tree C) == "$tree" ]] || fail "a wrong passphrase changed the chain"
no_tmp_files C
# the keyless tools need no passphrase
expect_exit 0 imgverify C
expect_exit 0 imginfo C

# ---- where the passphrase comes from, in order ------------------------------------------------
# --passphrase-file beats both variables
export IMGCHAIN_PASSPHRASE_FILE=$TESTDIR/bad.txt IMGCHAIN_PASSPHRASE="not the passphrase"
expect_exit 0 imgverify -q --data --passphrase-file good.txt C
expect_exit 0 imgrestore -q -P good.txt C p2 out
cmp out src2
rm out
expect_exit 3 imgverify --data -P bad.txt C
expect_msg "wrong passphrase"
# IMGCHAIN_PASSPHRASE_FILE beats IMGCHAIN_PASSPHRASE
export IMGCHAIN_PASSPHRASE_FILE=$TESTDIR/good.txt IMGCHAIN_PASSPHRASE="not the passphrase"
expect_exit 0 imgverify -q --data C
export IMGCHAIN_PASSPHRASE_FILE=$TESTDIR/bad.txt IMGCHAIN_PASSPHRASE=$good
expect_exit 3 imgverify --data C
expect_msg "wrong passphrase"
# IMGCHAIN_PASSPHRASE alone
unset IMGCHAIN_PASSPHRASE_FILE
expect_exit 0 imgverify -q --data C
# only the first line of a file counts; a CR LF line end is removed
printf '%s\r\nsecond line\n' "$good" >crlf.txt
expect_exit 0 imgverify -q --data -P crlf.txt C
printf '%s' "$good" >nonl.txt
expect_exit 0 imgverify -q --data -P nonl.txt C
# bad files
expect_exit 1 imgverify --data -P empty.txt C
expect_msg "empty.txt: empty passphrase refused"
expect_exit 1 imgverify --data -P missing.txt C
expect_msg "missing.txt: open passphrase file: No such file or directory"
IMGCHAIN_PASSPHRASE_FILE= expect_exit 1 imgverify --data C
expect_msg "IMGCHAIN_PASSPHRASE_FILE is set but empty"
[[ $(sha_tree C) == "$tree" ]] || fail "the chain changed"

# ---- no passphrase and no terminal: a clear error, nothing created ----------------------------
unset IMGCHAIN_PASSPHRASE
for cmd in "imgbackup --name p3 C src" "imgrestore C p1 out" "imgverify --data C" "imgbackup NEW src"; do
	expect_exit 1 setsid $cmd
	expect_msg "no passphrase: use --passphrase-file FILE, IMGCHAIN_PASSPHRASE_FILE or IMGCHAIN_PASSPHRASE, or run on a terminal"
done
[[ ! -e out ]] || fail "imgrestore without a passphrase created DEST"
[[ ! -e NEW ]] || fail "imgbackup without a passphrase left a chain directory"
[[ $(sha_tree C) == "$tree" ]] || fail "the chain changed"
export IMGCHAIN_PASSPHRASE=$good

# ---- the key file of another chain, with the same passphrase: "wrong key" -----------------------
expect_exit 0 imgbackup -q --name o1 OTHER src
cp C/imgchain.key own.key
cp OTHER/imgchain.key C/imgchain.key
tree=$(sha_tree C)
expect_exit 3 imgrestore C p1 out
expect_msg "^imgrestore: C: wrong key: the key file does not belong to this chain's images"
[[ ! -e out ]] || fail "imgrestore with a wrong key created DEST"
expect_exit 3 imgverify --data C
expect_msg "^imgverify: C: wrong key"
expect_exit 3 imgbackup --name p3 C src
expect_msg "^imgbackup: C/imgchain.key: wrong key"
[[ $(sha_tree C) == "$tree" ]] || fail "a wrong key changed the chain"
no_tmp_files C
# the keyless checks do not involve the key file
expect_exit 0 imgverify C
# with its own key file back, everything works again
cp own.key C/imgchain.key
restore_cmp C p1 src1
expect_exit 0 imgrestore C p2 out
cmp out src2
expect_exit 0 imgverify -q --data C
