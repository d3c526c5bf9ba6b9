#!/bin/bash
# client.sh: the S3 client (src/store/ic_s3*) against a real Ceph RGW: PUT/GET with ranges,
# HEAD, DELETE, conditional writes, paged listings, multipart uploads by parallel threads
# (invisible until completed), abandoned uploads found and aborted (tests/s3/test_s3.c);
# then configuration and failures: wrong credentials, plain HTTP refused unless asked,
# HTTPS with the certificate checked (refused self-signed, trusted with AWS_CA_BUNDLE),
# credentials from an AWS profile, virtual-hosted addressing, retries while radosgw is down.
source "${top_srcdir:-.}/tests/lib/functions.sh"
source "$top_srcdir/tests/s3/s3-lib.sh"

expect_exit 0 "$S3T" unit "s3://$BUCKET"

# wrong credentials: a clear error naming the bucket and the server's code, exit 1
echo data >obj
expect_exit 1 env AWS_SECRET_ACCESS_KEY=wrong "$S3T" put "s3://$BUCKET" k obj
expect_msg "s3://$BUCKET/k: access denied \(SignatureDoesNotMatch\)"
expect_exit 1 env AWS_ACCESS_KEY_ID=NOSUCHKEY "$S3T" put "s3://$BUCKET" k obj
expect_msg "access denied \(InvalidAccessKeyId\)"
expect_exit 1 env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY HOME="$TESTDIR" \
	"$S3T" ls "s3://$BUCKET"
expect_msg "no credentials"

# plain HTTP only when asked
expect_exit 1 env -u IMGCHAIN_S3_ALLOW_HTTP "$S3T" ls "s3://$BUCKET"
expect_msg "plain HTTP: set IMGCHAIN_S3_ALLOW_HTTP=1"

# HTTPS: the certificate is checked (a self-signed one is refused), AWS_CA_BUNDLE trusts it
if [[ -n ${CEPH_RGW_HTTPS_URL:-} ]]; then
	expect_exit 1 env -u IMGCHAIN_S3_ALLOW_HTTP AWS_ENDPOINT_URL="$CEPH_RGW_HTTPS_URL" \
		IMGCHAIN_S3_RETRY_SECONDS=2 "$S3T" ls "s3://$BUCKET"
	expect_msg "certificate"
	expect_exit 0 env -u IMGCHAIN_S3_ALLOW_HTTP AWS_ENDPOINT_URL="$CEPH_RGW_HTTPS_URL" \
		AWS_CA_BUNDLE="$CEPH_RGW_CA" "$S3T" put "s3://$BUCKET" tls obj
	expect_exit 0 env -u IMGCHAIN_S3_ALLOW_HTTP AWS_ENDPOINT_URL="$CEPH_RGW_HTTPS_URL" \
		AWS_CA_BUNDLE="$CEPH_RGW_CA" "$S3T" get "s3://$BUCKET" tls got.tls
	cmp obj got.tls || fail "GET over HTTPS differs"
	echo "client.sh: HTTPS with certificate checks: ok"
fi

# a profile of ~/.aws/credentials and ~/.aws/config (endpoint_url there too)
mkdir -p home/.aws
printf '[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n[ci]\n' >home/.aws/credentials
printf 'aws_access_key_id = %s\naws_secret_access_key = %s\n' "$AWS_ACCESS_KEY_ID" \
	"$AWS_SECRET_ACCESS_KEY" >>home/.aws/credentials
printf '[profile ci]\nregion = us-east-1\nendpoint_url = %s\ns3 =\n  addressing_style = path\n' \
	"$AWS_ENDPOINT_URL" >home/.aws/config
expect_exit 0 env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_ENDPOINT_URL \
	HOME="$TESTDIR/home" AWS_PROFILE=ci "$S3T" put "s3://$BUCKET" prof obj
expect_exit 1 env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY \
	HOME="$TESTDIR/home" "$S3T" ls "s3://$BUCKET"
expect_msg "access denied"

# virtual-hosted addressing: BUCKET.localhost (curl resolves *.localhost to the loopback;
# radosgw's "rgw dns name = localhost")
port=${AWS_ENDPOINT_URL##*:}
expect_exit 0 env AWS_ENDPOINT_URL="http://localhost:$port" IMGCHAIN_S3_ADDRESSING=virtual \
	"$S3T" get "s3://$BUCKET" prof got
cmp obj got || fail "virtual-hosted GET differs"

# retries: radosgw down for a few seconds; the request waits for it and succeeds
rgw_stop
( sleep 4; rgw_start ) &
starter=$!
cleanup_fn kill_quiet "$starter"
t0=$SECONDS
expect_exit 0 env IMGCHAIN_S3_RETRY_SECONDS=120 "$S3T" get "s3://$BUCKET" prof got2
wait "$starter"
cmp obj got2 || fail "GET after the restart differs"
((SECONDS - t0 >= 4)) || fail "the GET did not wait for radosgw"
# and gives up after its budget with a clear message
rgw_stop
expect_exit 1 env IMGCHAIN_S3_RETRY_SECONDS=2 "$S3T" get "s3://$BUCKET" prof got3
expect_msg "s3://$BUCKET/prof: GET Couldn't connect to server \(after [0-9]+ attempts\)"
rgw_start
echo "client.sh: ok"
