#!/bin/bash
# kill.sh: a backup to s3:// killed (SIGKILL) while its image is being uploaded leaves no
# visible point: the bucket lists no new image, only an incomplete multipart upload and the
# dead writer's lease.  The next backup takes the lease over (its holder is dead on this
# host), aborts the incomplete upload, drops the unpublished image from its cache, and
# completes; every point restores byte for byte.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imginfo cmp
CEPH_RGW_MEM_MB=2048
export CEPH_RGW_MEM_MB
source "$top_srcdir/tests/s3/s3-lib.sh"
C=s3://$BUCKET/k
mkrandom disk 8 1
cp disk s.full
expect_exit 0 imgbackup --name full "$C" disk
# an incremental of 64 MiB of new data: a multipart upload of four 16 MiB parts
mkrandom disk 72 2
cp disk s.big
IMGCHAIN_S3_THREADS=1 imgbackup --name big "$C" disk >big.out 2>&1 &
pid=$!
cleanup_fn kill_quiet "$pid" KILL
for ((i = 0; i < 1200; i++)); do
	[[ -n $(s3t uploads k/) ]] && break
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.05
done
kill -KILL "$pid" 2>/dev/null || fail "the backup ended before its upload was seen: $(cat big.out)"
wait "$pid" 2>/dev/null || true
[[ -n $(s3t uploads k/) ]] || fail "no upload in progress was seen"
s3t ls k/ | awk '{print $1}' >objs
printf '%s\n' k/00000001.img k/imgchain.key k/lease | diff - objs || fail "a point became visible"
# what the bucket shows from an empty cache: one point
expect_exit 0 imginfo --json "$C"
[[ $(json_get "$TESTDIR/last.out" 'len(j["points"])') == 1 ]] || fail "imginfo sees more than one point"
# the cache of the killed writer held the image it did not publish: the next pull drops it
ls "$IMGCHAIN_S3_CACHE"/*/chain/00000002.img >/dev/null 2>&1 && fail "imginfo left the unpublished image"
# the next writer: lease taken over, stale upload aborted, backup completes
expect_exit 0 imgbackup --name big "$C" disk
expect_out "incremental point 'big' \(seq 2\)"
[[ -z $(s3t uploads k/) ]] || fail "the incomplete upload was not aborted"
rm -rf "$IMGCHAIN_S3_CACHE"
for p in full big; do
	expect_exit 0 imgrestore "$C" "$p" "r.$p"
	cmp "r.$p" "s.$p" || fail "point $p differs"
done
echo "kill.sh: ok"
