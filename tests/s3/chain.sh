#!/bin/bash
# chain.sh: s3:// chains on a real Ceph RGW.  A full backup, incrementals and a branch go to
# the bucket; every point restores from the bucket (into an empty cache) byte for byte;
# imginfo lists the tree from the objects' headers only; imgverify (keyless and keyed),
# imgkey and imgmount on the bucket; the cache's bound; imgconsolidate --verify refused; a second writer is refused while
# the lease is held; wrong credentials give a clear error and exit 1; radosgw stopped during
# a backup: the requests wait for it and the backup completes.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imginfo cmp
CEPH_RGW_MEM_MB=2048
export CEPH_RGW_MEM_MB
source "$top_srcdir/tests/s3/s3-lib.sh"
C=s3://$BUCKET/hosts/web01

mkrandom disk 24 1
zero_at disk $((4 << 20)) $((2 << 20))
cp disk s.full
expect_exit 0 imgbackup --name full "$C" disk
expect_out "^full point 'full' \(seq 1\).* in $C"
write_at disk $((1 << 20)) 300000 2
cp disk s.mon
expect_exit 0 imgbackup --name mon "$C" disk
expect_out "based on 'full'"
write_at disk $((9 << 20)) 70000 3
cp disk s.tue
expect_exit 0 imgbackup --name tue "$C" disk
cp s.mon other
write_at other $((20 << 20)) 200000 4
cp other s.branch
expect_exit 0 imgbackup --name branch --parent mon "$C" other
expect_out "based on 'mon'"

# the bucket holds the key file and one object per point, nothing else under the prefix
s3t ls hosts/web01/ | awk '{print $1}' >objs
printf '%s\n' hosts/web01/00000001.img hosts/web01/00000002.img hosts/web01/00000003.img \
	hosts/web01/00000004.img hosts/web01/imgchain.key | diff - objs || fail "objects differ"
[[ -z $(s3t uploads hosts/) ]] || fail "incomplete uploads left"

# restore every point from an empty cache: byte for byte
for p in full mon tue branch; do
	rm -rf "$IMGCHAIN_S3_CACHE"
	expect_exit 0 imgrestore "$C" "$p" "r.$p"
	cmp "r.$p" "s.$p" || fail "point $p restored from the bucket differs"
