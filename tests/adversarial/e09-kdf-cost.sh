#!/bin/bash
# e09-kdf-cost.sh (issue 10, finding 4, the KDF part): a key slot whose Argon2id cost is above what
# imgchain writes (SENSITIVE: opslimit 4, 1 GiB), checksum fixed, is refused before the KDF runs:
#   1. slot 0 at the format's bounds (opslimit 64, 2 GiB; was 10 s and 2.1 GB): every keyed tool
#      exits 4 "refused: KDF cost above what imgchain writes" in well under a second with a small
#      peak RSS (/usr/bin/time -f %M or VmHWM), nothing written.
#   2. eight such slots and a wrong passphrase (was about 40 minutes): the same, bounded.
#   3. seven such slots next to the genuine slot 0: the right passphrase opens (a warning names
#      the slots not tried); a wrong one is "wrong passphrase" (exit 3) after one KDF run only.
#   4. a genuine slot made with opslimit 5 (libsodium via ctypes, wrapping the real master key as
#      FORMAT.md 6.1 says) is refused (exit 4) unless IMGCHAIN_KDF_MAX allows it: 5:8 or max
#      open it; a bad IMGCHAIN_KDF_MAX is an error (exit 1).
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
requires imgkey
make_chain

# key_slots HOW: rewrite C/imgchain.key's slots (v1 layout: slot i at 48 + 128 i), file hash fixed.
#   hostile N    slots 0..N-1 at opslimit 64, memlimit 2 GiB (their wrappings then fail)
#   hostile-rest slots 1..7 as hostile, slot 0 kept
#   genuine OPS MIB  slot 0 re-made: the master key unwrapped with the test passphrase, wrapped again
#                    under a KDF of cost OPS, MIB MiB
key_slots()
{
	icimg_py C/imgchain.key "$@" <<'EOF2'
import ctypes, ctypes.util, os, struct, sys, icimg
p, how = sys.argv[1], sys.argv[2]
d = bytearray(open(p, "rb").read())
assert len(d) == icimg.KEY_SIZE
slot = icimg.key_slot
def hostile(i):
    o = slot(i)
    if not struct.unpack_from("<I", d, o)[0]:
        d[o:o + 128] = d[slot(0):slot(0) + 128] if i else d[o:o + 128]
        struct.pack_into("<II", d, o, 1, 2)
        d[o + 24:o + 112] = os.urandom(88)
    struct.pack_into("<QQ", d, o + 8, 64, 2 << 30)
if how == "hostile":
    for i in range(int(sys.argv[3])): hostile(i)
elif how == "hostile-rest":
    for i in range(1, 8): hostile(i)
elif how == "genuine":
    na = ctypes.CDLL(ctypes.util.find_library("sodium"))
    assert na.sodium_init() >= 0
    na.crypto_pwhash.argtypes = [ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p,
        ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_size_t, ctypes.c_int]
    aead = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_ulonglong), ctypes.c_char_p, ctypes.c_char_p,
        ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_char_p]
    na.crypto_aead_xchacha20poly1305_ietf_decrypt.argtypes = aead
    na.crypto_aead_xchacha20poly1305_ietf_encrypt.argtypes = [ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_ulonglong), ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_char_p,
        ctypes.c_ulonglong, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
    pw = os.environ["IMGCHAIN_PASSPHRASE"].encode()
    def kek(ops, mem, salt):
        k = ctypes.create_string_buffer(32)
        assert na.crypto_pwhash(k, 32, pw, len(pw), salt, ops, mem, 2) == 0
        return k.raw
    def ad(i, ops, mem, salt):
        return b"ICKEYF01" + bytes(d[16:32]) + struct.pack("<IIQQ", i, 2, ops, mem) + salt
    o = slot(0)
    ops, mem = struct.unpack_from("<QQ", d, o + 8)
    salt, nonce, wrapped = bytes(d[o + 24:o + 40]), bytes(d[o + 40:o + 64]), bytes(d[o + 64:o + 112])
    m = ctypes.create_string_buffer(32)
    mlen = ctypes.c_ulonglong()
    assert na.crypto_aead_xchacha20poly1305_ietf_decrypt(m, ctypes.byref(mlen), None, wrapped, 48,
        ad(0, ops, mem, salt), 64, nonce, kek(ops, mem, salt)) == 0
    ops, mem = int(sys.argv[3]), int(sys.argv[4]) << 20
    salt, nonce = os.urandom(16), os.urandom(24)
    c = ctypes.create_string_buffer(48)
    assert na.crypto_aead_xchacha20poly1305_ietf_encrypt(c, None, m.raw, 32,
        ad(0, ops, mem, salt), 64, None, nonce, kek(ops, mem, salt)) == 0
    struct.pack_into("<QQ", d, o + 8, ops, mem)
    d[o + 24:o + 40], d[o + 40:o + 64], d[o + 64:o + 112] = salt, nonce, c.raw
