#!/bin/bash
# post_snapshot.sh: post-snapshot quiescence writes on a side branch (issue 13, section 5).  An
# ext4 disk is snapshotted while mounted (its journal holds committed, not yet checkpointed
# transactions: needs_recovery), backed up as P; the snapshot is then mounted through a loop
# device, which replays the journal into it (without root or a loop device: e2fsck replays it),
# and backed up with --post-snapshot-of P as Q.  P equals the crash-consistent snapshot byte for
# byte, Q the replayed one (also when read over NBD from qemu-nbd); imginfo shows the relation
# (text and JSON); the flag is sealed (imgverify finds it flipped); the next plain incremental
# is based on P, not Q; retention counts the pair once and keeps or drops P and Q together.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/live/live-lib.sh"
requires imgbackup imgrestore imginfo imgverify imgconsolidate mkfs.ext4 e2fsck dumpe2fs \
	qemu-img qemu-nbd

mkdir -p mnt
loop_ok=0
if [[ $(id -u) -eq 0 ]]; then
	truncate -s 4M probe.raw && mkfs.ext4 -q -F probe.raw &&
		mount -o loop probe.raw mnt 2>/dev/null && umount mnt && loop_ok=1 || true
fi
mounted=
umount_quiet() { [[ -z $mounted ]] || umount "$mounted" 2>/dev/null || umount -l "$mounted" || true; }
cleanup_fn umount_quiet

needs_recovery() { dumpe2fs -h "$1" 2>/dev/null | grep -q '^Filesystem features:.*needs_recovery'; }

# ---- the live disk, the base full ---------------------------------------------------------
truncate -s 64M live.raw
mkfs.ext4 -q -F -b 4096 -O ^lazy_itable_init live.raw 2>/dev/null || mkfs.ext4 -q -F live.raw
if ((loop_ok)); then
	mount -o loop live.raw mnt
	mounted=$PWD/mnt
	mkrandom mnt/a 3 1
	umount mnt
	mounted=
fi
cp --sparse=always live.raw f.raw
expect_exit 0 imgbackup --name F C live.raw

# ---- the crash-consistent snapshot, taken while the file system is mounted and dirty --------
if ((loop_ok)); then
	mount -o loop live.raw mnt
	mounted=$PWD/mnt
	mkrandom mnt/b 2 2
	mkdir mnt/d
	for i in 1 2 3 4 5 6 7 8; do echo "file $i" >"mnt/d/f$i"; done
	sync -f mnt/b
	cp --sparse=always live.raw snap.raw      # the snapshot: the journal not checkpointed
	mkrandom mnt/c 1 3                        # the machine goes on writing
	umount mnt
	mounted=
	needs_recovery snap.raw || fail "the snapshot taken while mounted does not need recovery"
else
	# no loop device: a snapshot of a file system whose superblock counters are off, which
	# e2fsck rewrites (an fsck-written change; still a real one)
	cp --sparse=always live.raw snap.raw
	debugfs -w -R "ssv free_blocks_count 1" snap.raw 2>/dev/null
	write_at live.raw $((40 * 1048576)) 65536 3
fi
cp --sparse=always snap.raw snap-orig.raw
expect_exit 0 imgbackup --name P C snap.raw
expect_out "incremental point 'P' \(seq 2\) based on 'F'"

# ---- the quiescence writes: the snapshot mounted (journal replayed), or fsck --------------
if ((loop_ok)); then
	mount -o loop snap.raw mnt
	mounted=$PWD/mnt
	[[ $(cat mnt/d/f8) == "file 8" ]] || fail "the replayed snapshot lacks the last file"
	umount mnt
	mounted=
	needs_recovery snap.raw && fail "mounting the snapshot did not replay its journal"
else
	set +e
	e2fsck -fy snap.raw >/dev/null 2>&1
	rc=$?
	set -e
	((rc <= 1)) || fail "e2fsck -fy exited $rc"
fi
cmp -s snap.raw snap-orig.raw && fail "the quiescence wrote nothing into the snapshot"
e2fsck -fn snap.raw >/dev/null 2>&1 || fail "the quiesced snapshot is not clean"

expect_exit 1 imgbackup --post-snapshot-of nope --name X C snap.raw
expect_msg "nope"
expect_exit 2 imgbackup --post-snapshot-of P --parent F C snap.raw
expect_exit 2 imgbackup --post-snapshot-of P --next-bitmap b C snap.raw
expect_exit 2 imgbackup --post-snapshot-of P --full C snap.raw
[[ $(point_count C) == 2 ]] || fail "a refused --post-snapshot-of made a point"

# a version 1 point has no flags: refused, naming the cause, nothing written
cp -r "$top_srcdir/tests/golden/v1" G
chmod -R u+w G
imginfo --json G >g.json
v1=$(json_get g.json 'j["points"][-1]["name"]')
expect_exit 1 env IMGCHAIN_PASSPHRASE="golden passphrase" \
	imgbackup --post-snapshot-of "$v1" --name X G snap.raw
expect_msg "version 1 point"
[[ $(point_count G) == 3 ]] || fail "a refused --post-snapshot-of made a point in the v1 chain"

expect_exit 0 imgbackup --post-snapshot-of P --name Q C snap.raw
expect_out "post-snapshot point 'Q' \(seq 3\) of 'P'"
changed=$(summary_bytes changed)
((changed > 0 && changed < 8 * 1048576)) ||
	fail "Q stored $changed bytes: expected only the blocks the quiescence wrote"
restore_cmp C P snap-orig.raw
restore_cmp C Q snap.raw

imginfo C >info.txt
grep -Eq '^ +(├─|└─) Q +incremental +P .*\(post-snapshot of P\)$' info.txt ||
	fail "imginfo does not show Q as P's post-snapshot child: $(cat info.txt)"
