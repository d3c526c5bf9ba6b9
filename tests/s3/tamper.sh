#!/bin/bash
# tamper.sh: the bucket is untrusted storage (doc/SECURITY.md): objects changed in the bucket
# are caught exactly as files changed in a directory.  A flipped bit in a record: imgrestore
# and imgverify exit 4; a planted image object: imginfo lists it as damaged (exit 4) and the
# other points still restore; a replaced object is never mixed with the cached older version.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imginfo imgverify cmp
source "$top_srcdir/tests/s3/s3-lib.sh"
C=s3://$BUCKET/t
mkrandom disk 6 1
cp disk s.full
expect_exit 0 imgbackup --name full "$C" disk
write_at disk $((1 << 20)) 100000 2
cp disk s.inc
expect_exit 0 imgbackup --name inc "$C" disk

# a planted object under an image name: damaged file, the real points unaffected
mkrandom_bytes junk 8192 3
s3t put t/00000007.img junk
rm -rf "$IMGCHAIN_S3_CACHE"
expect_exit 4 imginfo "$C"
expect_out "damaged file: .*00000007.img"
expect_exit 0 imgrestore "$C" inc r.inc
cmp r.inc s.inc || fail "inc differs"
s3t rm t/00000007.img

# a bit flipped in a record of the full, in the bucket, while this host's cache holds the
# good version (a warm restore before): the changed ETag makes the cache fetch it again,
# and the restore fails (exit 4) instead of serving the old bytes or a mix
rm -rf "$IMGCHAIN_S3_CACHE"
expect_exit 0 imgrestore "$C" full r.full
cmp r.full s.full || fail "full differs"
s3t get t/00000001.img img1
read -r off len pos < <(image_record_offset img1 3)
flip_bit img1 $((off + len / 2))
s3t put t/00000001.img img1
expect_exit 4 imgrestore "$C" full r.bad
# and cold: the same
rm -rf "$IMGCHAIN_S3_CACHE"
expect_exit 4 imgrestore "$C" full r.bad2
expect_exit 4 imgverify "$C"
echo "tamper.sh: ok"
