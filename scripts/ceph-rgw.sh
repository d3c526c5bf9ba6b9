#!/usr/bin/env bash
# A throw-away single-node Ceph with an S3 endpoint (radosgw), for tests and benchmarks.
#   scripts/ceph-rgw.sh start DIR     start mon, osd and radosgw under DIR (created, must not
#                                     hold a running cluster); prints the environment to use:
#                                     eval "$(scripts/ceph-rgw.sh start DIR)"
#   scripts/ceph-rgw.sh env DIR       print that environment again
#   scripts/ceph-rgw.sh stop DIR      stop every daemon DIR started and remove DIR
#   scripts/ceph-rgw.sh rgw-stop DIR  stop radosgw only (fault tests); rgw-start DIR restarts it
# Environment: CEPH_RGW_STORE=memstore (default: data in RAM, CEPH_RGW_MEM_MB, default 1024) or
# bluestore (a sparse file DIR/osd.0/block of CEPH_RGW_FILE_MB, default 4096);
# CEPH_RGW_MGR=1 also starts a manager (nothing here needs one); CEPH_RGW_TIMEOUT (s, 120);
# CEPH_RGW_TLS=1 also serves HTTPS on another port with a fresh self-signed certificate for
# 127.0.0.1 (DIR/tls.crt): the environment then has CEPH_RGW_HTTPS_URL and CEPH_RGW_CA.
# One monitor, one OSD, no authentication between the daemons (they listen on 127.0.0.1 only),
# radosgw's beast frontend on a free port of 127.0.0.1, one S3 user with generated keys.
# Exit 77 when the Ceph packages are missing (tests skip), 1 when a daemon fails (its log tail
# is printed).  Needs: ceph-mon ceph-osd radosgw ceph-common (scripts/deps.txt).
set -euo pipefail

die() { echo "ceph-rgw: $*" >&2; exit 1; }

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

