#!/bin/bash
# nbd.sh: the NBD export (nbdkit imgchain plugin) of a chain in a bucket: nbdkit started
# daemonized (the remote's S3 client is made after its fork, by the first read), chain=
# s3://...: the exports are the points; nbdinfo sees the disk's size; nbdcopy of each
# export (4 connections) is byte for byte its source disk; the records were fetched on
# demand (the cache held headers and indexes only before the reads).
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup nbdkit nbdinfo nbdcopy cmp python3
NBD_PLUGIN=$top_builddir/nbdkit-imgchain-plugin.so
[[ -f $NBD_PLUGIN ]] || skip "the nbdkit plugin was not built (configured without nbdkit, or a sanitizer build)"
CEPH_RGW_MEM_MB=2048
export CEPH_RGW_MEM_MB
source "$top_srcdir/tests/s3/s3-lib.sh"
C=s3://$BUCKET/n

mkrandom disk 32 1
cp disk s.full
expect_exit 0 imgbackup --name full "$C" disk
write_at disk $((7 << 20)) 400000 2
cp disk s.inc
expect_exit 0 imgbackup --name inc "$C" disk
printf '%s\n' "$IMGCHAIN_PASSPHRASE" >pass

rm -rf "$IMGCHAIN_S3_CACHE"
nbdkit -U "$PWD/n.sock" -P "$PWD/n.pid" "$NBD_PLUGIN" chain="$C" passphrase-file="$PWD/pass" \
	2>n.log </dev/null || fail "nbdkit did not start: $(cat n.log)"
cleanup_fn kill_quiet "$(cat n.pid)"
alloc=$(du -sk "$IMGCHAIN_S3_CACHE" | cut -f1)
((alloc < 1024)) || fail "the export fetched ${alloc} KiB before any read"
uri() { printf "nbd+unix:///%s?socket=%s\n" "${1:-}" "$PWD/n.sock"; }
nbdinfo --list --json "$(uri)" >list.json || fail "nbdinfo --list"
got=$(python3 -c 'import json,sys; print(" ".join(sorted(e["export-name"] for e in json.load(open(sys.argv[1]))["exports"])))' list.json)
[[ $got == "full inc" ]] || fail "exports: '$got'"
[[ $(nbdinfo --size "$(uri inc)") == $((32 << 20)) ]] || fail "size of inc"
for p in full inc; do
	nbdcopy -C 4 "$(uri "$p")" "r.$p" || fail "nbdcopy of $p"
	cmp "r.$p" "s.$p" || fail "export $p differs"
done
kill "$(cat n.pid)"
echo "nbd.sh: ok"
