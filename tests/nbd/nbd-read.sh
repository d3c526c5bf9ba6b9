#!/bin/bash
# nbd-read.sh: the NBD export of every point of a chain with a branch (mon, tue, wed, and
# branch of tue), read-only, through the nbdkit plugin (nbdkit daemonized, so the cache starts
# after the fork):
#   1. the exports are the point names; the default export (empty name, or "latest") is the
#      newest point;
#   2. `qemu-img compare` of every export (nbd+unix:// URI) against its source disk;
#   3. `nbdinfo --map` shows exactly the point's zero ranges (the runs of all-zero 64 KiB
#      blocks of the source) as "hole,zero", everything else as data; `qemu-img map` agrees;
#   4. several clients at once: nbdcopy with 4 connections and 16 requests in flight
#      (multi-conn) and four parallel qemu-img compares of different points read correct data;
#   4b. over TCP (nbd://127.0.0.1:PORT/POINT, what a remote hypervisor uses) the same bytes;
#   5. a backup made while nbdkit runs is listed and becomes the default export;
#   6. the chain's files never changed (sha256) except for that new image.
source "$(dirname "$0")/nbd-lib.sh"
requires nbdcopy python3 sha256sum

make_disk_chain 64
(cd "$CHAIN" && sha256sum -- * >"$WORK/chain.sums")
start_nbd all

# 1. exports
nbdinfo --list --json "$(nbd_uri all)" >"$WORK/list.json" || fail "nbdinfo --list"
got=$(python3 -c 'import json,sys; print(" ".join(sorted(e["export-name"] for e in json.load(open(sys.argv[1]))["exports"])))' "$WORK/list.json")
[[ $got == "branch mon tue wed" ]] || fail "exports: '$got'"
python3 - "$WORK/list.json" <<'PY' || fail "export flags: $(cat "$WORK/list.json")"
import json, sys
for e in json.load(open(sys.argv[1]))["exports"]:
    assert e["is_read_only"] and e["can_multi_conn"], e
    assert "base:allocation" in e["contexts"], e
    assert e["export-size"] == 64 << 20, e
PY
qemu-img compare -f raw -F raw "$(nbd_uri all)" "$WORK/d3" >/dev/null ||
	fail "the default export is not the newest point (branch)"
qemu-img compare -f raw -F raw "$(nbd_uri all latest)" "$WORK/d3" >/dev/null ||
	fail "export 'latest' is not the newest point (branch)"

# 2. every point, byte for byte
for pd in $POINTS; do
	qemu-img compare -f raw -F raw "$(nbd_uri all "${pd%%:*}")" "$WORK/${pd#*:}" >/dev/null ||
		fail "export ${pd%%:*} differs from ${pd#*:}"
done

# 3. the map: exactly the zero ranges
for pd in $POINTS; do
	p=${pd%%:*}
	nbdinfo --map "$(nbd_uri all "$p")" >"$WORK/map.$p" || fail "nbdinfo --map $p"
	awk '$3 == 3 { print $1, $2 } $3 != 3 && $3 != 0 { print "bad type", $0 }' "$WORK/map.$p" >"$WORK/zeros.$p"
	zero_runs "$WORK/${pd#*:}" >"$WORK/want.$p"
	[[ -s $WORK/want.$p ]] || fail "test setup: ${pd#*:} has no zero block"
	diff "$WORK/want.$p" "$WORK/zeros.$p" >&2 || fail "nbdinfo --map of $p: zero ranges differ from the source's"
	# the map covers the whole disk
	awk '{ n += $2 } END { exit !(n == 64 * 1048576) }' "$WORK/map.$p" || fail "map of $p does not cover the disk"
	# qemu-img map agrees: its zero ranges are the same
	qemu-img map -f raw --output=json "$(nbd_uri all "$p")" |
		python3 -c '
import json, sys
runs, cur = [], None
for r in json.load(sys.stdin):
    if r["zero"] and not r["data"]:
        if cur and cur[0] + cur[1] == r["start"]:
            cur[1] += r["length"]
        else:
            cur = [r["start"], r["length"]]
            runs.append(cur)
for s, l in runs:
    print(s, l)' >"$WORK/qzeros.$p"
	diff "$WORK/want.$p" "$WORK/qzeros.$p" >&2 || fail "qemu-img map of $p: zero ranges differ"
done

# 4. several clients at once
nbdcopy --connections=4 --requests=16 --threads=4 "$(nbd_uri all wed)" "$WORK/wed.copy" ||
	fail "nbdcopy with 4 connections"
cmp "$WORK/wed.copy" "$WORK/d2" || fail "nbdcopy of wed (4 connections) differs from d2"
pids=()
for pd in $POINTS; do
	qemu-img compare -f raw -F raw "$(nbd_uri all "${pd%%:*}")" "$WORK/${pd#*:}" >/dev/null &
	pids+=($!)
done
for pid in "${pids[@]}"; do
	wait "$pid" || fail "a parallel qemu-img compare failed"
done

# 4b. TCP on the loopback
port=$((30000 + $$ % 20000))
nbdkit -f -i 127.0.0.1 -p "$port" -P "$WORK/tcp.pid" "$NBD_PLUGIN" "$CHAIN" \
	passphrase-file="$PASSFILE" 2>"$WORK/tcp.log" </dev/null &
cleanup_fn stop_nbd_quiet tcp
for ((i = 0; i < 600; i++)); do
	nbdinfo --size "nbd://127.0.0.1:$port/tue" >/dev/null 2>&1 && break
	kill -0 $! 2>/dev/null || fail "nbdkit on TCP port $port did not start: $(cat "$WORK/tcp.log")"
	sleep 0.05
done
qemu-img compare -f raw -F raw "nbd://127.0.0.1:$port/tue" "$WORK/d1" >/dev/null || fail "tue over TCP differs from d1"
stop_nbd tcp

# 5. a new point while serving
(cd "$CHAIN" && sha256sum -c --quiet "$WORK/chain.sums") || fail "the chain's files changed"
imgbackup -q -n thu "$CHAIN" "$WORK/d0"
nbdinfo --list --json "$(nbd_uri all)" | python3 -c 'import json,sys; sys.exit("thu" not in [e["export-name"] for e in json.load(sys.stdin)["exports"]])' ||
	fail "a point backed up while serving is not listed"
qemu-img compare -f raw -F raw "$(nbd_uri all)" "$WORK/d0" >/dev/null || fail "the default export is not the new point thu"
qemu-img compare -f raw -F raw "$(nbd_uri all thu)" "$WORK/d0" >/dev/null || fail "export thu differs from d0"
stop_nbd all
! grep -q "error" "$WORK/all.log" || fail "nbdkit logged errors: $(cat "$WORK/all.log")"
