#!/bin/bash
# nbd-overlay.sh: a writable export (point=tue overlay=DIR), copy-on-write into the overlay
# format imgmount uses:
#   1. the export is writable, with flush, FUA and multi-conn; writes (one with FUA, two
#      clients at once) read back, a written hole is data in the map from then on;
#   2. after a restart of nbdkit every write is back and the rest is tue's backup;
#   3. imgmount --overlay on the same directory shows the same disk.raw; while one server
#      holds the overlay the other is refused (nbdkit: exit 1 with the message; the mount:
#      EBUSY for that point), a daemonized nbdkit keeping the lock after its fork;
#   4. the other way round: a write through imgmount --overlay is served over NBD afterwards;
#      without point= every export is writable into its own DIR/POINT;
#   5. an overlay made on another point is refused (exit 1); the export without overlay= is
#      still the backup, read-only; the chain's files never changed.
source "$(dirname "$0")/nbd-lib.sh"
requires sha256sum python3

make_disk_chain 64
(cd "$CHAIN" && sha256sum -- * >"$WORK/chain.sums")
OV=$WORK/overlay
zero_runs "$WORK/d1" >"$WORK/zeros.d1"
read -r hole _ <"$WORK/zeros.d1"
start_nbd rw point=tue overlay="$OV"
uri=$(nbd_uri rw tue)

# 1. writable, flush, FUA, multi-conn; writes read back
nbdinfo --json "$uri" >"$WORK/info.json" || fail "nbdinfo"
python3 - "$WORK/info.json" <<'PY' || fail "export flags: $(cat "$WORK/info.json")"
import json, sys
e = json.load(open(sys.argv[1]))["exports"][0]
assert not e["is_read_only"] and e["can_flush"] and e["can_fua"] and e["can_multi_conn"], e
PY
qemu-io -f raw -c 'write -P 0x5a 1000003 70000' -c "write -f -P 0xa5 $hole 65536" "$uri" >/dev/null ||
	fail "qemu-io writes"
qemu-io -f raw -c 'write -P 0x11 8M 1M' -c flush "$uri" >/dev/null & w1=$!
qemu-io -f raw -c 'write -P 0x22 20M 1M' -c flush "$uri" >/dev/null & w2=$!
wait $w1 || fail "writer 1"
wait $w2 || fail "writer 2"
qemu-io -f raw -c 'read -P 0x5a 1000003 70000' -c "read -P 0xa5 $hole 65536" \
	-c 'read -P 0x11 8M 1M' -c 'read -P 0x22 20M 1M' "$uri" >"$WORK/readback" ||
	fail "readback: $(cat "$WORK/readback")"
! grep -q "Pattern verification failed" "$WORK/readback" || fail "readback: $(cat "$WORK/readback")"
nbdinfo --map "$uri" | awk -v h="$hole" '$1 <= h && h < $1 + $2 { print $3 }' >"$WORK/htype"
[[ $(cat "$WORK/htype") == 0 ]] || fail "the written hole at $hole is not data in the map ($(cat "$WORK/htype"))"
python3 - "$WORK/d1" "$WORK/expected" "$hole" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
h = int(sys.argv[3])
b[1000003:1000003 + 70000] = b"\x5a" * 70000
b[h:h + 65536] = b"\xa5" * 65536
b[8 << 20:9 << 20] = b"\x11" * (1 << 20)
b[20 << 20:21 << 20] = b"\x22" * (1 << 20)
open(sys.argv[2], "wb").write(b)
PY
qemu-img compare -f raw -F raw "$uri" "$WORK/expected" >/dev/null || fail "tue is not its backup plus the writes"

# 2. a restart brings every write back
stop_nbd rw
start_nbd rw point=tue overlay="$OV"
qemu-img compare -f raw -F raw "$uri" "$WORK/expected" >/dev/null || fail "writes lost across a restart of nbdkit"

# 3. the same overlay through imgmount, and the lock between the two servers
mount_chain "$CHAIN" --overlay "$OV"
! cat "$MNT/tue/disk.raw" >/dev/null 2>"$WORK/cat.err" || fail "imgmount served tue while nbdkit holds its overlay"
stop_nbd rw
cmp "$MNT/tue/disk.raw" "$WORK/expected" || fail "imgmount --overlay does not show the writes made over NBD"
expect_exit 1 nbdkit -U - "$NBD_PLUGIN" "$CHAIN" passphrase-file="$PASSFILE" \
	point=tue overlay="$OV" --run true
expect_msg "overlay $OV/tue is in use by another process"
unmount_chain
# a daemonized nbdkit keeps the lock after its fork
nbdkit -U "$WORK/d.sock" -P "$WORK/d.pid" "$NBD_PLUGIN" "$CHAIN" passphrase-file="$PASSFILE" \
	point=tue overlay="$OV" || fail "daemonized nbdkit did not start"
cleanup_fn stop_nbd_quiet d
for ((i = 0; i < 600; i++)); do [[ -s $WORK/d.pid ]] && break; sleep 0.05; done
qemu-img compare -f raw -F raw "$(nbd_uri d tue)" "$WORK/expected" >/dev/null || fail "daemonized nbdkit: tue"
mount_chain "$CHAIN" --overlay "$OV"
! cat "$MNT/tue/disk.raw" >/dev/null 2>&1 || fail "imgmount served tue while a daemonized nbdkit holds its overlay"
unmount_chain
stop_nbd d

# 4. mount first, NBD next; every export writable without point=
mount_chain "$CHAIN" --overlay "$OV"
printf 'written through the mount' | dd of="$MNT/tue/disk.raw" bs=1 seek=5000000 conv=notrunc,fsync status=none
unmount_chain
printf 'written through the mount' | dd of="$WORK/expected" bs=1 seek=5000000 conv=notrunc status=none
start_nbd all overlay="$OV"
qemu-img compare -f raw -F raw "$(nbd_uri all tue)" "$WORK/expected" >/dev/null ||
	fail "a write through imgmount --overlay is not served over NBD"
qemu-io -f raw -c 'write -P 0x77 0 64k' "$(nbd_uri all mon)" >/dev/null || fail "write to export mon"
stop_nbd all
[[ -s $OV/mon/disk.raw.map ]] || fail "no overlay made for mon in $OV/mon"
start_nbd all overlay="$OV"
qemu-io -f raw -c 'read -P 0x77 0 64k' "$(nbd_uri all mon)" | grep -q "^read 65536/65536" ||
	fail "mon's write lost across a restart"
qemu-img compare -f raw -F raw "$(nbd_uri all wed)" "$WORK/d2" >/dev/null || fail "wed (not written) is not its backup"
stop_nbd all
[[ ! -e $OV/wed ]] || fail "a client that only read wed left an overlay behind"

# 5. an overlay of another point, refused; without overlay= the backup
cp -r "$OV/tue" "$OV/wed"
expect_exit 1 nbdkit -U - "$NBD_PLUGIN" "$CHAIN" passphrase-file="$PASSFILE" \
	point=wed overlay="$OV" --run true
expect_msg "belongs to"
start_nbd ro point=tue
qemu-img compare -f raw -F raw "$(nbd_uri ro tue)" "$WORK/d1" >/dev/null || fail "tue without overlay is not its backup"
! qemu-io -f raw -c 'write 0 4096' "$(nbd_uri ro tue)" >/dev/null 2>&1 || fail "a read-only export took a write"
stop_nbd ro
(cd "$CHAIN" && sha256sum -c --quiet "$WORK/chain.sums") || fail "the chain's files changed"
