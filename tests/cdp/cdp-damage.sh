#!/bin/bash
# cdp-damage.sh: the journal's storage is not trusted (doc/SECURITY.md).  A record whose bytes
# changed (with or without its checksum fixed), two records swapped, a record replayed into
# another interval (every checksum and offset fixed), a checkpoint re-timed, a damaged header:
# `imgrestore --at` refuses (exit 4) every checkpoint the change reaches, naming them, never
# writes wrong bytes, and still restores the checkpoints before it exactly; one byte changed
# anywhere (40 seeded places) never gives the disk of a later checkpoint.  A planted
# symlink is refused.  A wrong passphrase keeps the filter from starting.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/cdp/cdp-lib.sh"

cdpj() { PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$top_srcdir/tests/lib" python3 "$top_srcdir/tests/cdp/cdpj.py" "$@"; }

size=$((4 * 1048576))
cdp_setup $size

# ---- a wrong passphrase: nbdkit refuses to start, no journal -------------------------------
echo "not the passphrase" >wrong
if nbdkit -U "$SOCK" -P "$TESTDIR/bad.pid" --filter="$FILTER" file disk chain=C \
	passphrase-file=wrong 2>bad.log; then
	sleep 1; kill_quiet "$(cat bad.pid 2>/dev/null)"; fail "nbdkit started with a wrong passphrase"
fi
grep -q 'wrong passphrase' bad.log || { cat bad.log >&2; fail "no 'wrong passphrase' message"; }
[[ ! -e C/cdp ]] || [[ -z $(ls C/cdp) ]] || fail "a refused start left a journal"
if nbdkit -U "$SOCK" --filter="$FILTER" file disk 2>bad.log; then fail "started without chain="; fi
grep -q 'chain=DIR is required' bad.log || fail "no message for a missing chain="

# ---- a journal with four known checkpoints --------------------------------------------------
cdp_start
cdp_io flush; cdp_mark 0
cdp_io 'write -P 0x11 0 200000' flush; cdp_mark 1
cdp_io 'write -P 0x22 1000000 300000' flush; cdp_mark 2
cdp_io 'write -P 0x33 2000000 300000' flush; cdp_mark 3
cdp_stop
j=$(cdp_journal)
cp "$j" good.cdp
for k in 0 1 2 3; do I[$k]=$(cdpj good.cdp at "${T[$k]}"); done

# restore each of 1..3: before the damage exact, from it on refused
check()
{
	local what=$1 first=$2 k
	echo "case: $what (intervals ${I[*]})"
	for k in 1 2 3; do
		if ((k < first)); then
			expect_exit 0 imgrestore -P pass --at "${T[$k]}" C r
			cmp r "snap.$k" || fail "$what: checkpoint $k (before the damage) differs"
			rm -f r
		else
			echo "  checkpoint $k: refused?"
			expect_exit 4 imgrestore -P pass --at "${T[$k]}" C r
			[[ ! -e r ]] || fail "$what: a refused restore left DEST"
		fi
	done
	cp good.cdp "$j"
}

expect_exit 0 imgrestore -P pass --checkpoints C
expect_out "session 1 checkpoint ${I[3]} "
cdpj "$j" flip "${I[1]}"                 # a record's bytes, checksum not fixed
expect_exit 4 imgrestore -P pass --checkpoints C
expect_out "session 1 checkpoint ${I[1]} [^ ]+ [^ ]+\$"
expect_out "session 1 checkpoint ${I[2]} .* FAILS AUTHENTICATION\$"
check "changed record" 2
expect_msg "checkpoints [0-9]+ to [0-9]+ fail authentication"
cdpj "$j" flip "${I[1]}" fix             # the same with its checksums fixed: the MAC covers them
expect_exit 4 imgrestore -P pass --at "${T[2]}" C r
expect_msg "checkpoints [0-9]+ to [0-9]+ fail authentication"
check "changed record, checksums fixed" 2
cdpj "$j" swap "${I[2]}"                 # two records of one interval swapped
check "swapped records" 3
cdpj "$j" replay "${I[0]}" "${I[2]}"     # a record of the first write replayed into the third's
check "replayed record" 3
cdpj "$j" retime "${I[2]}" $(($(cut -d. -f1 <<<"${T[1]}") - 100))   # checkpoint 2 moved back
check "re-timed checkpoint" 2
cdpj "$j" retime "${I[2]}" 4000000000    # ... or forward: the one before it is not the last
check "checkpoint moved forward" 2
# the header (its checksum fixed): nothing of the file is used
icimg_py "$j" <<'PY'
import sys, struct
from icimg import xxh64
p = sys.argv[1]; d = bytearray(open(p, "rb").read())
d[72] ^= 1                                          # created
struct.pack_into("<Q", d, 4088, xxh64(bytes(d[:4088])))
open(p, "wb").write(d)
PY
expect_exit 4 imgrestore -P pass --at "${T[1]}" C r
expect_msg "journal header fails authentication"
cp good.cdp "$j"

# ---- torn anywhere (a crash inside a flush's fdatasync): the last whole checkpoint, exactly ---
# the disk at checkpoint i is snap.k for the first mark k whose checkpoint is i or later
cdpj good.cdp ends >ends
jsize=$(stat -c %s good.cdp)
for cut in 4000 4096 4200 $(awk '{print $1 - 1; print $1; print $1 + 30}' ends | shuf -n 24 --random-source=<(yes)); do
	((cut <= jsize)) || continue
	head -c "$cut" good.cdp >"$j"
	last=$(awk -v c="$cut" '$1 <= c { i = $2 } END { print (i == "" ? -1 : i) }' ends)
	if ((last < 0)); then
		expect_exit 1 imgrestore -P pass --at "$(date +%s)" C r
		continue
	fi
	for k in 0 1 2 3; do ((I[k] >= last)) && break; done
	expect_exit 0 imgrestore -P pass --at "$(date +%s)" C r
	cmp r "snap.$k" || fail "journal cut at $cut (last whole checkpoint $last): not mark $k's disk"
	rm -f r
done
cp good.cdp "$j"

# ---- hostile bytes: one byte changed at 40 seeded places (header, heads, records, checkpoints) -
# exit 0, 1 or 4 and no signal; a restore that succeeds is the disk of a checkpoint at or
# before the time asked (never bytes the journal did not hold then)
for off in $(python3 -c "import random; r = random.Random(14); print(*sorted(r.sample(range($jsize), 40)))"); do
	cp good.cdp "$j"
	flip_bit "$j" "$off" $((off % 8))
	for k in 1 3; do
		set +e
		imgrestore -q -P pass --at "${T[$k]}" C r 2>/dev/null
		rc=$?
		set -e
		case $rc in
		0) ok=0
		   for m in $(seq 0 "$k"); do cmp -s r "snap.$m" && ok=1; done
		   ((ok)) || fail "byte $off changed: --at checkpoint $k restored bytes of no checkpoint up to it" ;;
		1 | 4) [[ ! -e r ]] || fail "byte $off changed: a failed restore left DEST" ;;
		*) fail "byte $off changed: imgrestore exited $rc" ;;
		esac
		rm -f r
	done
done
cp good.cdp "$j"

# ---- a session that died while its header was written: ignored, said ---------------------------
head -c 1000 /dev/urandom >C/cdp/00000005.cdp
expect_exit 0 imgrestore -P pass --at "${T[3]}" C r
expect_msg "00000005.cdp: .*ignored \(a session that never started\)"
cmp r snap.3 || fail "with a torn session header beside it: checkpoint 3 differs"
rm -f r C/cdp/00000005.cdp

# ---- a link planted under a journal name: refused, never followed ---------------------------
ln -s "$TESTDIR/good.cdp" C/cdp/00000009.cdp
expect_exit 4 imgrestore -P pass --at "${T[3]}" C r
expect_msg "not a regular file \(symlink\)"
rm C/cdp/00000009.cdp
expect_exit 0 imgrestore -P pass --at "${T[3]}" C r
cmp r snap.3 || fail "after the damage tests: checkpoint 3 differs"
