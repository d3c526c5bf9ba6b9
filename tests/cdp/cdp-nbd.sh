#!/bin/bash
# cdp-nbd.sh: the NBD export (nbdkit-imgchain-plugin) offers the CDP journal's checkpoints
# as read-only exports "cdp/TIME", listed beside the restore points, each byte for byte
# what `imgrestore --at TIME` writes; an unknown time is refused; writes are refused.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/cdp/cdp-lib.sh"
requires nbdinfo nbdcopy
PLUGIN=$top_builddir/nbdkit-imgchain-plugin.so
[[ -f $PLUGIN ]] || skip "the nbdkit plugin was not built"

size=$((2 * 1048576 + 4097))
cdp_setup $size
cdp_start
cdp_io flush; cdp_mark 0
cdp_io 'write -P 0x21 4000 100000' flush; cdp_mark 1
cdp_io 'write -z 0 65536' "write -P 0x42 $((size - 5000)) 5000" flush; cdp_mark 2
cdp_stop

PSOCK=$TESTDIR/plugin.sock
stop_plugin() { [[ -z ${PLUGIN_PID:-} ]] || kill_quiet "$PLUGIN_PID"; PLUGIN_PID=; }
nbdkit -f -U "$PSOCK" "$PLUGIN" C passphrase-file=pass 2>>plugin.log </dev/null &
PLUGIN_PID=$!
cleanup_fn stop_plugin
for _ in $(seq 600); do [[ -S $PSOCK ]] && break; sleep 0.1; done
[[ -S $PSOCK ]] || fail "the plugin did not start: $(cat plugin.log)"

nbdinfo --list --json "nbd+unix:///?socket=$PSOCK" >list.json
mapfile -t exports < <(python3 -c 'import json,sys; [print(e["export-name"]) for e in json.load(open("list.json"))["exports"]]')
cdp=()
for e in "${exports[@]}"; do [[ $e == cdp/* ]] && cdp+=("$e"); done
((${#cdp[@]} >= 3)) || fail "expected 3 checkpoint exports or more: ${exports[*]}"
printf '%s\n' "${exports[@]}" | grep -qvx 'cdp/.*' || fail "the restore points are no longer listed"
for e in "${cdp[@]}"; do
	t=${e#cdp/}
	expect_exit 0 nbdcopy "nbd+unix:///$e?socket=$PSOCK" r.nbd
	expect_exit 0 imgrestore -q -P pass --at "$t" C r.at
	cmp r.nbd r.at || fail "export $e differs from imgrestore --at $t"
	rm -f r.nbd r.at
done
last=${cdp[-1]}
expect_exit 0 nbdcopy "nbd+unix:///$last?socket=$PSOCK" r.last
cmp r.last snap.2 || fail "the last checkpoint's export is not the disk at the last flush"
expect_exit 1 nbdinfo "nbd+unix:///cdp/2001-01-01T00:00:00.000000000Z?socket=$PSOCK"
! qemu-io -f raw -c 'write 0 512' "nbd+unix:///$last?socket=$PSOCK" >/dev/null 2>&1 ||
	fail "a checkpoint export was written"
expect_exit 0 nbdcopy "nbd+unix:///$last?socket=$PSOCK" r.last2
cmp r.last2 snap.2 || fail "a checkpoint export changed"
stop_plugin
no_tmp_files .
