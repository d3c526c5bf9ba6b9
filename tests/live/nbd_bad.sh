#!/bin/bash
# nbd_bad.sh: an NBD source that fails: no server on the socket, a closed TCP port, a malformed
# URI, a server killed in the middle of the backup.  Each: a message naming the URI and the
# cause, exit 1, no point and no temporary file left; a chain the run would have created is
# not left behind.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/live/live-lib.sh"
requires imgbackup imginfo nbdkit

mkrandom base 8 one
expect_exit 0 imgbackup -q --name p1 C base

# ---- nobody listening -----------------------------------------------------------------------------
expect_exit 1 imgbackup --name x NEW "nbd+unix:///exp?socket=$PWD/none.sock"
expect_msg "^imgbackup: nbd\+unix:///exp\?socket=$PWD/none.sock: cannot connect: .*(No such file|connect)"
[[ ! -e NEW ]] || fail "a failed first backup left the chain directory"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
expect_exit 1 imgbackup --name x C "nbd://127.0.0.1:$port/exp"
expect_msg "^imgbackup: nbd://127.0.0.1:$port/exp: cannot connect: .*Connection refused"
expect_exit 1 imgbackup --name x C "nbd+unix:///exp"
expect_msg "^imgbackup: nbd\+unix:///exp: cannot connect"
[[ $(point_count C) -eq 1 ]] || fail "a failed connection made a point"

# ---- the server dies in the middle ------------------------------------------------------------------
# 64 MiB of data served slowly (every read waits 100 ms), each read logged: once the first read
# was served the server is killed
mkrandom big 64 two
nbdkit -U "$PWD/k.sock" -P "$PWD/k.pid" --filter=log --filter=delay file big rdelay=100ms \
	logfile="$PWD/k.log"
cleanup_fn stop_qemu_nbd "$PWD/k"
wait_socket "$PWD/k.sock"
imgbackup -q --name mid C "nbd+unix:///?socket=$PWD/k.sock" >mid.out 2>mid.err &
bpid=$!
cleanup_fn kill_quiet $bpid KILL
for ((i = 0; i < 400; i++)); do
	grep -q 'Read.*return=0' k.log 2>/dev/null && break
	sleep 0.05
done
grep -q 'Read.*return=0' k.log || fail "the server served no read in 20 s"
kill -KILL "$(cat k.pid)"
set +e
wait $bpid
rc=$?
set -e
[[ $rc -eq 1 ]] || fail "imgbackup exited $rc after the server died, expected 1: $(cat mid.err)"
grep -Eq "^imgbackup: nbd\+unix:///\?socket=$PWD/k.sock: read at offset [0-9]+: lost the connection to the server" mid.err ||
	fail "unexpected message: $(cat mid.err)"
[[ $(point_count C) -eq 1 ]] || fail "a backup whose server died made a point"
no_tmp_files C
expect_exit 0 imgverify -q C
