#!/bin/bash
# live-lib.sh: what the live tests (NBD sources, dirty bitmaps, fleecing) share.  Sourced after
# tests/lib/functions.sh.  Real servers only: qemu-nbd, qemu-storage-daemon, nbdkit.
#
#   wait_socket PATH             wait (10 s) until the unix socket PATH exists
#   start_qemu_nbd SOCK IMG [QEMU-NBD-OPTION]...
#                                serve IMG (qcow2, read-only, export "exp") on SOCK, every read
#                                the server makes for a client traced to $SOCK.trace; stopped
#                                at exit (or by stop_qemu_nbd SOCK)
#   stop_qemu_nbd SOCK           stop it and wait until the image is free again
#   served_ranges SOCK           "OFFSET BYTES" of every read the server made, in order
#   served_bytes SOCK            their sum
#   nbd_uri SOCK                 nbd+unix:///exp?socket=SOCK

wait_socket()
{
	local i
	for ((i = 0; i < 200; i++)); do
		[[ -S $1 ]] && return 0
		sleep 0.05
	done
	fail "no socket $1 after 10 s"
}

start_qemu_nbd()
{
	local sock=$1 img=$2
	shift 2
	rm -f "$sock" "$sock.trace"
	# blk_co_preadv: each read of the export's block backend, i.e. what a client was served
	qemu-nbd -r -f qcow2 -t -x exp -k "$sock" --pid-file "$sock.pid" \
		--trace "blk_co_preadv,file=$sock.trace" "$@" "$img" 2>"$sock.err" &
	cleanup_fn stop_qemu_nbd "$sock"
	wait_socket "$sock"
}

stop_qemu_nbd()
{
	local pid i
	[[ -s $1.pid ]] || return 0
	pid=$(cat "$1.pid")
	kill_quiet "$pid"
	for ((i = 0; i < 200; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	rm -f "$1.pid"
}

served_ranges()
{
	sed -n 's/.*blk_co_preadv .* offset \([0-9]*\) bytes \([0-9]*\) .*/\1 \2/p' "$1.trace"
}

served_bytes() { served_ranges "$1" | awk '{ s += $2 } END { print s + 0 }'; }

nbd_uri() { echo "nbd+unix:///exp?socket=$1"; }
