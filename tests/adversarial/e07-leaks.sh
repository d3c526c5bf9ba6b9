#!/bin/bash
# e07-leaks.sh (issue 10, finding 8): smaller leaks of decrypted data and unverified metadata.
#  1. imgrestore creates DEST 0600 whatever the umask, and --force never widens: the restored
#     file gets the replaced file's mode narrowed to at most 0600 (0600 stays 0600, 0644
#     becomes 0600, 0400 stays 0400).
#  2. Every tool, and the mount daemon, is non-dumpable (prctl(PR_SET_DUMPABLE, 0)): no core
#     dump can hold keys or decoded blocks.  tests/lib/dumpable.so reports the flag at exit.
#     The block cache's slabs are excluded from dumps as well (MADV_DONTDUMP: "dd" in smaps).
#  3. A point whose seal fails shows no metadata: opening its info.json and disk.vmdk gives
#     EIO as disk.raw does, and so do disk.vhd (whose footer holds the time) and disk.vhdx
#     (the forged creation time never reaches a reader), while a sound
#     point's info.json and descriptor read normally.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
make_chain

# 1. DEST modes
umask 022
expect_exit 0 imgrestore -q C p2 new.raw
cmp new.raw s2 || fail "restored bytes differ"
[[ $(stat -c %a new.raw) == 600 ]] || fail "a new DEST is $(stat -c %a new.raw), not 600"
umask 000
rm -f new0.raw
expect_exit 0 imgrestore -q C p2 new0.raw
[[ $(stat -c %a new0.raw) == 600 ]] || fail "with umask 000 a new DEST is $(stat -c %a new0.raw)"
umask 022
for m in 600:600 644:600 666:600 640:600 400:400 200:200; do
	was=${m%%:*} want=${m##*:}
	head -c 1000 /dev/urandom >old.raw
	chmod "$was" old.raw
	expect_exit 1 imgrestore -q C p2 old.raw
	expect_msg "exists and is not empty"
	[[ $(stat -c %a old.raw) == "$was" ]] || fail "a refused restore changed the mode $was"
	expect_exit 0 imgrestore -q --force C p2 old.raw
	cmp old.raw s2 || fail "--force onto a $was file: wrong bytes"
	[[ $(stat -c %a old.raw) == "$want" ]] ||
		fail "--force onto a $was file left $(stat -c %a old.raw), not $want"
done
no_tmp_files .

# 2. non-dumpable tools and daemon
shim=${top_builddir:-.}/tests/lib/dumpable.so
[[ -f $shim ]] || fail "$shim not built (make check builds it)"
dlog=$TESTDIR/dumpable.log
# dumpable_run TOOL ARGS...: run with the shim; the tool must report dumpable=0
dumpable_run()
{
	: >"$dlog"
	IMGCHAIN_DUMPABLE_LOG=$dlog LD_PRELOAD=$shim \
		ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0 "$@" \
		>"$TESTDIR/last.out" 2>"$TESTDIR/last.err" || fail "$1 failed: $(cat "$TESTDIR/last.err")"
	grep -q "^${1:0:15} [0-9]* dumpable=" "$dlog" || fail "$1 did not report: $(cat "$dlog")"
	grep -q "^${1:0:15} [0-9]* dumpable=0$" "$dlog" || fail "$1 is dumpable: $(cat "$dlog")"
}
# the shim itself: a process that does nothing is dumpable
: >"$dlog"
IMGCHAIN_DUMPABLE_LOG=$dlog LD_PRELOAD=$shim /bin/true
grep -q "^true [0-9]* dumpable=1$" "$dlog" || fail "the shim does not report: $(cat "$dlog")"
rm -f out.raw
dumpable_run imgrestore -q C p2 out.raw
dumpable_run imgverify -q --data C
dumpable_run imginfo C
dumpable_run imgbackup -q --name p4 --parent p2 C s2
dumpable_run imgconsolidate -q --merge p2..p4 C
dumpable_run imgkey list C
if fuse_usable; then
	: >"$dlog"
	# the shim is preloaded into the daemon only (MOUNT_ENV), not into the helpers that wait
	MOUNT_ENV=(IMGCHAIN_DUMPABLE_LOG="$dlog" LD_PRELOAD="$shim"
		ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0")
	mount_chain C
	MOUNT_ENV=()
	cmp mnt/p4/disk.raw s2 || fail "the mount does not serve p4"
	# the block cache's slabs (4 MiB anonymous mappings) are excluded from dumps ("dd")
	python3 - /proc/$MOUNT_PID/smaps <<'EOF' || fail "the cache's slabs are not excluded from dumps"
import re, sys
maps, cur = [], None
for line in open(sys.argv[1]):
    if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
        cur = {"head": line}
        maps.append(cur)
    elif line.startswith("Size:"):
        cur["size"] = int(line.split()[1])
    elif line.startswith("VmFlags:"):
        cur["flags"] = line.split()[1:]
slabs = [m for m in maps if m.get("size") == 4096 and len(m["head"].split()) == 5]
assert slabs, "no 4 MiB anonymous mapping"
bad = [m["head"] for m in slabs if "dd" not in m["flags"]]
assert not bad, "dumpable: %s" % bad
EOF
	unmount_chain
	grep -q "^imgmount [0-9]* dumpable=0$" "$dlog" || fail "the mount daemon is dumpable: $(cat "$dlog")"
else
	echo "note: FUSE not usable here, the daemon's dumpable flag not checked"
fi

# 3. metadata only once the seal passed: p2's creation time forged (slot checksum fixed)
fresh
img=C/00000002.img
icimg_py $img <<'EOF'
import sys, icimg
i = icimg.Image(sys.argv[1])
i.slot["created"] = 1234567890
i.write_slot()
EOF
if fuse_usable; then
	mount_chain C
	python3 - mnt/p2 mnt/p3 <<'EOF' || fail "metadata of a point whose seal fails was shown"
import errno, json, os, sys
bad, good = sys.argv[1], sys.argv[2]
for f in ("info.json", "disk.vmdk", "disk.raw", "disk-flat.vmdk", "disk-sparse.vmdk",
          "disk.vhd", "disk.vhdx"):
    try:
        fd = os.open(os.path.join(bad, f), os.O_RDONLY)
        data = os.pread(fd, 4096, 0)
    except OSError as e:
        assert e.errno == errno.EIO, "%s: %s" % (f, e)
        continue
    sys.exit("%s of the forged point opened and read: %r" % (f, data[:200]))
j = json.load(open(os.path.join(good, "info.json")))
assert j["name"] == "p3" and j["seq"] == 3, j
desc = open(os.path.join(good, "disk.vmdk"), "rb").read()
assert b"disk-flat.vmdk" in desc, desc
EOF
	grep -Eq "restore point 'p2': .*seal mismatch" "$TESTDIR/mount.log" ||
		fail "no seal mismatch logged: $(cat "$TESTDIR/mount.log")"
	unmount_chain
else
	echo "note: FUSE not usable here, metadata files not checked"
fi
echo "PASS: e07-leaks"
