#!/bin/bash
# e03-plants.sh (issue 10, finding 2): the storage plants links and special files under every
# name a chain directory, an overlay directory or the key holder's state directory can hold.
# For each name and each kind of plant -- a symlink to a file outside (a copy of what was there,
# so that following it would "work"), a dangling symlink, a FIFO, a directory and (as root) a
# device node with /dev/null's numbers -- every tool the name concerns ends by itself (run under
# `timeout -s KILL 30`: a hang fails), with the exact exit code and a message naming the plant
# ("not a regular file (KIND)"), the chain unchanged where the tool refuses, the link's target
# byte-identical and the dangling link's target never created.  The device node is never
# opened: the tools run under strace and no open of its name appears (but O_PATH, which
# opens nothing).  Temporary names
# (.tmp-*) are leftovers: a link there is removed (never followed), anything else is left alone
# with a warning and does not stop a backup.  The lock's holder text, which comes from the
# storage, is printed with its control bytes escaped (finding 8), and the lock file is never
# truncated.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
requires imgkey imgconsolidate timeout mkfifo
make_chain

KINDS=(link dangle fifo dir)
if [[ $(id -u) == 0 ]] && command -v mknod >/dev/null; then
	KINDS+=(dev)
else
	echo "note: not root, device node plants not tried"
fi
HAVE_STRACE=false
command -v strace >/dev/null && strace -f -qq -o /dev/null true 2>/dev/null && HAVE_STRACE=true
printf '%s\n' "$IMGCHAIN_PASSPHRASE" >pass
printf 'another passphrase\n' >newpass

kind_re()
{
	case $1 in
	link | dangle) echo symlink ;;
	fifo) echo FIFO ;;
	dir) echo directory ;;
	dev) echo device ;;
	esac
}

# plant KIND PATH: PATH becomes a plant of KIND.  outside/target is a copy of what PATH held
# (or a text), the target of a `link`; `dangle` points at outside/ghost, which must never appear.
OUT_SHA=
PLANT=
plant()
{
	local kind=$1 path=$2
	rm -rf outside
	mkdir outside
	if [[ -d $path && ! -L $path ]]; then
		mkdir outside/target
		echo "someone else's file" >outside/target/file
	elif [[ -f $path && ! -L $path ]]; then
		cp "$path" outside/target
	else
		echo "someone else's file" >outside/target
	fi
	OUT_SHA=$(_out_sum)
	rm -rf "$path"
	case $kind in
	link) ln -s "$TESTDIR/outside/target" "$path" ;;
	dangle) ln -s "$TESTDIR/outside/ghost" "$path" ;;
	fifo) mkfifo "$path" ;;
	dir) mkdir "$path" ;;
	dev) mknod "$path" c 1 3 ;;
	esac
	PLANT=$path
}

_out_sum() { sha_tree outside | sha256sum; }

outside_ok()
{
	[[ $(_out_sum) == "$OUT_SHA" ]] ||
		fail "$1: the file outside the chain that $PLANT links to was changed"
	[[ ! -e outside/ghost && ! -L outside/ghost ]] ||
		fail "$1: the dangling link $PLANT was followed: its target was created"
	[[ $(ls -A outside) == target ]] || fail "$1: files appeared outside the chain: $(ls -A outside)"
}

