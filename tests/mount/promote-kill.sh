#!/bin/bash
# promote-kill.sh: the mount daemon dies by SIGKILL during a live promote, at several moments:
# early and half-way into the copy, right as the copy reaches the end (around the switch),
# and twice after the switch; each time a writer is writing (and fsyncing) tue's disk.raw and
# disk-flat.vmdk through the mount and logs each write before it and each acknowledged fsync.
# After each kill the dead mount is cleaned and imgmount started again with the same overlay
# directory: the promote resumes (a copy starts again, a switched disk is served from DEST);
# every write an fsync acknowledged is in the disk byte for byte, every other byte is the
# state before the round or one of the unacknowledged writes.  At the end DEST equals the
# disk after the last acknowledged write (and the disk is served from DEST: the overlay's
# files no longer change).  Pass/fail depends only on acknowledged writes.
. "$(dirname "$0")/promote-lib.sh"

phase() { imgpromote --status "$MNT" tue | sed -n 's/^phase=\([a-z]*\).*/\1/p'; }
copied() { imgpromote --status "$MNT" tue | sed -n 's/.* copied=\([0-9]*\).*/\1/p'; }

cp "$WORK/d1" "$WORK/model.disk"
# rounds: WHEN (early: 0.3 s into the copy, half: at half the disk, end: once the copy
# reached the end, switched: 0.4 s after the switch, late: 1 s into a switched round)
round=0
for when in early half end switched late; do
	round=$((round + 1))
	mount_chain "$CHAIN" --overlay "$OV"
	: >"$WORK/log.$round"
	python3 "$WORK/writer.py" "$MNT" tue "$round" "$WORK/log.$round" 2>"$WORK/writer.err" &
	wpid=$!
	cleanup_fn kill_quiet "$wpid" KILL
	for ((i = 0; i < 400; i++)); do     # the first write (python may start slowly here)
		[[ -s $WORK/log.$round ]] || ! kill -0 "$wpid" 2>/dev/null && break
		sleep 0.05
	done
	# the first round starts the promote (64 MiB at 16 MiB/s: 4 s); later ones find it resumed
	imgpromote -q --no-wait --rate 16M "$MNT" tue "$DEST" || fail "round $round: imgpromote"
	ph=$(phase)
	case $when in
	early) sleep 0.3 ;;
	half)
		for ((i = 0; i < 400; i++)); do
			[[ $(copied) -ge $((SIZE / 2)) ]] && break
			sleep 0.05
		done ;;
	end)
		for ((i = 0; i < 400; i++)); do
			[[ $(copied) -ge $SIZE ]] && break
			sleep 0.01
		done ;;
	switched)
		imgpromote -q "$MNT" tue "$DEST" || fail "round $round: the promote did not switch"
		sleep 0.4 ;;
	late) sleep 1 ;;
	esac
	echo "round $round ($when): phase at start $ph, at the kill $(phase), $(copied) bytes copied"
	kill_mount
	wait "$wpid" || fail "round $round: writer: $(cat "$WORK/writer.err")"
	[[ -s $WORK/log.$round ]] || fail "round $round: no write before the kill"
	mount_chain "$CHAIN" --overlay "$OV"
	python3 "$WORK/check.py" "$WORK/model.disk" "$WORK/log.$round" "$MNT/tue/disk.raw" "$WORK/model.disk" ||
		fail "round $round ($when): $(tail -n 20 "$MOUNT_LOG")"
	cmp "$MNT/tue/disk.raw" <(head -c "$SIZE" "$MNT/tue/disk-flat.vmdk") ||
		fail "round $round: disk.raw and disk-flat.vmdk differ"
	unmount_chain
done

# the end: the promote switched, DEST is the disk after the last acknowledged write
mount_chain "$CHAIN" --overlay "$OV"
imgpromote -q "$MNT" tue "$DEST" || fail "the promote did not end switched"
grep -q '^phase switched$' "$OV/tue/promote.state" || fail "state: $(cat "$OV/tue/promote.state")"
ovsum=$(sha256sum "$OV"/tue/disk.raw.* | sha256sum)
printf 'the last word' | dd of="$MNT/tue/disk.raw" bs=1 seek=4096 conv=notrunc,fsync status=none
unmount_chain
cmp "$DEST" <(python3 - "$WORK/model.disk" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
d[4096:4096 + 13] = b"the last word"
sys.stdout.buffer.write(d)
PY
) || fail "DEST differs from the disk after the last acknowledged write"
[[ $(sha256sum "$OV"/tue/disk.raw.* | sha256sum) == "$ovsum" ]] || fail "the overlay changed after the switch"
echo "promote-kill: ok"
