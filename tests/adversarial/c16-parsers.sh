#!/bin/bash
# c16-parsers.sh (doc/SECURITY.md case 16): a deterministic (seeded) mutation sweep over every
# parser input of a real chain: the key file, an image's fixed header, its current slot, its index,
# its records, and a changed-blocks file.  Half of the binary variants have their checksums fixed
# (so that they reach the field checks and the crypto), half not.  Every run must end by itself with
# a documented exit code and a message naming the file (never a signal, a hang, a sanitizer report);
# a variant that keyless checks accept must be refused with the key unless only fields that neither
# carry nor protect data changed; a refused run changes nothing.  The coverage-guided fuzzers
# (tests/fuzz/fuzz_*.c, run by the CI fuzz phase under ASan+UBSan) take these parsers much further;
# this sweep runs in every `make check`, the asan phase included.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
requires timeout
make_chain
img=00000002.img
mkdir v
icimg_py pristine v "$img" <<'EOF'
import os, random, struct, sys, icimg
src, out, img = sys.argv[1], sys.argv[2], sys.argv[3]
r = random.Random("c16-parsers")
key = open(os.path.join(src, "imgchain.key"), "rb").read()
raw = open(os.path.join(src, img), "rb").read()
base = icimg.Image(os.path.join(src, img))
soff, s = base.slot_off, base.slot
ioff, icount = s["index_offset"], s["index_count"]
lst = open(os.path.join(out, "list"), "w")

def mutate(buf, lo, hi, n):
    """n random byte changes in buf[lo:hi]: a bit flip, a random byte, or an extreme value"""
    where = []
    for _ in range(n):
        at = r.randrange(lo, hi)
        old = buf[at]
        how = r.randrange(3)
        if how == 0:
            buf[at] ^= 1 << r.randrange(8)
        elif how == 1:
            buf[at] = r.randrange(256)
        else:
            buf[at] = r.choice((0, 0x7f, 0x80, 0xff))
        if buf[at] == old:
            buf[at] ^= 0x80
        where.append(at)
    return where

def fix_index(buf, entries):
    for e in entries if base.version == 1 else ():    # v2 entries have no entry_hash
        at = ioff + 64 * e
        struct.pack_into("<Q", buf, at + 56, icimg.xxh64(buf[at:at + 56]))
    buf[soff + 80:soff + 96] = icimg.xxh128(buf[ioff:ioff + 64 * icount])
    icimg.slot_rehash(buf, soff)

def emit(kind, n, buf, fixed, where):
    name = "%s-%02d" % (kind, n)
    open(os.path.join(out, name), "wb").write(buf)
    lst.write("%s %s %s %s\n" % (kind, name, "fixed" if fixed else "raw",
                                 ",".join(str(w) for w in sorted(set(where)))))

for n in range(16):                      # the key file
    b = bytearray(key)
    fixed = n % 2 == 0
    w = mutate(b, 0, icimg.KEY_HASH_OFF if fixed else icimg.KEY_SIZE, 1 + n % 3)
    if fixed:
        icimg.key_rehash(b)
    emit("key", n, b, fixed, w)
for n in range(12):                      # the fixed header
    b = bytearray(raw)
    fixed = n % 4 != 3
    w = mutate(b, 0, 504 if fixed else 512, 1 + n % 2)
    if fixed:
        icimg.header_rehash(b)
    emit("header", n, b, fixed, w)
for n in range(16):                      # the current slot (offsets inside the slot)
    b = bytearray(raw)
    fixed = n % 4 != 3
    w = mutate(b, soff, soff + (504 if fixed else 512), 1 + n % 2)
    if fixed:
        icimg.slot_rehash(b, soff)
    emit("slot", n, b, fixed, [x - soff for x in w])
