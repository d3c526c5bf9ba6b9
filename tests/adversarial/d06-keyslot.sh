#!/bin/bash
# d06-keyslot.sh (design, FORMAT.md 6.1): a key file's slot tampered with behind a correct file
# checksum.  The wrapped key's additional data binds the slot index, the KDF parameters and the
# salt: a slot moved to another index, its opslimit or memlimit changed within the caps, its salt
# or nonce changed: "wrong passphrase", exit 3.  The chain id or key check of the key file
# changed: "wrong passphrase" or "key check mismatch", exit 3.  An attacker's copy of slot 0
# into slot 1 opens (it is the same secret) but gives nothing new.  Nothing is ever written.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain

key_edit()
{
	icimg_py C/imgchain.key "$1" <<'EOF'
import sys, struct, icimg
p, how = sys.argv[1], sys.argv[2]
d = bytearray(open(p, "rb").read())
s0 = icimg.key_slot(0)
if how == "move":
    d[s0 + 128:s0 + 256] = d[s0:s0 + 128]
    d[s0:s0 + 128] = bytes(128)
elif how == "copy":
    d[s0 + 128:s0 + 256] = d[s0:s0 + 128]
elif how == "opslimit":
    struct.pack_into("<Q", d, s0 + 8, struct.unpack_from("<Q", d, s0 + 8)[0] + 1)
elif how == "memlimit":
    struct.pack_into("<Q", d, s0 + 16, struct.unpack_from("<Q", d, s0 + 16)[0] // 2)
elif how == "salt":
    d[s0 + 24] ^= 1
elif how == "nonce":
    d[s0 + 40] ^= 1
elif how == "wrapped":
    d[s0 + 64] ^= 1
elif how == "chain_id":
    d[16] ^= 1
elif how == "key_check":
    d[32] ^= 1
icimg.key_rehash(d)
open(p, "wb").write(d)
EOF
}

for how in move opslimit memlimit salt nonce wrapped; do
	fresh
	key_edit $how
	snap
	expect_exit 3 imgverify --data C
	expect_msg "^imgverify: C/imgchain.key: wrong passphrase \(no key slot opens with it\)$"
	expect_exit 3 imgrestore C p1 out
	[[ ! -e out ]] || fail "$how: a refused restore created DEST"
	expect_exit 3 imgbackup -q --name p4 C s2
	no_tmp_files C
	unchanged "a key file with a tampered slot ($how)"
done
for how in chain_id key_check; do
	fresh
	key_edit $how
	snap
	expect_exit 3 imgverify --data C
	expect_msg "^imgverify: C(/imgchain.key)?: (wrong passphrase|wrong key|key file damaged: key check mismatch)"
	expect_exit 3 imgbackup -q --name p4 C s2
	unchanged "a key file with a changed $how"
done
fresh
key_edit copy
expect_exit 0 imgverify -q --data C
restore_cmp C p2 s2
