# cdp-lib.sh: what the CDP tests share (sourced after tests/lib/functions.sh).
#   cdp_setup SIZE            a disk `disk` of SIZE bytes with data, a chain C (one full of
#                             it, which makes the key) and the passphrase file `pass`
#   cdp_start                 nbdkit with the imgcdp filter in front of the file plugin
#                             serving `disk` on $SOCK (pid in $NBDKIT_PID); stopped at exit
#   cdp_io CMD...             a qemu-io session over NBD running each CMD (one -c each);
#                             writeback: writes without FUA, flushes where asked (and at exit)
#   cdp_mark K                after an acknowledged flush: T[K] = now, snap.K = the disk
#   cdp_journal               the path of the newest journal file
#   cdp_check K...            imgrestore --at T[K] equals snap.K, for each K
#   cdp_gone K...             imgrestore --at T[K] fails: no checkpoint (removed), no DEST
requires nbdkit qemu-io imgbackup imgrestore cmp
FILTER=$top_builddir/nbdkit-imgcdp-filter.so
[[ -f $FILTER ]] || fail "no $FILTER (the build makes it)"
SOCK=$TESTDIR/nbd.sock
URI="nbd+unix:///?socket=$SOCK"
declare -A T=()

cdp_setup()
{
	truncate -s "$1" disk
	write_at disk 0 300000 a
	write_at disk $(($1 - 70000)) 70000 b
	expect_exit 0 imgbackup -q C disk
	printf '%s\n' "$IMGCHAIN_PASSPHRASE" >pass
}

cdp_stop()
{
	[[ -z ${NBDKIT_PID:-} ]] || kill_quiet "$NBDKIT_PID"
	NBDKIT_PID=
}

cdp_start()
{
	rm -f "$SOCK"
	# in the foreground (in the background nbdkit's messages would go nowhere)
	nbdkit -f --log=stderr -U "$SOCK" --filter="$FILTER" file disk chain=C \
		passphrase-file=pass "$@" 2>>nbdkit.log &
	NBDKIT_PID=$!
	cleanup_fn cdp_stop
	for _ in $(seq 600); do
		[[ -S $SOCK ]] && break
		kill -0 "$NBDKIT_PID" 2>/dev/null || { cat nbdkit.log >&2; fail "nbdkit did not start"; }
		sleep 0.1
	done
	[[ -S $SOCK ]] || fail "nbdkit did not serve in 60 s"
}

cdp_io()
{
	local a=()
	for c in "$@"; do a+=(-c "$c"); done
	qemu-io -t writeback -f raw "$URI" "${a[@]}" >>io.log 2>&1 || { tail io.log >&2; fail "qemu-io ${a[*]} failed"; }
}

cdp_mark()
{
	T[$1]=$(date +%s.%N)
	cp --sparse=always disk "snap.$1"
}

cdp_journal() { ls C/cdp/*.cdp | tail -n 1; }

cdp_check()
{
	local k
	for k in "$@"; do
		expect_exit 0 imgrestore -P pass --at "${T[$k]}" C r.check
		cmp r.check "snap.$k" || fail "checkpoint $k: the restored disk differs"
		rm -f r.check
	done
}

cdp_gone()
{
	local k
	for k in "$@"; do
		expect_exit 1 imgrestore -P pass --at "${T[$k]}" C r.gone
		expect_msg "no checkpoint at or before"
		[[ ! -e r.gone ]] || fail "a refused restore left DEST"
	done
}
