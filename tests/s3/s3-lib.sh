#!/bin/bash
# s3-lib.sh: a test of s3:// chains sources it after tests/lib/functions.sh.  It starts a
# single-node Ceph RGW (scripts/ceph-rgw.sh, skip when the Ceph packages are missing) in
# $TESTDIR/ceph, stopped at exit, exports its AWS_* environment and makes a fresh bucket:
#   BUCKET                 the bucket's name (s3://$BUCKET)
#   IMGCHAIN_S3_CACHE      $TESTDIR/cache (exported)
#   s3t CMD ARG...         tests/s3/test_s3 on the bucket (ls, get, put, uploads, rm)
#   rgw_stop / rgw_start   stop radosgw / start it again (fault tests)
requires curl python3
rgw_script=$top_srcdir/scripts/ceph-rgw.sh
for b in ceph-mon ceph-osd radosgw radosgw-admin; do
	command -v "$b" >/dev/null 2>&1 || skip "requires $b (scripts/deps.txt: ceph-mon ceph-osd radosgw)"
done
S3T=$top_builddir/tests/s3/test_s3
[[ -x $S3T ]] || fail "$S3T missing (make check builds it)"
cleanup_fn "$rgw_script" stop "$TESTDIR/ceph"
_t0=$SECONDS
rc=0
CEPH_RGW_TLS=$(command -v openssl >/dev/null && echo 1 || echo 0) "$rgw_script" start "$TESTDIR/ceph" >"$TESTDIR/rgw.env" 2>"$TESTDIR/rgw.err" || rc=$?
if [[ $rc -eq 77 ]]; then
	skip "$(cat "$TESTDIR/rgw.err")"
elif [[ $rc -ne 0 ]]; then
	cat "$TESTDIR/rgw.err" >&2
	fail "could not start the Ceph RGW (exit $rc)"
fi
echo "s3-lib: RGW up in $((SECONDS - _t0)) s" >&2
source "$TESTDIR/rgw.env"
BUCKET=imgchain-test
export IMGCHAIN_S3_CACHE=$TESTDIR/cache
s3t() { "$S3T" "$1" "s3://$BUCKET" "${@:2}"; }
s3t mkbucket
rgw_stop() { "$rgw_script" rgw-stop "$TESTDIR/ceph"; }
rgw_start() { "$rgw_script" rgw-start "$TESTDIR/ceph"; }