# run CODE CMD...: CMD must end by itself (killed after 30 s otherwise) with exit CODE.  When
# the plant is a device node, CMD runs under strace and must not have opened it.
run()
{
	local want=$1 pre=()
	shift
	if [[ -c $PLANT ]] && $HAVE_STRACE; then
		# (LeakSanitizer cannot run under ptrace: the asan phase's leak check is off here)
		pre=(env ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
			strace -f -qq -e trace=open,openat,openat2,creat,truncate -o "$TESTDIR/trace")
	fi
	set +e
	"${pre[@]}" timeout -s KILL 30 "$@" >"$TESTDIR/last.out" 2>"$TESTDIR/last.err" </dev/null
	LAST_RC=$?
	set -e
	LAST_OUT=$(cat "$TESTDIR/last.out")
	LAST_ERR=$(cat "$TESTDIR/last.err")
	((LAST_RC != 137)) || fail "'$*' did not end by itself with $PLANT planted (killed after 30 s)"
	if ((LAST_RC != want)); then
		cat "$TESTDIR/last.err" >&2
		fail "'$*' with $PLANT planted exited $LAST_RC, expected $want"
	fi
	expect_clean_rc
	# (an O_PATH descriptor only names the inode: the driver is not asked to open anything)
	if ((${#pre[@]})) &&
		grep -E "(open|openat|openat2|creat|truncate)\(.*\"([^\"]*/)?$(basename "$PLANT")\"" \
			"$TESTDIR/trace" | grep -vq O_PATH; then
		fail "'$*' opened the device node $PLANT"
	fi
	return 0
}

# the message (imginfo: its listing) names the plant and says what it is
named()
{
	local re="$1: not a regular file \($(kind_re "$2")\)"
	grep -Eq -- "$re" "$TESTDIR/last.err" "$TESTDIR/last.out" ||
		{ cat "$TESTDIR/last.out" "$TESTDIR/last.err" >&2; fail "no message matches /$re/"; }
}

# ---- the chain directory itself may be a link the user made: only its entries are untrusted --
PLANT=
ln -s C Clink
run 0 imgverify -q --data Clink
run 0 imgbackup -q --name vialink Clink s2
run 0 imgrestore Clink vialink outl
cmp -s outl s2 || fail "a backup through a linked chain directory restored wrong bytes"
rm -f Clink outl

# ---- an image name: the point is gone, the others are served --------------------------------
for k in "${KINDS[@]}"; do
	fresh
	plant $k C/00000002.img
	snap C "$IMGCHAIN_STATE_DIR" outside
	run 4 imginfo C
	named C/00000002.img $k
	run 4 imgverify C
	named C/00000002.img $k
	run 4 imgverify --data C
	named C/00000002.img $k
	run 4 imgrestore C p2 out
	named C/00000002.img $k
	[[ ! -e out ]] || fail "imgrestore wrote a disk for p2 from $PLANT"
	run 0 imgrestore C p3 out3
	cmp -s out3 s3 || fail "p3 restored wrong bytes beside $PLANT"
	rm -f out3
	unchanged "readers with $PLANT ($k)"
	outside_ok "readers ($k)"
	# a backup is not hindered; its point is listed and restorable
	run 0 imgbackup -q --name p4 C s2
	[[ -f C/00000004.img ]] || fail "the backup beside $PLANT did not write 00000004.img"
	run 0 imgrestore C p4 out4
	cmp -s out4 s2 || fail "p4 restored wrong bytes"
	rm -f out4
	# a consolidation warns, names it, and leaves it alone
	run 0 imgconsolidate --merge p1..p3 C
	expect_msg "warning: C/00000002.img: not a regular file \($(kind_re $k)\)"
	[[ -e $PLANT || -L $PLANT ]] || fail "imgconsolidate removed $PLANT"
	run 0 imgrestore C p3 out3
	cmp -s out3 s3 || fail "p3 restored wrong bytes after the merge"
	rm -f out3
	outside_ok "writers ($k)"
done

# a mount skips it, at start and when it appears later (the rescan ends by itself)
if fuse_usable; then
	for k in "${KINDS[@]}"; do
		fresh
		plant $k C/00000002.img
		mount_chain C
		[[ $(ls "$TESTDIR/mnt" | tr '\n' ' ') == "latest p1 p3 " ]] ||
			fail "the mount lists $(ls "$TESTDIR/mnt" | tr '\n' ' ') beside $PLANT"
		cmp -s "$TESTDIR/mnt/p3/disk.raw" s3 || fail "the mount served wrong bytes for p3"
		grep -Eq "skipping ([^ ]*/)?C/00000002.img: not a regular file \($(kind_re $k)\)" mount.log ||
			fail "imgmount did not log $PLANT: $(cat mount.log)"
		plant $k C/00000007.img
		timeout -s KILL 30 ls "$TESTDIR/mnt" >listing || fail "a rescan with $PLANT did not end"
		[[ $(tr '\n' ' ' <listing) == "latest p1 p3 " ]] || fail "after the rescan: $(cat listing)"
		grep -Eq "skipping ([^ ]*/)?C/00000007.img: not a regular file \($(kind_re $k)\)" mount.log ||
			fail "imgmount's rescan did not log $PLANT: $(cat mount.log)"
		outside_ok "imgmount ($k)"
		unmount_chain
	done
fi

# ---- the key file ----------------------------------------------------------------------------
for k in "${KINDS[@]}"; do
	fresh
	plant $k C/imgchain.key
	snap C "$IMGCHAIN_STATE_DIR" outside
	run 4 imgrestore C p2 out
	named C/imgchain.key $k
	run 4 imgverify --data C
	named C/imgchain.key $k
	run 4 imgbackup -q --name p4 C s2
	named C/imgchain.key $k
	run 4 imgkey list C
	named C/imgchain.key $k
	run 4 imgkey add --passphrase-file pass --new-passphrase-file newpass C
	named C/imgchain.key $k
	if fuse_usable; then
		mkdir -p mnt
		run 4 imgmount C mnt
		named C/imgchain.key $k
		! mountpoint -q mnt || { fusermount3 -u mnt; fail "imgmount mounted with $PLANT"; }
	fi
	[[ ! -e out ]] || fail "imgrestore wrote a disk with $PLANT"
	unchanged "keyed tools with $PLANT ($k)"
	outside_ok "keyed tools ($k)"
done

# ---- the lock: writers refuse; the file is never truncated; the holder text is sanitised --
for k in "${KINDS[@]}"; do
	fresh
	plant $k C/lock
	snap C "$IMGCHAIN_STATE_DIR" outside
	run 4 imgbackup -q --name p4 C s2
	named C/lock $k
	run 4 imgconsolidate -q --merge p1..p2 C
	named C/lock $k
	run 4 imgkey add --passphrase-file pass --new-passphrase-file newpass C
	named C/lock $k
	unchanged "writers with $PLANT ($k)"
	outside_ok "writers ($k)"
done
# a regular lock file: put back byte for byte by the holder, never truncated
fresh
printf 'pid 1 on \033]0;owned\007\033[2J here\nsecond line the storage wrote, kept as it is\n' >C/lock
lock_sha=$(sha256sum <C/lock)
run 0 imgbackup -q --name p4 C s2
[[ $(sha256sum <C/lock) == "$lock_sha" ]] || fail "the lock file's content was not put back: $(cat -A C/lock)"
# a lock file hard-linked to an image (the storage can do that): its bytes are never written
fresh
rm C/lock
ln C/00000003.img C/lock
run 0 imgbackup -q --name p4 C s2
run 0 imgrestore C p3 out3
cmp -s out3 s3 || fail "p3 damaged through a hard-linked lock file"
rm -f out3
[[ $(stat -c %i C/lock) == "$(stat -c %i C/00000003.img)" ]] || fail "the hard link was broken"
[[ $(sha256sum <C/lock) == "$(sha256sum <pristine/00000003.img)" ]] ||
	fail "the hard-linked lock (an image) was written"
# a live holder's text with terminal escapes: printed escaped
fresh
printf 'pid 1 on \033]0;owned\007\033[2J here\n' | dd of=C/lock conv=notrunc status=none
(exec 9<>C/lock && flock 9 && exec sleep 60) &
holder=$!
cleanup_fn kill_quiet $holder KILL
for ((i = 0; i < 200; i++)); do
	flock -n C/lock true 2>/dev/null || break
	sleep 0.05
done
run 1 imgbackup -q --name p5 C s2
expect_msg 'locked by another writer \(pid 1 on \\x1b\]0;owned\\x07\\x1b\[2J here\)'
! grep -q $'\033' last.err || fail "a control byte from the lock file reached the terminal"
kill $holder
{ wait $holder; } 2>/dev/null || true

# ---- the journal -------------------------------------------------------------------------------
for k in "${KINDS[@]}"; do
	fresh
	plant $k C/journal
	snap C "$IMGCHAIN_STATE_DIR" outside
	run 4 imgconsolidate -q --merge p1..p2 C
	named C/journal $k
	unchanged "imgconsolidate with $PLANT ($k)"
	outside_ok "imgconsolidate ($k)"
done

# ---- temporary names: a link is removed (never followed), anything else left with a warning -
for k in "${KINDS[@]}"; do
	fresh
	plant $k C/.tmp-x
	run 0 imgbackup -q --name p4 C s2
	case $k in
	link | dangle) [[ ! -L C/.tmp-x ]] || fail "the backup left the link $PLANT" ;;
	*)
		expect_msg "warning: C/.tmp-x: a $(kind_re $k), not a temporary file: left alone"
		[[ -e C/.tmp-x ]] || fail "the backup removed $PLANT"
		;;
	esac
	run 0 imgrestore C p4 out4
	cmp -s out4 s2 || fail "p4 restored wrong bytes"
	rm -f out4
	outside_ok "imgbackup ($k)"

	# the key file's temporary name (imgkey add writes the key file through it)
	fresh
	plant $k C/.tmp-imgchain.key
	case $k in
	link | dangle)
		run 0 imgkey add --passphrase-file pass --new-passphrase-file newpass C
		[[ ! -L C/.tmp-imgchain.key ]] || fail "imgkey left the link $PLANT"
		IMGCHAIN_PASSPHRASE="another passphrase" run 0 imgrestore C p2 out2
		cmp -s out2 s2 || fail "p2 restored wrong bytes with the new passphrase"
		rm -f out2
		;;
	*)
		snap C "$IMGCHAIN_STATE_DIR" outside
		run 4 imgkey add --passphrase-file pass --new-passphrase-file newpass C
		named C/.tmp-imgchain.key $k
		unchanged "imgkey with $PLANT ($k)"
		;;
	esac
	outside_ok "imgkey ($k)"

	# the journal's temporary name
	fresh
	plant $k C/.tmp-journal
	case $k in
	link | dangle)
		run 0 imgconsolidate -q --merge p1..p2 C
		[[ ! -L C/.tmp-journal ]] || fail "imgconsolidate left the link $PLANT"
		run 0 imgrestore C p2 out2
		cmp -s out2 s2 || fail "p2 restored wrong bytes after the merge"
		rm -f out2
		;;
	*)
		snap C "$IMGCHAIN_STATE_DIR" outside
		run 4 imgconsolidate --merge p1..p2 C
		expect_msg "warning: C/.tmp-journal: a $(kind_re $k), not a temporary file: left alone"
		named C/.tmp-journal $k
		unchanged "imgconsolidate with $PLANT ($k)"
		;;
	esac
	outside_ok "imgconsolidate ($k)"