logtail() {
	local f
	for f in "$DIR"/*.log; do
		[ -s "$f" ] || continue
		echo "--- $f (tail)" >&2
		tail -n 15 "$f" >&2
	done
}

# pidfile -> kill and wait (at most 20 s), only the daemon that file names
stop_pidfile() {
	local pf=$1 pid i
	[ -s "$pf" ] || return 0
	pid=$(cat "$pf")
	if kill "$pid" 2>/dev/null; then
		for i in $(seq 200); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$pf"
}

wait_http() {
	local url=$1 deadline=$((SECONDS + TIMEOUT))
	while [ $SECONDS -lt $deadline ]; do
		if curl -s -o /dev/null --max-time 2 "$url"; then
			return 0
		fi
		if [ -s "$DIR/run/rgw.pid" ] && ! kill -0 "$(cat "$DIR/run/rgw.pid")" 2>/dev/null; then
			logtail
			die "radosgw exited"
		fi
		sleep 0.2
	done
	logtail
	die "radosgw did not answer on $url within ${TIMEOUT}s"
}

start_rgw() {
	CONF=$DIR/ceph.conf
	radosgw -n client.rgw.a -c "$CONF" >>"$DIR/rgw.out" 2>&1 || { logtail; die "radosgw failed"; }
	wait_http "http://127.0.0.1:$(cat "$DIR/rgw.port")/"
}

print_env() {
	local port
	port=$(cat "$DIR/rgw.port")
	cat <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=$(cat "$DIR/access.key")
export AWS_SECRET_ACCESS_KEY=$(cat "$DIR/secret.key")
export AWS_REGION=us-east-1
export IMGCHAIN_S3_ALLOW_HTTP=1
export CEPH_RGW_DIR=$DIR
EOF
	if [ -s "$DIR/rgw.tlsport" ]; then
		echo "export CEPH_RGW_HTTPS_URL=https://127.0.0.1:$(cat "$DIR/rgw.tlsport")"
		echo "export CEPH_RGW_CA=$DIR/tls.crt"
	fi
}

cmd_start() {
	for b in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool curl python3; do
		command -v "$b" >/dev/null || { echo "ceph-rgw: $b not installed" >&2; exit 77; }
	done
	[ ! -e "$DIR/run/mon.pid" ] || die "$DIR holds a cluster already (stop it first)"
	mkdir -p "$DIR/run"
	DIR=$(cd "$DIR" && pwd)
	local fsid osd_uuid monport rgwport store mem file_mb
	fsid=$(cat /proc/sys/kernel/random/uuid)
	osd_uuid=$(cat /proc/sys/kernel/random/uuid)
	monport=$(free_port)
	rgwport=$(free_port)
	store=${CEPH_RGW_STORE:-memstore}
	mem=${CEPH_RGW_MEM_MB:-1024}
	file_mb=${CEPH_RGW_FILE_MB:-4096}
	echo "$rgwport" >"$DIR/rgw.port"
	local frontends="beast endpoint=127.0.0.1:$rgwport"
	if [ "${CEPH_RGW_TLS:-0}" = 1 ]; then
		local tlsport
		tlsport=$(free_port)
		echo "$tlsport" >"$DIR/rgw.tlsport"
		openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
			-addext subjectAltName=IP:127.0.0.1 -keyout "$DIR/tls.key" -out "$DIR/tls.crt" \
			>/dev/null 2>&1 || die "openssl could not make a certificate"
		frontends="$frontends ssl_endpoint=127.0.0.1:$tlsport"
		frontends="$frontends ssl_certificate=$DIR/tls.crt ssl_private_key=$DIR/tls.key"
	fi
	CONF=$DIR/ceph.conf
	cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$monport
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd crush chooseleaf type = 0
run dir = $DIR/run
log file = $DIR/\$name.log
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
debug ms = 0
[mon]
mon data = $DIR/mon.\$id
# a throw-away monitor on a shared machine: a disk filled by others (below 5% free, the
# default) must not stop it from starting
mon data avail crit = 0
[mgr]
mgr data = $DIR/mgr.\$id
[osd]
osd data = $DIR/osd.\$id
osd objectstore = $store
memstore device bytes = $((mem * 1024 * 1024))
bluestore block path = $DIR/osd.\$id.block
bluestore block create = true
bluestore block size = $((file_mb * 1024 * 1024))
bluestore fsck on mkfs = false
osd memory target = 939524096
[client.rgw.a]
rgw frontends = $frontends
pid file = $DIR/run/rgw.pid
rgw dns name = localhost
rgw multipart min part size = 65536
rgw enable usage log = false
rgw thread pool size = 64
EOF
	local t0=$SECONDS
	# a failed start stops what it started (DIR and its logs stay for a look)
	trap 'stop_daemons' EXIT
	monmaptool --create --addv a "[v1:127.0.0.1:$monport]" --fsid "$fsid" "$DIR/monmap" >/dev/null
	ceph-mon --mkfs -i a --monmap "$DIR/monmap" -c "$CONF" >"$DIR/mkfs.out" 2>&1 ||
		{ cat "$DIR/mkfs.out" >&2; die "ceph-mon --mkfs failed"; }
	ceph-mon -i a -c "$CONF" || { logtail; die "ceph-mon failed"; }
	local id tries=0
	# a monitor just started can answer its first commands with EPERM ("problem getting
	# command descriptions": seen under load); `osd new UUID` is idempotent, so ask again
	until id=$(timeout "$TIMEOUT" ceph -c "$CONF" --connect-timeout 30 osd new "$osd_uuid" \
		   2>"$DIR/osdnew.err"); do
		if ((++tries >= 10)); then
			cat "$DIR/osdnew.err" >&2
			logtail
			die "ceph osd new failed"
		fi
		sleep 1
	done
	mkdir -p "$DIR/osd.$id"
	ceph-osd -i "$id" --mkfs --osd-uuid "$osd_uuid" --no-mon-config -c "$CONF" \
		>"$DIR/osdmkfs.out" 2>&1 || { cat "$DIR/osdmkfs.out" >&2; die "ceph-osd --mkfs failed"; }
	ceph-osd -i "$id" --no-mon-config -c "$CONF" >>"$DIR/osd.out" 2>&1 ||
		{ logtail; die "ceph-osd failed"; }
	if [ "${CEPH_RGW_MGR:-0}" = 1 ]; then
		mkdir -p "$DIR/mgr.x"
		ceph-mgr -i x -c "$CONF" >>"$DIR/mgr.out" 2>&1 || { logtail; die "ceph-mgr failed"; }
	fi
	start_rgw
	local ak sk
	ak=$(head -c 15 /dev/urandom | base32 | tr -d '=')
	sk=$(head -c 30 /dev/urandom | base64 | tr -d '=+/')
	timeout "$TIMEOUT" radosgw-admin -c "$CONF" user create --uid=imgchain --display-name=imgchain \
		--access-key="$ak" --secret-key="$sk" >"$DIR/user.json" 2>"$DIR/user.err" ||
		{ cat "$DIR/user.err" >&2; die "radosgw-admin user create failed"; }
	echo "$ak" >"$DIR/access.key"
	echo "$sk" >"$DIR/secret.key"
	trap - EXIT
	echo "ceph-rgw: up in $((SECONDS - t0)) s ($store, S3 on 127.0.0.1:$rgwport)" >&2
	print_env
}

stop_daemons() {
	local pf
	for pf in "$DIR/run/rgw.pid" "$DIR"/run/mgr.*.pid "$DIR"/run/osd.*.pid "$DIR/run/mon.a.pid"; do
		[ -e "$pf" ] && stop_pidfile "$pf"
	done
	return 0
}

cmd_stop() {
	[ -d "$DIR" ] || return 0
	[ -f "$DIR/ceph.conf" ] || die "$DIR is not a ceph-rgw directory"
	stop_daemons
	rm -rf "$DIR"
}

[ $# -eq 2 ] || { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
DIR=$2
TIMEOUT=${CEPH_RGW_TIMEOUT:-120}
case $1 in
start) cmd_start ;;
stop) cmd_stop ;;
env) print_env ;;
rgw-stop) stop_pidfile "$DIR/run/rgw.pid" ;;
rgw-start) DIR=$(cd "$DIR" && pwd); start_rgw ;;
*) echo "ceph-rgw: unknown command '$1'" >&2; exit 2 ;;
esac
