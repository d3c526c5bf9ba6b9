#!/usr/bin/env bash
# CDP benchmark (issue 14): the same fio jobs over NBD against nbdkit's file plugin, once
# without a filter and once with the imgcdp filter journalling into a chain: random 4 KiB
# writes with a flush every 32 writes, and sequential 1 MiB writes with a flush every 16.
# Prints per job and stack: MB/s, IOPS, mean and p99 flush latency, and the journal bytes per
# byte written.  One run on a shared machine is noisy: compare runs of one machine.
#
#   scripts/bench/bench_cdp.sh [SECONDS]           (per job and stack; default 20)
# Env: SIZE_MIB (disk, 512), BUILD (./build), OUT (/var/tmp/imgchain-bench/cdp),
#      LEVEL (the filter's zstd level; its default otherwise)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-20}
build=${BUILD:-$top/build}
out=${OUT:-/var/tmp/imgchain-bench/cdp}
size=${SIZE_MIB:-512}

die() { echo "bench_cdp: $*" >&2; exit 1; }
for t in fio nbdkit python3; do
	command -v "$t" >/dev/null 2>&1 || die "missing tool: $t"
done
fio --enghelp=nbd >/dev/null 2>&1 || die "fio has no nbd engine"
[[ -f $build/nbdkit-imgcdp-filter.so && -x $build/imgbackup ]] || die "no filter/imgbackup in $build"
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$out"
export IMGCHAIN_PASSPHRASE_FILE=$out/pass IMGCHAIN_KDF=interactive IMGCHAIN_STATE_DIR=$out/state
echo "bench" >pass
pid=

stop() { [[ -z $pid ]] || kill "$pid" 2>/dev/null || true; pid=; }
trap stop EXIT

serve()    # serve [FILTER ARGS...]: nbdkit on $out/sock over $out/disk
{
	rm -f sock nbdkit.pid
	nbdkit -U "$out/sock" -P "$out/nbdkit.pid" "$@" file "$out/disk" ${CHAIN_ARGS:-}
	for _ in $(seq 300); do [[ -s nbdkit.pid && -S sock ]] && break; sleep 0.1; done
	pid=$(cat nbdkit.pid)
}

job()      # job NAME STACK: one fio job, JSON in NAME-STACK.json
{
	local rw bs fsync
	case $1 in
	rand4k) rw=randwrite bs=4k fsync=32 ;;
	seq1m) rw=write bs=1m fsync=16 ;;
	esac
	fio --name="$1" --ioengine=nbd --uri="nbd+unix:///?socket=$out/sock" --rw=$rw --bs=$bs \
		--fsync=$fsync --size=${size}m --time_based --runtime="$secs" --iodepth=1 \
		--output-format=json --output="$1-$2.json" >/dev/null
}

echo "bench_cdp: $secs s per job, ${size} MiB disk, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for stack in plain cdp; do
	rm -rf disk C
	truncate -s ${size}M disk
	if [[ $stack == cdp ]]; then
		head -c 65536 /dev/urandom >seed.raw
		"$build/imgbackup" -q C seed.raw        # makes the chain's key
		CHAIN_ARGS="chain=$out/C passphrase-file=$out/pass ${LEVEL:+level=$LEVEL}" serve --filter="$build/nbdkit-imgcdp-filter.so"
	else
		CHAIN_ARGS= serve
	fi
	for j in rand4k seq1m; do
		job $j $stack
	done
	stop
	if [[ $stack == cdp ]]; then
		du -sb C/cdp | cut -f1 >journal.bytes
	fi
done

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def get(name, stack):
    j = json.load(open(f"{out}/{name}-{stack}.json"))["jobs"][0]
    w, s = j["write"], j["sync"]
    return dict(mbs=w["bw_bytes"] / 1e6, iops=w["iops"], bytes=w["io_bytes"],
                flush_mean=s["lat_ns"]["mean"] / 1e6,
                flush_p99=s["lat_ns"].get("percentile", {}).get("99.000000", 0) / 1e6)
total = 0
for name in ("rand4k", "seq1m"):
    p, c = get(name, "plain"), get(name, "cdp")
    total += c["bytes"]
    for stack, r in (("plain", p), ("cdp", c)):
        print(f"{name:7s} {stack:5s}: {r['mbs']:8.1f} MB/s {r['iops']:9.0f} IOPS, flush mean "
              f"{r['flush_mean']:7.2f} ms p99 {r['flush_p99']:7.2f} ms")
    print(f"{name:7s} ratio: throughput {c['mbs'] / p['mbs']:.2f}x (target >= 0.7), flush latency "
          f"{c['flush_mean'] / max(p['flush_mean'], 1e-9):.2f}x (target <= 1.5)")
jb = int(open(f"{out}/journal.bytes").read())
print(f"journal: {jb} bytes for {total} bytes written through the filter: {jb / total:.2f} journal bytes per written byte")
PY
