#!/bin/bash
# nbd_source.sh: imgbackup reads an NBD export (libnbd): nbd+unix://, nbd:// over TCP, nbds:// with
# TLS (PSK).  The point equals `qemu-img convert` of the served qcow2 byte for byte; zero and
# unallocated extents (base:allocation) are recorded as zero without being read: the server's
# own trace of what it read for the client holds only the ranges that have data.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/live/live-lib.sh"
requires imgbackup imgrestore qemu-img qemu-io qemu-nbd

bs=65536
size=$((64 * 1048576 + 4608))        # the last block is short
qemu-img create -q -f qcow2 d.qcow2 $size
# data at unaligned places (one range across a block boundary), written zeros, and the rest
# never allocated; the short last block has data
qemu-io -c "write -P 0x11 0 3M" -c "write -P 0x22 $((5 * bs - 512)) 1024" \
	-c "write -P 0x33 20M 2M" -c "write -z 21M 512K" -c "write -P 0x44 $((size - 4096)) 4096" \
	d.qcow2 >/dev/null
qemu-img convert -O raw d.qcow2 want.raw

start_qemu_nbd "$PWD/s.sock" d.qcow2
expect_exit 0 imgbackup --name p1 C "$(nbd_uri "$PWD/s.sock")"
expect_out "full point 'p1'"
restore_cmp C p1 want.raw
read=$(summary_bytes read)
served=$(served_bytes "$PWD/s.sock")
# blocks 4 and 5 lie inside the first 3 MiB: 48 + 32 - 8 full blocks and the 4608-byte last one
want_read=$(((48 + 32 - 8) * bs + 4608))
# the summary rounds ("4.5 MiB"): within 0.1 %
[[ $((read * 1000 / want_read)) -eq 1000 || $((want_read * 1000 / read)) -eq 1000 ]] ||
	fail "imgbackup says it read $read bytes, expected $want_read"
[[ $served -eq $want_read ]] || fail "the server read $served bytes for the client, expected $want_read"
# nothing read outside the data ranges
served_ranges "$PWD/s.sock" | while read -r off len; do
	if ! { [[ $off -ge 0 && $((off + len)) -le $((3 * 1048576)) ]] ||
	       [[ $off -ge $((20 * 1048576)) && $((off + len)) -le $((21 * 1048576)) ]] ||
	       [[ $off -ge $((21 * 1048576 + 524288)) && $((off + len)) -le $((22 * 1048576)) ]] ||
	       [[ $off -ge $((size - 4608)) && $((off + len)) -le $size ]]; }; then
		fail "the server read $len bytes at $off, outside the data"
	fi
done

# ---- one worker or many: the same point ---------------------------------------------------
rm -f s.sock.trace
expect_exit 0 imgbackup --full -j 1 --name p1j C "$(nbd_uri "$PWD/s.sock")"
restore_cmp C p1j want.raw
stop_qemu_nbd "$PWD/s.sock"

# ---- an incremental over NBD without a bitmap reads everything, stores only changes -------
qemu-io -c "write -P 0x55 $((40 * bs + 100)) 10" d.qcow2 >/dev/null
qemu-img convert -O raw d.qcow2 want2.raw
start_qemu_nbd "$PWD/s.sock" d.qcow2
expect_exit 0 imgbackup --name p2 C "$(nbd_uri "$PWD/s.sock")"
expect_out "incremental point 'p2' \(seq 3\) based on 'p1j'"
expect_out "changed 64.0 KiB \(1 blocks?\)"
restore_cmp C p2 want2.raw
stop_qemu_nbd "$PWD/s.sock"

# ---- TCP: nbd://127.0.0.1:PORT/exp --------------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
qemu-nbd -r -f qcow2 -t -x exp -b 127.0.0.1 -p "$port" --pid-file tcp.pid d.qcow2 2>tcp.err &
cleanup_fn stop_qemu_nbd "$PWD/tcp"
for ((i = 0; i < 200; i++)); do
	[[ -s tcp.pid ]] && nbdinfo --size "nbd://127.0.0.1:$port/exp" >/dev/null 2>&1 && break
	sleep 0.05
done
expect_exit 0 imgbackup --full --name tcp C "nbd://127.0.0.1:$port/exp"
restore_cmp C tcp want2.raw
stop_qemu_nbd "$PWD/tcp"

# ---- nbds: TLS with a pre-shared key (nbdkit) ----------------------------------------------------
if command -v nbdkit >/dev/null && nbdkit --dump-config | grep -qx 'tls=yes'; then
	printf 'alice:%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >keys.psk
	chmod 600 keys.psk
	nbdkit -U "$PWD/t.sock" -P "$PWD/t.pid" --tls=require --tls-psk="$PWD/keys.psk" file want2.raw
	cleanup_fn stop_qemu_nbd "$PWD/t"
	wait_socket "$PWD/t.sock"
	expect_exit 1 imgbackup --full --name plain C "nbd+unix:///?socket=$PWD/t.sock"
	expect_msg "cannot connect: .*TLS"
	expect_exit 0 imgbackup --full --name tls C \
		"nbds+unix://alice@/?socket=$PWD/t.sock&tls-psk-file=$PWD/keys.psk"
	restore_cmp C tls want2.raw
else
	echo "nbdkit without TLS: nbds:// not tested" >&2
fi
expect_exit 0 imgverify -q --data C
