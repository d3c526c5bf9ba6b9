#!/bin/bash
# e10-revoked-key.sh (issue 10, finding 7): a revocation protects the points made after it.
#   1. After `imgkey revoke`, a backup encrypts its records and seals its point under the new key
#      generation (entries' keygen and the slot's seal_keygen are 1).
#   2. Whoever kept an old copy of the key file and the revoked passphrase (and can read the
#      storage) still reads the points made before the revocation byte for byte, but not the new
#      one: imgrestore, imgverify --data and a mount refuse it as a key error (exit 3, "sealed
#      under key generation 1, which this key file does not hold"); nothing is written.
#   3. The current key file reads everything; a keyless merge of the generation 0 parent and the
#      generation 1 point (records of both generations in one image) keeps it readable and sealed.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
requires imgkey imgconsolidate
make_chain

echo "second passphrase, to be revoked" >second.txt
expect_exit 0 imgkey add --new-passphrase-file second.txt C
cp C/imgchain.key old.key
expect_exit 0 imgkey revoke C 1
expect_out "^new key generation 1"

# ---- 1. a point made after the revocation uses generation 1 ----
cp s2 s4
write_at s4 $((5 * B + 7)) 5000 four5
write_at s4 $((13 * B)) 100 four13
expect_exit 0 imgbackup -q --name p4 --parent p2 C s4
icimg_py C/00000004.img <<'EOF' || fail "p4 is not under key generation 1"
import sys, icimg
i = icimg.Image(sys.argv[1])
assert i.version == 2 and i.name == "p4", (i.version, i.name)
assert i.slot["seal_keygen"] == 1, i.slot["seal_keygen"]
own = [e for e in i.entries if e["origin"] == i.slot["seq"]]
assert sorted(e["pos"] for e in own) == [5, 13], own
assert all(e["keygen"] == 1 for e in own), own
EOF
restore_cmp C p4 s4

# ---- 2. the old key file copy and the revoked passphrase, on a machine of their own ----
mkdir O
cp C/*.img O/ && cp old.key O/imgchain.key
export IMGCHAIN_STATE_DIR=$TESTDIR/revoked-holder
export IMGCHAIN_PASSPHRASE_FILE=$TESTDIR/second.txt
snap O
restore_cmp O p2 s2
restore_cmp O p3 s3
expect_exit 3 imgrestore O p4 out
expect_msg "^imgrestore: restore point 'p4' is sealed under key generation 1, which this key file does not hold"
[[ ! -e out ]] || fail "a refused restore created DEST"
expect_exit 3 imgverify -q --data O
expect_msg "key generation 1, which this key file does not hold"
no_tmp_files O
unchanged "the revoked holder's attempts"
mount_point_eio O p4 "key generation 1, which this key file does not hold"
mount_check O p2 s2
unset IMGCHAIN_PASSPHRASE_FILE
export IMGCHAIN_STATE_DIR=$TESTDIR/state

# ---- 3. the current key reads everything, also after a keyless merge across generations ----
mv C/imgchain.key key.away
expect_exit 0 env -u IMGCHAIN_PASSPHRASE imgconsolidate -q --merge p2..p4 C
mv key.away C/imgchain.key
expect_exit 0 imgverify -q --data C
restore_cmp C p4 s4
restore_cmp C p3 s3
icimg_py C/*.img <<'EOF' || fail "the merged p4 does not hold records of both generations"
import sys, icimg
for path in sys.argv[1:]:
    i = icimg.Image(path)
    if i.name == "p4":
        gens = {e["keygen"] for e in i.entries if e["kind"] != icimg.ZERO}
        assert gens == {0, 1}, gens
        break
else:
    sys.exit("no p4")
EOF
echo "e10-revoked-key: ok"