done

# ---- the key holder's state file and its temporary name ---------------------------------------
fresh
sfile=$(cd "$IMGCHAIN_STATE_DIR" && ls -- *.state)
[[ $(wc -w <<<"$sfile") == 1 ]] || fail "expected one state file, found: $sfile"
for k in "${KINDS[@]}"; do
	fresh
	plant $k "$IMGCHAIN_STATE_DIR/$sfile"
	snap C "$IMGCHAIN_STATE_DIR" outside
	run 4 imgrestore C p2 out
	named "$IMGCHAIN_STATE_DIR/$sfile" $k
	run 4 imgverify --data C
	named "$IMGCHAIN_STATE_DIR/$sfile" $k
	run 4 imgbackup -q --name p4 C s2
	named "$IMGCHAIN_STATE_DIR/$sfile" $k
	if fuse_usable; then
		mkdir -p mnt
		run 4 imgmount C mnt
		named "$IMGCHAIN_STATE_DIR/$sfile" $k
		! mountpoint -q mnt || { fusermount3 -u mnt; fail "imgmount mounted with $PLANT"; }
	fi
	[[ ! -e out ]] || fail "imgrestore wrote a disk with $PLANT"
	unchanged "keyed tools with $PLANT ($k)"
	outside_ok "keyed tools, state ($k)"

	fresh
	plant $k "$IMGCHAIN_STATE_DIR/.tmp-$sfile"
	run 0 imgbackup -q --name p4 C s2
	case $k in
	link | dangle) [[ ! -L $PLANT ]] || fail "imgbackup left the link $PLANT" ;;
	*)
		# the point is written; only the memory of it is not, and every keyed tool says
		# why until the plant is gone
		expect_msg "warning: $PLANT: not a regular file \($(kind_re $k)\).*rollback detection will not know this point"
		run 4 imgrestore C p4 out4
		named "$PLANT" $k
		rm -rf "$PLANT"
		;;
	esac
	run 0 imgrestore C p4 out4
	cmp -s out4 s2 || fail "p4 restored wrong bytes"
	rm -f out4
	outside_ok "imgbackup, state's temporary ($k)"
