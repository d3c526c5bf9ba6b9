#!/bin/bash
# faults.sh: injected server faults between the tools and a real RGW (tests/s3/faultproxy.py).
# Every third request answered 503 SlowDown: a backup and a restore succeed through the
# retries, byte for byte.  A bucket that refuses writes (403 on PUT/POST/DELETE): the backup
# fails with a clear message, exit 1, and nothing becomes visible; reads still work.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imginfo cmp python3
source "$top_srcdir/tests/s3/s3-lib.sh"
rgw_port=${AWS_ENDPOINT_URL##*:}

start_proxy() {
	rm -f proxy.port
	python3 "$top_srcdir/tests/s3/faultproxy.py" "$rgw_port" "$TESTDIR/proxy.port" "$1" &
	proxy=$!
	cleanup_fn kill_quiet "$proxy"
	for ((i = 0; i < 100; i++)); do
		[[ -s proxy.port ]] && break
		sleep 0.1
	done
	[[ -s proxy.port ]] || fail "the fault proxy did not start"
	PROXY_URL=http://127.0.0.1:$(cat proxy.port)
}
stop_proxy() { kill "$proxy"; wait "$proxy" 2>/dev/null || true; }

C=s3://$BUCKET/f
mkrandom disk 40 1
cp disk s.full

# 503 SlowDown on every third request
start_proxy slowdown:3
expect_exit 0 env AWS_ENDPOINT_URL="$PROXY_URL" imgbackup --name full "$C" disk
write_at disk $((3 << 20)) 500000 2
cp disk s.inc
expect_exit 0 env AWS_ENDPOINT_URL="$PROXY_URL" imgbackup --name inc "$C" disk
rm -rf "$IMGCHAIN_S3_CACHE"
expect_exit 0 env AWS_ENDPOINT_URL="$PROXY_URL" imgrestore "$C" inc r.inc
cmp r.inc s.inc || fail "inc restored through 503s differs"
faults=$(cat proxy.port.count)
((faults >= 5)) || fail "only $faults faults were injected"
stop_proxy

# a bucket that refuses writes
start_proxy readonly
write_at disk $((9 << 20)) 500000 3
expect_exit 1 env AWS_ENDPOINT_URL="$PROXY_URL" imgbackup --name refused "$C" disk
expect_msg "access denied \(AccessDenied\)"
rm -rf "$IMGCHAIN_S3_CACHE"
expect_exit 0 env AWS_ENDPOINT_URL="$PROXY_URL" imginfo "$C"
expect_no_msg .
expect_out "inc"
grep -q refused "$TESTDIR/last.out" && fail "the refused point is listed"
expect_exit 0 env AWS_ENDPOINT_URL="$PROXY_URL" imgrestore "$C" full r.full
cmp r.full s.full || fail "full differs"
stop_proxy
echo "faults.sh: ok"
