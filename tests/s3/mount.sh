#!/bin/bash
# mount.sh: imgmount of a chain in a bucket reads the records on demand (instant recovery):
# the mount pulls headers and indexes only; reading one block of a 64 MiB point fetches a
# small part of the chain (the daemon's log counts the bytes fetched, the cache directory's
# allocation agrees); the whole disk then reads byte for byte (sequential readahead fetched
# in parallel); with IMGCHAIN_S3_CACHE_MAX the chunks fetched are evicted again and the
# disk still reads right; a record flipped in the bucket reads as EIO, the other blocks
# still read; an object replaced in the bucket under a mount reads as EIO, never the new
# bytes mixed with the old.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgmount cmp dd
fuse_usable || skip "requires FUSE (/dev/fuse, fusermount3)"
CEPH_RGW_MEM_MB=2048
export CEPH_RGW_MEM_MB
source "$top_srcdir/tests/s3/s3-lib.sh"
C=s3://$BUCKET/m

mkrandom disk 64 1
cp disk s.full
expect_exit 0 imgbackup --name full "$C" disk
write_at disk $((3 << 20)) 500000 2
cp disk s.inc
expect_exit 0 imgbackup --name inc "$C" disk
chain_bytes=$(s3t ls m/ | awk '{s += $2} END {print s}')

fetched()   # the bytes the last mount's daemon says it fetched (0: none)
{
	sed -n 's/.*: \([0-9]*\) bytes fetched from the bucket in [0-9]* ranges.*/\1/p' "$MOUNT_LOG" |
		tail -1 | grep . || echo 0
}

# one block, from an empty cache
rm -rf "$IMGCHAIN_S3_CACHE"
mount_chain "$C"
dd if="$MNT/full/disk.raw" of=one bs=4096 skip=$(((40 << 20) / 4096)) count=1 status=none ||
	fail "reading one block failed: $(cat "$MOUNT_LOG")"
dd if=s.full of=one.ref bs=4096 skip=$(((40 << 20) / 4096)) count=1 status=none
cmp one one.ref || fail "the block read differs"
alloc=$(du -sk "$IMGCHAIN_S3_CACHE" | cut -f1)
unmount_chain
got=$(fetched)
echo "one block: $got bytes fetched of a $chain_bytes-byte chain, cache ${alloc} KiB" >&2
((got > 0)) || fail "nothing fetched: $(cat "$MOUNT_LOG")"
((got * 8 < chain_bytes)) || fail "reading one block fetched $got of $chain_bytes bytes"
((alloc * 1024 * 8 < chain_bytes)) || fail "the cache holds ${alloc} KiB after one block"

# the whole disks, byte for byte (cold, then warm)
rm -rf "$IMGCHAIN_S3_CACHE"
mount_chain "$C"
cmp "$MNT/full/disk.raw" s.full || fail "full differs"
cmp "$MNT/inc/disk.raw" s.inc || fail "inc differs"
unmount_chain
echo "whole disks: $(fetched) bytes fetched" >&2
pre=$(sed -n 's/.*ranges (\([0-9]*\) by readahead).*/\1/p' "$MOUNT_LOG" | tail -1)
((pre > 0)) || fail "the sequential reads prefetched nothing: $(cat "$MOUNT_LOG")"
mount_chain "$C"
cmp "$MNT/inc/disk.raw" s.inc || fail "inc differs (warm)"
unmount_chain

# a bound below the chain: chunks evicted as the read goes on, the disk still right
rm -rf "$IMGCHAIN_S3_CACHE"
MOUNT_ENV=(IMGCHAIN_S3_CACHE_MAX=8M)
mount_chain "$C"
cmp "$MNT/full/disk.raw" s.full || fail "full differs under an 8 MiB bound"
alloc=$(du -sk "$IMGCHAIN_S3_CACHE" | cut -f1)
unmount_chain
MOUNT_ENV=()
((alloc < 16 * 1024)) || fail "the cache grew to ${alloc} KiB under an 8 MiB bound"

# a record flipped in the bucket: EIO for its block, the others read
s3t get m/00000001.img img1
cp img1 img1.good
read -r off len pos < <(image_record_offset img1 5)
flip_bit img1 $((off + len / 2))
s3t put m/00000001.img img1
rm -rf "$IMGCHAIN_S3_CACHE"
mount_chain "$C"
imginfo --json "$C" >info.json
bs=$(json_get info.json 'j["block_size"]')
dd if="$MNT/full/disk.raw" of=bad bs="$bs" skip="$pos" count=1 status=none 2>dd.err &&
	fail "the flipped record was served"
grep -q "Input/output error" dd.err || fail "not EIO: $(cat dd.err)"
other=$(((pos + 40) % (64 * 1048576 / bs)))
dd if="$MNT/full/disk.raw" of=good bs="$bs" skip="$other" count=1 status=none ||
	fail "another block failed"
dd if=s.full of=good.ref bs="$bs" skip="$other" count=1 status=none
cmp good good.ref || fail "another block differs"
# the object replaced under the mount (its good bytes back: a new ETag): a chunk not
# fetched yet is refused (EIO), never read from another version than the index's
s3t put m/00000001.img img1.good
far=$(((pos + 400) % (64 * 1048576 / bs)))
dd if="$MNT/full/disk.raw" of=x bs="$bs" skip="$far" count=1 status=none 2>dd.err &&
	fail "a block of a replaced object was read"
grep -q "Input/output error" dd.err || fail "not EIO: $(cat dd.err)"
unmount_chain
echo "mount.sh: ok"