done

# ---- overlay files of a writable mount ----------------------------------------------------------

if fuse_usable; then
	for name in p2/disk.raw.data p2/disk.raw.map p2; do
		for k in "${KINDS[@]}"; do
			[[ $name == p2 && $k == dir ]] && continue    # that is what it should be
			fresh
			rm -rf ov
			mkdir -p ov/p2
			plant $k "ov/$name"
			snap C "$IMGCHAIN_STATE_DIR"
			mount_chain C --overlay "$TESTDIR/ov"
			timeout -s KILL 30 python3 - "$TESTDIR/mnt/p2/disk.raw" <<'EOF' ||
import os, sys
try:
    fd = os.open(sys.argv[1], os.O_WRONLY)
    os.pwrite(fd, b"x" * 4096, 0)
    os.fsync(fd)
except OSError:
    sys.exit(0)
sys.exit("written through the overlay")
EOF
				fail "a write to p2's disk.raw went through the planted ov/$name ($k)"
			if [[ $name == p2 ]]; then
				grep -Eq "ov/p2: not a directory \($(kind_re $k)\)" mount.log ||
					fail "imgmount did not log the plant ov/p2: $(cat mount.log)"
			else
				grep -Eq "ov/$name: not a regular file \($(kind_re $k)\)" mount.log ||
					fail "imgmount did not log the plant ov/$name: $(cat mount.log)"
			fi
			cmp -s "$TESTDIR/mnt/p3/disk.raw" s3 || fail "p3 not served beside the plant"
			unmount_chain
			unchanged "imgmount --overlay with ov/$name ($k)"
			outside_ok "imgmount --overlay, ov/$name ($k)"
		done
	done
fi
echo "plants refused under every name"
