# cons-lib.sh: shared setup of the imgconsolidate tests (sourced, never run by itself).
#
#   make_real_chain SIZE_MIB   $CHAIN from a realistic disk (tests/lib/mkdisk.sh): full p00,
#                              incrementals p01..p10, a branch br off p05; each source kept
#                              in $SRC/NAME for comparison
#   make_small_chain           the same shape from 8 MiB of generated data, 4 KiB blocks (fast)
#   keyless ARGS...            run imgconsolidate with the key file out of reach and no
#                              passphrase in the environment; sets $RC, output in last.out/err
#   restore_points NAME...     each restores byte-identical to $SRC/NAME
#   check_points NAME...       the same, and imgverify --data passes
#   point_names                the chain's point names, sorted, on one line
#   point_field NAME FIELD     a field of imginfo --json for point NAME (kind, parent, ...)
#   alloc_kib                  KiB allocated to the chain's files
#   CONS_VERIFY                "--verify" where $TESTDIR's file system shares extents (XFS
#                              reflink, btrfs): merges there clone records without reading
#                              them, so the tests that expect a merge to find damage ask
source "${top_srcdir:-.}/tests/lib/functions.sh"

requires imgbackup imgrestore imgverify imgconsolidate cmp
CHAIN=$TESTDIR/chain
SRC=$TESTDIR/src
mkdir -p "$SRC"
export IMGCHAIN_STATE_DIR=$TESTDIR/state

_backup_as()
{
	local name=$1 disk=$2 parent=${3:-}
	imgbackup -q ${BLOCK:+-b $BLOCK} ${parent:+-p $parent} -n "$name" "$CHAIN" "$disk"
	cp --sparse=always "$disk" "$SRC/$name"
}

make_real_chain()
{
	local size=${1:-64} disk=$TESTDIR/disk i
	source "$top_srcdir/tests/lib/mkdisk.sh"
	requires mkfs.ext4 debugfs mcopy sfdisk
	mkdisk_create "$disk" "$size" >/dev/null
	_backup_as p00 "$disk"
	for i in 01 02 03 04 05 06 07 08 09 10; do
		mkdisk_mutate "$disk" "$i" >/dev/null
		_backup_as "p$i" "$disk"
		if [[ $i == 05 ]]; then
			cp --sparse=always "$disk" "$TESTDIR/bdisk"
		fi
	done
	mkdisk_mutate "$TESTDIR/bdisk" 99 >/dev/null
	_backup_as br "$TESTDIR/bdisk" p05
	rm -f "$disk" "$TESTDIR/bdisk"
}

_mutate_small()
{
	local disk=$1 seed=$2 k
	for k in 0 1 2 3 4 5 6 7 8 9 10 11; do
		write_at "$disk" $(( ($(cksum <<<"$seed-$k" | cut -d' ' -f1) % 2000) * 4096 + k * 7 )) \
			$(( 3000 + k * 1500 )) "$seed-$k"
	done
	zero_at "$disk" $(( ($(cksum <<<"z$seed" | cut -d' ' -f1) % 2000) * 4096 )) 20000
}

make_small_chain()
{
	local disk=$TESTDIR/disk i
	BLOCK=4K
	mkrandom "$disk" 8 base
	zero_at "$disk" 1048576 2097152
	_backup_as p00 "$disk"
	for i in 01 02 03 04 05 06 07 08 09 10; do
		_mutate_small "$disk" "$i"
		_backup_as "p$i" "$disk"
		[[ $i != 05 ]] || cp "$disk" "$TESTDIR/bdisk"
	done
	_mutate_small "$TESTDIR/bdisk" 99
	_backup_as br "$TESTDIR/bdisk" p05
	rm -f "$disk" "$TESTDIR/bdisk"
}

# does the file system of $1 share extents between files (cp --reflink=always works)?
fs_clones()
{
	local r=0
	head -c 8192 /dev/zero >"$1/.clone-a"
	cp --reflink=always "$1/.clone-a" "$1/.clone-b" 2>/dev/null || r=1
	rm -f "$1/.clone-a" "$1/.clone-b"
	return $r
}
CONS_VERIFY=
! fs_clones "$TESTDIR" || CONS_VERIFY=--verify

keyless()
{
	mv "$CHAIN/imgchain.key" "$TESTDIR/key.away"
	chmod 000 "$TESTDIR/key.away"
	set +e
	# (the braces keep bash's "Killed" notice of a crash-tested run off the log)
	{ env -u IMGCHAIN_PASSPHRASE -u IMGCHAIN_PASSPHRASE_FILE -u IMGCHAIN_NEW_PASSPHRASE \
		imgconsolidate "$@" >"$TESTDIR/last.out" 2>"$TESTDIR/last.err" </dev/null; } 2>/dev/null
	RC=$?
	set -e
	chmod 600 "$TESTDIR/key.away"
	mv "$TESTDIR/key.away" "$CHAIN/imgchain.key"
	LAST_OUT=$(cat "$TESTDIR/last.out")
	LAST_ERR=$(cat "$TESTDIR/last.err")
}

# keyless, and the exit status must be $1
keyless_expect()
{
	local want=$1
	shift
	keyless "$@"
	if [[ $RC -ne $want ]]; then
		echo "--- imgconsolidate $*: stdout:" >&2
		cat "$TESTDIR/last.out" >&2
		echo "--- stderr:" >&2
		cat "$TESTDIR/last.err" >&2
		fail "imgconsolidate $* exited $RC, expected $want"
	fi
}

# restore_points NAME...: each restores byte-identical to $SRC/NAME (failures name $WHAT if set)
restore_points()
{
	local n
	for n in "$@"; do
		rm -f "$TESTDIR/out"
		imgrestore -q "$CHAIN" "$n" "$TESTDIR/out" || fail "${WHAT:+$WHAT: }restore of '$n' failed"
		cmp -s "$TESTDIR/out" "$SRC/$n" ||
			fail "${WHAT:+$WHAT: }'$n' does not restore byte-identical"
	done
	rm -f "$TESTDIR/out"
}

check_points()
{
	restore_points "$@"
	imgverify -q --data "$CHAIN" || fail "imgverify --data failed"
}

point_names()
{
	imginfo --json "$CHAIN" >"$TESTDIR/.pn.json" || fail "imginfo --json failed"
	python3 -c 'import json,sys; print(" ".join(sorted(p["name"] for p in json.load(open(sys.argv[1]))["points"])))' \
		"$TESTDIR/.pn.json"
}

# point_field NAME FIELD: a field of imginfo --json for point NAME
point_field()
{
	imginfo --json "$CHAIN" >"$TESTDIR/.pn.json" || fail "imginfo --json failed"
	python3 -c 'import json,sys; print([p for p in json.load(open(sys.argv[1]))["points"] if p["name"] == sys.argv[2]][0][sys.argv[3]])' \
		"$TESTDIR/.pn.json" "$1" "$2"
}

alloc_kib() { du -sk "$CHAIN" | cut -f1; }
