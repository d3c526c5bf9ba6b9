#!/bin/bash
# imgkey.sh: a second passphrase is added and both open the chain; a slot is removed and its
# passphrase stops working (exit 3); the last slot cannot be removed; list needs no passphrase;
# a wrong current passphrase changes nothing; the images are never touched.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imgverify imgkey setsid

first=$IMGCHAIN_PASSPHRASE
printf 'a second, different passphrase\n' >second.txt
printf '%s\n' "$first" >first.txt
printf 'wrong\n' >wrong.txt

mkrandom_bytes src 500000 src
expect_exit 0 imgbackup -q --name p1 C src
images=$(sha_tree C | grep '\.img$')

# ---- list: keyless ---------------------------------------------------------------------------
unset IMGCHAIN_PASSPHRASE
expect_exit 0 setsid imgkey list C
expect_out "^chain id:  [0-9a-f]{32}$"
expect_out "^key check: [0-9a-f]{32}$"
expect_out "^slots:     1 of 8 used$"
expect_out "^slot 0:    argon2id, opslimit [0-9]+, memlimit 64.0 MiB$"
chain_id=$(sed -n 's/^chain id:  //p' last.out)
imginfo --json C | grep -q "\"chain_id\": \"$chain_id\"" || fail "imgkey and imginfo disagree on the chain id"

# ---- add: unlock with the current passphrase, add the new one --------------------------------
expect_exit 0 imgkey add --passphrase-file first.txt --new-passphrase-file second.txt C
expect_out "^added key slot 1$"
expect_exit 0 imgkey list C
expect_out "^slots:     2 of 8 used$"
expect_out "^slot 1:    argon2id"
expect_exit 0 imgverify -q --data -P first.txt C
expect_exit 0 imgverify -q --data -P second.txt C
expect_exit 0 imgrestore -q -P second.txt C p1 out
cmp out src
rm out
# the new passphrase from the environment
IMGCHAIN_NEW_PASSPHRASE=third expect_exit 0 imgkey add --passphrase-file second.txt C
expect_out "^added key slot 2$"
IMGCHAIN_PASSPHRASE=third expect_exit 0 imgverify -q --data C
# no new passphrase and no terminal: a clear error
expect_exit 1 setsid imgkey add --passphrase-file first.txt C
expect_msg "no new passphrase: use --new-passphrase-file FILE or IMGCHAIN_NEW_PASSPHRASE"

# ---- a wrong current passphrase: exit 3, key file unchanged -----------------------------------
keyfile=$(sha256sum <C/imgchain.key)
expect_exit 3 imgkey add --passphrase-file wrong.txt --new-passphrase-file second.txt C
expect_msg "wrong passphrase"
expect_exit 3 imgkey remove --passphrase-file wrong.txt C 0
expect_msg "wrong passphrase"
[[ $(sha256sum <C/imgchain.key) == "$keyfile" ]] || fail "a refused imgkey changed the key file"

# ---- remove: the removed passphrase no longer opens the chain -------------------------------
expect_exit 0 imgkey remove --passphrase-file second.txt C 0
expect_out "^removed key slot 0$"
expect_exit 0 imgkey list C
expect_out "^slots:     2 of 8 used$"
grep -q "^slot 0:" last.out && fail "slot 0 still listed"
expect_exit 3 imgverify --data -P first.txt C
expect_msg "wrong passphrase"
expect_exit 3 imgbackup --name p2 -P first.txt C src
expect_exit 0 imgbackup -q --name p2 -P second.txt C src
expect_exit 0 imgrestore -q -P second.txt C p2 out
cmp out src
rm out
# removing an empty slot, or the last one, is refused
expect_exit 1 imgkey remove --passphrase-file second.txt C 0
expect_msg "key slot 0 is empty"
IMGCHAIN_PASSPHRASE=third expect_exit 0 imgkey remove C 2
expect_exit 1 imgkey remove --passphrase-file second.txt C 1
expect_msg "key slot 1 is the last one: removing it would lose the key"
expect_exit 0 imgkey list C
expect_out "^slots:     1 of 8 used$"

# the images were never rewritten
[[ $(sha_tree C | grep '\.img$' | grep -v 00000002.img) == "$images" ]] || fail "imgkey changed an image"
no_tmp_files C

# ---- all eight slots in use: a ninth is refused ------------------------------------------------
for i in 2 3 4 5 6 7 8; do
	IMGCHAIN_NEW_PASSPHRASE=pass$i expect_exit 0 imgkey add --passphrase-file second.txt C
done
IMGCHAIN_NEW_PASSPHRASE=pass9 expect_exit 1 imgkey add --passphrase-file second.txt C
expect_msg "all 8 key slots are in use: remove one first"
IMGCHAIN_PASSPHRASE=pass8 expect_exit 0 imgverify -q --data C

# ---- not a chain -------------------------------------------------------------------------------
mkdir empty
expect_exit 1 imgkey list empty
expect_msg "no key file"

# ---- a bad SLOT is a usage error before anything else, even for a missing chain ----------------
expect_exit 2 imgkey remove C 9
expect_msg "SLOT must be a number from 0 to 7"
expect_exit 2 imgkey remove no-such-chain x
expect_msg "SLOT must be a number from 0 to 7"