imginfo --json C >info.json
json_check info.json <<'EOF'
pts = {p["name"]: p for p in j["points"]}
assert pts["Q"]["post_snapshot"] is True and pts["Q"]["post_snapshot_of"] == "P", pts["Q"]
assert pts["Q"]["parent"] == "P"
assert pts["P"]["post_snapshot"] is False and pts["P"]["post_snapshot_of"] is None
assert pts["P"]["post_snapshots"] == ["Q"], pts["P"]
assert pts["F"]["post_snapshots"] == []
EOF
expect_exit 0 imgverify -q --data C

# the flag is part of Q's seal: clearing it on the storage is found
# set_flags IMAGE N: the slot's flags set to N (the slot checksum fixed, not the seal)
set_flags()
{
	icimg_py "$1" "$2" <<'EOF'
import sys, icimg
im = icimg.Image(sys.argv[1])
im.slot["flags"] = int(sys.argv[2])
im.write_slot()
EOF
}
cp C/00000003.img q.img.save
set_flags C/00000003.img 0
expect_exit 4 imgverify -q --data C
expect_msg "seal"
expect_exit 4 imgrestore -q C Q q-tampered.raw
cp q.img.save C/00000003.img
# a flag this imgchain does not know is refused, naming it
set_flags C/00000003.img 6
expect_exit 4 imginfo C
expect_out "unknown flags"
cp q.img.save C/00000003.img

# the mount shows the quiesced disk
if fuse_usable; then
	mount_chain C
	cmp "$MNT/Q/disk.raw" snap.raw || fail "the mount's Q differs from the quiesced snapshot"
	cmp "$MNT/P/disk.raw" snap-orig.raw || fail "the mount's P differs from the snapshot"
	unmount_chain
fi

# ---- the next plain incremental goes on from P --------------------------------------------
cp --sparse=always live.raw n.raw
expect_exit 0 imgbackup --name N C n.raw
expect_out "incremental point 'N' \(seq 4\) based on 'P'"
restore_cmp C N n.raw
# an explicit --parent Q is still allowed (a branch of the quiesced disk)
write_at n.raw $((50 * 1048576)) 4096 9
expect_exit 0 imgbackup --parent Q --name QB C n.raw
expect_out "based on 'Q'"
restore_cmp C QB n.raw

# ---- retention: the pair is counted once (by P) and kept or dropped together ----------------
# a new chain F P Q [N] (new chain ids: copies of C would look rolled back to imgchain);
# Q read over NBD, as the quiesced snapshot of a VM's disk would be
qemu-img convert -O qcow2 snap.raw snapq.qcow2
sock=$PWD/q.sock
start_qemu_nbd "$sock" snapq.qcow2
pair_chain()
{
	expect_exit 0 imgbackup --name F "$1" f.raw
	expect_exit 0 imgbackup --name P "$1" snap-orig.raw
	expect_exit 0 imgbackup --post-snapshot-of P --name Q "$1" "$(nbd_uri "$sock")"
	expect_out "post-snapshot point 'Q' \(seq 3\) of 'P'"
	[[ -z ${2:-} ]] || expect_exit 0 imgbackup --name N "$1" live.raw
}

# F P Q N QB (QB a child of Q): keep-last 3 counts QB, N and P; Q is kept with P, F merged
expect_exit 0 imgconsolidate --keep-last 3 --dry-run C
grep -Eq 'keep +00000003 .* Q +\(post-snapshot of P' last.out ||
	fail "--keep-last 3 does not keep Q with P: $(cat last.out)"
grep -Eq 'keep +00000002 .* P ' last.out || fail "--keep-last 3 does not keep P: $(cat last.out)"
grep -Eq 'merge +00000001 .* F ' last.out || fail "--keep-last 3 keeps F: $(cat last.out)"

# F P Q N: keep-last 2 keeps N and P (Q is not counted) and Q with P; F is merged into P
pair_chain R with-n
expect_exit 0 imgconsolidate -q --keep-last 2 R
imginfo --json R >r.json
json_check r.json <<'EOF2'
names = sorted(p["name"] for p in j["points"])
assert names == ["N", "P", "Q"], names
pts = {p["name"]: p for p in j["points"]}
assert pts["Q"]["post_snapshot_of"] == "P", pts["Q"]
EOF2
restore_cmp R P snap-orig.raw
restore_cmp R Q snap.raw
restore_cmp R N live.raw
expect_exit 0 imgverify -q --data R
# ... and a newer point M on N: keep-last 2 keeps M and N; P is merged into N and Q, its pair,
# goes with it (it is not left behind on its own)
expect_exit 0 imgbackup --name M R n.raw
expect_out "based on 'N'"
expect_exit 0 imgconsolidate -q --keep-last 2 R
imginfo --json R >r.json
json_check r.json <<'EOF2'
names = sorted(p["name"] for p in j["points"])
assert names == ["M", "N"], names
EOF2
restore_cmp R M n.raw
restore_cmp R N live.raw

# F P Q: keep-last 1 keeps P (the newest counted point), and Q with it
pair_chain R2
expect_exit 0 imgconsolidate -q --keep-last 1 R2
imginfo --json R2 >r2.json
json_check r2.json <<'EOF2'
names = sorted(p["name"] for p in j["points"])
assert names == ["P", "Q"], names
pts = {p["name"]: p for p in j["points"]}
assert pts["Q"]["post_snapshot_of"] == "P" and pts["P"]["kind"] == "synthetic-full", j
EOF2
restore_cmp R2 P snap-orig.raw
restore_cmp R2 Q snap.raw
expect_exit 0 imgverify -q --data R2