icimg.key_rehash(d)
open(p, "wb").write(d)
EOF2
}

# timed CODE MAX_SECONDS MAX_KB CMD...: CMD exits CODE within MAX_SECONDS, peak RSS under MAX_KB
timed()
{
	local code=$1 secs=$2 kb=$3 t0 t1 rss
	shift 3
	t0=$(date +%s.%N)
	expect_exit "$code" /usr/bin/time -f "rss_kb=%M" "$@"
	t1=$(date +%s.%N)
	rss=$(grep -o 'rss_kb=[0-9]*' "$TESTDIR/last.err" | tail -1 | cut -d= -f2)
	[[ -n $rss ]] || fail "no peak RSS measured for $*"
	python3 -c "import sys; sys.exit(0 if $t1 - $t0 < $secs else 1)" ||
		fail "$* took $(python3 -c "print(round($t1 - $t0, 2))") s (limit $secs s)"
	((rss < kb)) || fail "$* peaked at $rss KiB (limit $kb KiB)"
	echo "measured: $* -> exit $code, $(python3 -c "print(round($t1 - $t0, 3))") s, peak RSS $rss KiB"
}
[[ -x /usr/bin/time ]] || skip "requires /usr/bin/time"

# ---- 1. one slot at the format's bounds ----
fresh
key_slots hostile 1
snap
timed 4 2 100000 imgverify -q --data C
expect_msg "^imgverify: C/imgchain.key: key slot\(s\) 0 refused: KDF cost above what imgchain writes \(cap opslimit 4, memlimit 1024 MiB\); the KDF was not run"
timed 4 2 100000 imgrestore C p1 out
[[ ! -e out ]] || fail "a refused restore created DEST"
timed 4 2 100000 imgbackup -q --name p4 C s2
timed 4 2 100000 imgkey check C
no_tmp_files C
unchanged "a key slot above the KDF cap"

# ---- 2. eight such slots and a wrong passphrase ----
key_slots hostile 8
snap
IMGCHAIN_PASSPHRASE="not the passphrase" timed 4 2 100000 imgverify -q --data C
expect_msg "key slot\(s\) 0, 1, 2, 3, 4, 5, 6, 7 refused: KDF cost above what imgchain writes"
unchanged "eight key slots above the KDF cap"

# ---- 3. seven such slots next to the genuine one ----
fresh
key_slots hostile-rest
timed 0 10 400000 imgverify -q --data C
expect_msg "warning: key slot\(s\) 1, 2, 3, 4, 5, 6, 7 not tried: KDF cost above the cap"
IMGCHAIN_PASSPHRASE="not the passphrase" timed 3 10 400000 imgverify -q --data C
expect_msg "wrong passphrase \(no key slot opens with it; slot\(s\) 1, 2, 3, 4, 5, 6, 7 not tried"

# ---- 4. a genuine slot above the cap: only with IMGCHAIN_KDF_MAX ----
fresh
key_slots genuine 5 8
expect_exit 4 imgverify -q --data C
expect_msg "key slot\(s\) 0 refused: KDF cost above what imgchain writes"
IMGCHAIN_KDF_MAX=5:8 expect_exit 0 imgverify -q --data C
IMGCHAIN_KDF_MAX=max expect_exit 0 imgrestore -q C p2 out
cmp out s2 || fail "restore with IMGCHAIN_KDF_MAX=max: wrong bytes"
IMGCHAIN_KDF_MAX=4:8 expect_exit 4 imgverify -q --data C
IMGCHAIN_KDF_MAX=lots expect_exit 1 imgverify -q --data C
expect_msg "IMGCHAIN_KDF_MAX='lots': expected interactive, moderate, sensitive, max or OPSLIMIT:MEMLIMIT_MIB"
exit 0
