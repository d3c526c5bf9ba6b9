# nbd-lib.sh: shared setup of the NBD export's tests (sourced, never run by itself), on top of
# tests/mount/mount-lib.sh (its chain: points mon, tue, wed and branch of tue, sources d0..d3;
# imgmount for the overlay tests).  The plugin is loaded by path from the build tree.
#
#   start_nbd NAME [PARAM=VALUE]...   nbdkit -f in the background (a daemonized nbdkit sends
#                                     its messages to nowhere) serving $CHAIN on
#                                     $WORK/NAME.sock with the test passphrase file, its
#                                     messages in $WORK/NAME.log; stopped at exit
#   stop_nbd NAME                     SIGTERM, wait until it is gone (fails after 30 s)
#   nbd_uri NAME [EXPORT]             nbd+unix:///EXPORT?socket=$WORK/NAME.sock
#   zero_runs FILE [BLOCK]            "OFFSET LENGTH" of every run of all-zero blocks of FILE
#                                     (BLOCK bytes, 65536 by default; the last one may be short)
source "${top_srcdir:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}/tests/mount/mount-lib.sh"

NBD_PLUGIN=$top_builddir/nbdkit-imgchain-plugin.so
requires nbdkit nbdinfo qemu-img qemu-io
[[ -f $NBD_PLUGIN ]] || skip "the nbdkit plugin was not built (configured without nbdkit, or a sanitizer build)"
PASSFILE=$WORK/passphrase
printf '%s\n' "$IMGCHAIN_PASSPHRASE" >"$PASSFILE"

start_nbd()
{
	local name=$1 i
	shift
	rm -f "$WORK/$name.sock" "$WORK/$name.pid"
	nbdkit -f -U "$WORK/$name.sock" -P "$WORK/$name.pid" "$NBD_PLUGIN" "$CHAIN" \
		passphrase-file="$PASSFILE" "$@" 2>>"$WORK/$name.log" </dev/null &
	NBD_PID=$!
	cleanup_fn stop_nbd_quiet "$name"
	for ((i = 0; i < 600; i++)); do
		[[ -S $WORK/$name.sock && -s $WORK/$name.pid ]] && return 0
		kill -0 "$NBD_PID" 2>/dev/null ||
			fail "nbdkit $name did not start: $(cat "$WORK/$name.log")"
		sleep 0.05
	done
	fail "nbdkit $name not ready after 30 s: $(cat "$WORK/$name.log")"
}

stop_nbd_quiet()
{
	local pid i
	[[ -s $WORK/$1.pid ]] || return 0
	pid=$(cat "$WORK/$1.pid")
	kill "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 600; i++)); do
		kill -0 "$pid" 2>/dev/null || { rm -f "$WORK/$1.pid"; return 0; }
		sleep 0.05
	done
	return 1
}

stop_nbd()
{
	stop_nbd_quiet "$1" || fail "nbdkit $1 still runs 30 s after SIGTERM"
}

nbd_uri()
{
	printf 'nbd+unix:///%s?socket=%s\n' "${2:-}" "$WORK/$1.sock"
}

zero_runs()
{
	python3 - "$1" "${2:-65536}" <<'PY'
import sys
path, bs = sys.argv[1], int(sys.argv[2])
data = open(path, "rb").read()
start = None
for off in range(0, len(data), bs):
    z = not any(data[off:off + bs])
    if z and start is None:
        start = off
    if not z and start is not None:
        print(start, off - start)
        start = None
if start is not None:
    print(start, len(data) - start)
PY
}