for n in range(20):                      # the index (offsets inside an entry)
    b = bytearray(raw)
    fixed = n % 4 != 3
    w = mutate(b, ioff, ioff + 64 * icount, 1 + n % 2)
    if fixed:
        fix_index(b, set((x - ioff) // 64 for x in w))
    emit("index", n, b, fixed, [(x - ioff) % 64 for x in w])
for n in range(6):                       # the records, with their checksums fixed
    b = bytearray(raw)
    e = base.data_entries()[n % len(base.data_entries())]
    i = base.entries.index(e)
    w = mutate(b, e["offset"], e["offset"] + e["stored_len"], 1 + n % 3)
    struct.pack_into("<Q", b, ioff + 64 * i + 32, icimg.xxh64(b[e["offset"]:e["offset"] + e["stored_len"]]))
    fix_index(b, [i])
    emit("record", n, b, True, [x - e["offset"] for x in w])
# every block s2 changed since p3 (the latest point, the parent): 2, 3, 9, 12, 15
good = b"# changed since p3\n131072 4096\n200000 10\n\n0x90000 100\n786432 65536\n983000 17000\n"
alphabet = b"0123456789 \t\nx#-+abcfF\0\xff"
for n in range(12):                      # the changed-blocks file (text)
    t = bytearray(good)
    for _ in range(1 + n % 4):
        at = r.randrange(len(t))
        how = r.randrange(4)
        if how == 0:
            t[at] = r.choice(alphabet)
        elif how == 1:
            t[at:at] = bytes([r.choice(alphabet)]) * r.randrange(1, 30)
        elif how == 2:
            del t[at:at + r.randrange(1, 4)]
        else:
            t[at:at] = b"18446744073709551615"
    emit("changed", n, t, False, [])
EOF

# run EXPECTED CMD...: CMD ends by itself (60 s at most) with a code in EXPECTED (e.g. "0 4")
run()
{
	local want=$1
	shift
	expect_exit_any "$want" timeout -s KILL 60 "$@"
}

expect_exit_any()
{
	local want=$1
	shift
	set +e
	"$@" >last.out 2>last.err </dev/null
	LAST_RC=$?
	set -e
	LAST_ERR=$(cat last.err)
	((LAST_RC < 128)) || fail "$WHAT: '$*' died of signal $((LAST_RC - 128)): $LAST_ERR"
	expect_clean_rc
	[[ " $want " == *" $LAST_RC "* ]] ||
		fail "$WHAT: '$*' exited $LAST_RC, expected one of: $want: $LAST_ERR"
}

# fields that no reader needs to check: the slot's generation (any non-zero one is valid while slot
# B is empty) and an index entry's change digest (only imgbackup uses it, to decide whether a block
# changed: a wrong one makes it store the block again, see d05-digest.sh); nothing else may pass
# with the key
benign()
{
	local kind=$1 where=$2 w
	for w in ${where//,/ }; do
		case $kind in
		slot) ((w < 8)) || return 1 ;;    # generation
		index) ((w >= 40 && w < 56)) || return 1 ;; # the change digest (v2: then origin_id)
		*) return 1 ;;
		esac
	done
}

declare -A outcome
total=0
snap C "$IMGCHAIN_STATE_DIR"
while read -r kind name how where; do
	WHAT="$name ($how, bytes $where)"
	total=$((total + 1))
	case $kind in
	key)
		cp "v/$name" C/imgchain.key
		run "3 4" imgverify --data C
		expect_msg "^imgverify: C(/imgchain.key)?: "
		cp pristine/imgchain.key C/imgchain.key
		;;
	header | slot | index)
		cp "v/$name" C/$img
		run "0 4" imgverify C
		if ((LAST_RC == 0)); then
			run "0 3 4" imgverify --data C
			((LAST_RC == 0)) || expect_msg "^imgverify: C(/$img|/imgchain.key)?: "
			((LAST_RC != 0)) || benign $kind "$where" ||
				fail "$WHAT: accepted with the key: $(cmp -l pristine/$img C/$img | head -5)"
		else
			expect_msg "^imgverify: C/$img: "
			# (imginfo reads headers and slots only: a bad index is not its business)
			run "0 4" imginfo --json C
			((LAST_RC == 0)) || expect_out "\"file\": \"$img\", \"error\": \"[^\"]+\""
			run "4" imgrestore C p2 out
			expect_msg "^imgrestore: C(/$img)?: "
			[[ ! -e out ]] || fail "$WHAT: a failed restore left DEST"
		fi
		cp pristine/$img C/$img
		;;
	record)
		cp "v/$name" C/$img
		run "0" imgverify C
		run "4" imgverify --data C
		expect_msg "C/$img: .*(authentication failed|seal mismatch)"
		cp pristine/$img C/$img
		;;
	changed)
		run "0 1" imgbackup -q --changed-blocks "v/$name" --name cb C s2
		if ((LAST_RC == 0)); then
			# (a mutated list may miss changes: then cb is not s2, by contract; it is sound)
			expect_exit 0 imgverify -q --data C cb
			rm -rf C "$IMGCHAIN_STATE_DIR"
			cp -a pristine C
			cp -a pristine-state "$IMGCHAIN_STATE_DIR"
		else
			expect_msg "v/$name(:[0-9]+)?: "
		fi
		;;
	esac
	outcome[$kind:$LAST_RC]=$((${outcome[$kind:$LAST_RC]:-0} + 1))
	unchanged "$WHAT"
done <v/list
for k in $(printf '%s\n' "${!outcome[@]}" | sort); do
	printf '%s=%s ' "$k" "${outcome[$k]}"
done
echo "($total variants)"