done
# the restore of 'mon' fetched its path only: 'tue' and 'branch' stay header-only stubs
rm -rf "$IMGCHAIN_S3_CACHE"
expect_exit 0 imgrestore "$C" mon r.mon2
cmp r.mon2 s.mon || fail "mon differs"
alloc=$(du -k "$IMGCHAIN_S3_CACHE"/*/chain/00000003.img | cut -f1)
((alloc < 64)) || fail "restoring mon fetched tue's image too (${alloc} KiB)"

# imginfo from the headers only
rm -rf "$IMGCHAIN_S3_CACHE"
expect_exit 0 imginfo "$C"
expect_out "^$C: chain id"
expect_out "branch +incremental +mon"
alloc=$(du -sk "$IMGCHAIN_S3_CACHE" | cut -f1)
((alloc < 256)) || fail "imginfo fetched ${alloc} KiB"
expect_exit 0 imginfo --json "$C"

# the cache's bound: what a restore fetched goes back to headers at the next run (the
# 23 MiB full; the two small incrementals fit under 1 MiB and stay)
expect_exit 0 imgrestore "$C" tue r.tue3
cmp r.tue3 s.tue || fail "tue differs"
(($(du -sk "$IMGCHAIN_S3_CACHE" | cut -f1) > 20000)) || fail "the restore cached too little"
expect_exit 0 env IMGCHAIN_S3_CACHE_MAX=1M imginfo "$C"
alloc=$(du -sk "$IMGCHAIN_S3_CACHE" | cut -f1)
# images fully cached: at most 1 MiB (largest trimmed first), plus headers and state
((alloc < 1300)) || fail "the cache was not trimmed to its bound (${alloc} KiB)"
expect_exit 0 env IMGCHAIN_S3_CACHE_MAX=1M imgrestore "$C" tue r.tue4
cmp r.tue4 s.tue || fail "tue after trimming differs"

# verification from the bucket: keyless (every image fetched) and with the key
rm -rf "$IMGCHAIN_S3_CACHE"
expect_exit 0 imgverify "$C"
expect_out "^$C: 4 points, 4 images, .* checked: no problems"
expect_exit 0 imgverify --data "$C" tue
expect_out "authenticated: no problems"

# key management: a second passphrase added (the key file replaced in the bucket under the
# lease, If-Match of the version read), then it unlocks a restore from an empty cache
echo "second passphrase" >second.txt
expect_exit 0 imgkey add --new-passphrase-file second.txt "$C"
[[ -z $(s3t ls hosts/web01/lease) ]] || fail "imgkey left its lease"
rm -rf "$IMGCHAIN_S3_CACHE"
expect_exit 0 imgkey list "$C"
expect_out "slot 1"
expect_exit 0 env -u IMGCHAIN_PASSPHRASE imgrestore --passphrase-file second.txt "$C" tue r.tue2
cmp r.tue2 s.tue || fail "tue (second passphrase) differs"

# a mount of the bucket's chain (cached first) serves every point byte for byte
if fuse_usable; then
	mount_chain "$C"
	for p in full mon tue branch; do
		cmp "$MNT/$p/disk.raw" "s.$p" || fail "mounted $p differs"
	done
	unmount_chain
fi

# consolidation in a bucket (tests/s3/consolidate.sh): --verify cannot read the records
# the server copies: a usage error, nothing changed
expect_exit 2 imgconsolidate --verify --keep-last 1 "$C"
expect_msg "check the chain with imgverify"

# a second writer while the lease is held (a live writer on another host)
printf 'imgchain-lease 1\nowner 0123456789abcdef0123456789abcdef\nhost otherhost\npid 1\nexpires %s\n' \
	$(($(date +%s) + 3600)) >lease
s3t put hosts/web01/lease lease
expect_exit 1 imgbackup --name nope "$C" disk
expect_msg "another writer holds the chain: host otherhost pid 1"
# expired: taken over
printf 'imgchain-lease 1\nowner 0123456789abcdef0123456789abcdef\nhost otherhost\npid 1\nexpires %s\n' \
	$(($(date +%s) - 10)) >lease
s3t put hosts/web01/lease lease
write_at disk $((2 << 20)) 5000 5
cp disk s.wed
expect_exit 0 imgbackup --name wed "$C" disk
s3t ls hosts/web01/lease | grep -q . && fail "the lease was not released"

# wrong credentials: a clear error, exit 1, nothing written
expect_exit 1 env AWS_SECRET_ACCESS_KEY=wrong imgbackup --name bad "$C" disk
expect_msg "access denied \(SignatureDoesNotMatch\): check the credentials"
expect_exit 1 env AWS_SECRET_ACCESS_KEY=wrong imgrestore "$C" wed r.bad
expect_msg "access denied"

# readers of the same cache while a backup runs wait for it (the cache's lock): each
# finishes, and the point the backup reported is in the bucket
write_at disk $((5 << 20)) 300000 7
cp disk s.fri
imgbackup --name fri "$C" disk >fri.out 2>&1 &
bpid=$!
for i in 1 2 3; do
	expect_exit 0 imginfo "$C"
done
wait "$bpid" || fail "the backup failed: $(cat fri.out)"
seq=$(sed -n 's/.*point .fri. (seq \([0-9]*\)).*/\1/p' fri.out)
[[ -n $seq ]] || fail "no seq in: $(cat fri.out)"
s3t ls hosts/web01/ | grep -q "$(printf %08u "$seq").img" ||
	fail "fri (seq $seq) is not in the bucket: $(s3t ls hosts/web01/)"

# tools open a fresh cache before they take its lock: six at once on an empty cache all
# succeed (each wrote the cache's origin file through one temporary name: "rename: No
# such file or directory" for some; then, with a retry that accepted another writer's
# origin, "origin: No such file or directory" when the other writer had removed this
# one's temporary and not yet renamed its own: CI, once in 3 rounds)
for round in 1 2 3 4 5 6 7 8 9 10; do
	rm -rf fresh-cache
	pids=()
	for i in 1 2 3 4 5 6; do
		IMGCHAIN_S3_CACHE=$PWD/fresh-cache imginfo "$C" >"fresh$i.out" 2>&1 &
		pids+=($!)
	done
	for i in 1 2 3 4 5 6; do
		wait "${pids[i - 1]}" || fail "reader $i of a fresh cache failed: $(cat "fresh$i.out")"
		grep -q "fri" "fresh$i.out" || fail "reader $i of a fresh cache: $(cat "fresh$i.out")"
	done
done

# radosgw down for a few seconds during a backup: retried, the backup completes
write_at disk $((12 << 20)) 400000 6
cp disk s.thu
rgw_stop
( sleep 3; rgw_start ) &
starter=$!
cleanup_fn kill_quiet "$starter"
expect_exit 0 env IMGCHAIN_S3_RETRY_SECONDS=120 imgbackup --name thu "$C" disk
wait "$starter"
rm -rf "$IMGCHAIN_S3_CACHE"
expect_exit 0 imgrestore "$C" thu r.thu
cmp r.thu s.thu || fail "thu differs"
expect_exit 0 imgrestore "$C" latest r.latest
cmp r.latest s.thu || fail "latest differs"
echo "chain.sh: ok"
