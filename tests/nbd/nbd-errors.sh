#!/bin/bash
# nbd-errors.sh: nbdkit refuses to start, with the tools' message and exit code, on a wrong
# passphrase (3), an unknown point (1), a chain rolled back since this machine last saw it (4,
# served with accept-rollback=true), a missing chain (1); unknown export names are refused at
# connection time; --help lists the plugin's parameters.  (A locked overlay: nbd-overlay.sh.)
source "$(dirname "$0")/nbd-lib.sh"

make_disk_chain 64
run_nbd() {
	nbdkit -U - "$NBD_PLUGIN" "$@" --run 'nbdinfo --size "$uri"'
}

expect_exit 0 run_nbd "$CHAIN" passphrase-file="$PASSFILE"
expect_out '^67108864$'
printf 'not the passphrase\n' >"$WORK/wrong"
expect_exit 3 run_nbd "$CHAIN" passphrase-file="$WORK/wrong"
expect_msg "imgchain.key: wrong passphrase"
expect_exit 1 run_nbd "$CHAIN" passphrase-file="$PASSFILE" point=nope
expect_msg "no restore point named 'nope'"
expect_exit 1 run_nbd "$WORK/nochain" passphrase-file="$PASSFILE"
expect_msg "nochain"
expect_exit 1 run_nbd "$CHAIN" passphrase-file="$PASSFILE" point=../x
expect_msg "not a restore point name"

# exports that do not exist, or that point= does not serve
start_nbd all
! nbdinfo --size "$(nbd_uri all nope)" >/dev/null 2>&1 || fail "export 'nope' was served"
stop_nbd all
grep -q "no restore point named 'nope'" "$WORK/all.log" || fail "no message for export 'nope': $(cat "$WORK/all.log")"
start_nbd one point=tue
! nbdinfo --size "$(nbd_uri one wed)" >/dev/null 2>&1 || fail "export wed was served with point=tue"
[[ $(nbdinfo --list --json "$(nbd_uri one)" | python3 -c 'import json,sys; print([e["export-name"] for e in json.load(sys.stdin)["exports"]])') == "['tue']" ]] ||
	fail "point=tue lists other exports"
stop_nbd one

# rollback: the newest point this machine saw is gone
rm "$CHAIN/$(printf '%08d.img' 4)"
expect_exit 4 run_nbd "$CHAIN" passphrase-file="$PASSFILE"
expect_msg "branch"
expect_exit 0 run_nbd "$CHAIN" passphrase-file="$PASSFILE" accept-rollback=true

expect_exit 0 nbdkit "$NBD_PLUGIN" --help
expect_out "overlay=DIR"
expect_out "passphrase-file=FILE"
