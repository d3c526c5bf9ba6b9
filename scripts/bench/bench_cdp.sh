#!/usr/bin/env bash
# CDP benchmark (issue 14): the same fio jobs over NBD against nbdkit's file plugin, once
# without a filter and once with the imgcdp filter journalling into a chain: random 4 KiB
# writes with a flush every 32 writes, and sequential 1 MiB writes with a flush every 16.
# Prints per job and stack: MB/s, IOPS, mean and p99 flush latency, nbdkit's CPU time per
# MB written, and the journal bytes per byte written.  The stacks run interleaved (round by
# round, job by job, plain then cdp, a fresh nbdkit each) so that a change of the machine's
# load hits both; the ratio is given per round and as the median.  One run on a shared
# machine is noisy: compare runs of one machine.
#
#   scripts/bench/bench_cdp.sh [SECONDS]           (per job, stack and round; default 20)
# Env: SIZE_MIB (disk, 512), BUILD (./build), OUT (/var/tmp/imgchain-bench/cdp),
#      LEVEL (the filter's zstd level; its default otherwise), ROUNDS (2),
#      PLUGIN_ARGS (the file plugin's, both stacks; default fadvise=random, as the filter's
#      man page advises: its read-back of a block's edges otherwise fills the page cache
#      with large folios that the guest's 4 KiB writes then dirty whole; "" for none)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-20}
build=${BUILD:-$top/build}
out=${OUT:-/var/tmp/imgchain-bench/cdp}
size=${SIZE_MIB:-512}
rounds=${ROUNDS:-2}
plugin_args=${PLUGIN_ARGS-fadvise=random}

die() { echo "bench_cdp: $*" >&2; exit 1; }
for t in fio nbdkit python3 qemu-io bc; do
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

stop()
{
	[[ -z $pid ]] || { kill "$pid" 2>/dev/null || true; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; }
	pid=
}
# user + system CPU seconds of process $1 so far
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) / hz }' "/proc/$1/stat"; }
trap stop EXIT

serve()    # serve [FILTER ARGS...]: nbdkit on $out/sock over $out/disk
{
	rm -f sock nbdkit.pid
	nbdkit -U "$out/sock" -P "$out/nbdkit.pid" "$@" file "$out/disk" $plugin_args ${CHAIN_ARGS:-}
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

echo "bench_cdp: $secs s per job, ${size} MiB disk, $rounds rounds, plugin args '$plugin_args', $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
head -c 65536 /dev/urandom >seed.raw
"$build/imgbackup" -q C seed.raw        # makes the chain's key
for r in $(seq "$rounds"); do
	for j in rand4k seq1m; do
		for stack in plain cdp; do
			rm -f disk
			truncate -s ${size}M disk       # every job on an empty disk
			if [[ $stack == cdp ]]; then
				CHAIN_ARGS="chain=$out/C passphrase-file=$out/pass ${LEVEL:+level=$LEVEL}" \
					serve --filter="$build/nbdkit-imgcdp-filter.so"
			else
				CHAIN_ARGS= serve
			fi
			# one connection first: the filter's session starts (the capture of the
			# empty disk) outside the measured job
			qemu-io -f raw -c flush "nbd+unix:///?socket=$out/sock" >/dev/null
			c0=$(cpu "$pid")
			job $j $stack
			mv "$j-$stack.json" "$j-$stack-$r.json"
			echo "$(cpu "$pid") - $c0" | bc -l >"$j-$stack-$r.cpu"
			stop
		done
	done
done
du -sb C/cdp | cut -f1 >journal.bytes
du -sb C/cdp/00000001.cdp | cut -f1 >journal.first

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def get(name, stack, r):
    j = json.load(open(f"{out}/{name}-{stack}-{r}.json"))["jobs"][0]
    w, s = j["write"], j["sync"]
    cpu = float(open(f"{out}/{name}-{stack}-{r}.cpu").read())
    return dict(mbs=w["bw_bytes"] / 1e6, iops=w["iops"], bytes=w["io_bytes"],
                flush_mean=s["lat_ns"]["mean"] / 1e6,
                flush_p99=s["lat_ns"].get("percentile", {}).get("99.000000", 0) / 1e6,
                cpu=cpu, cpu_mb=cpu * 1e3 / max(w["io_bytes"] / 1e6, 1e-9))
total = 0
for name in ("rand4k", "seq1m"):
    tr, fr = [], []
    for r in range(1, rounds + 1):
        p, c = get(name, "plain", r), get(name, "cdp", r)
        total += c["bytes"]
        for stack, x in (("plain", p), ("cdp", c)):
            print(f"{name:7s} round {r} {stack:5s}: {x['mbs']:8.1f} MB/s {x['iops']:9.0f} IOPS, flush mean "
                  f"{x['flush_mean']:7.2f} ms p99 {x['flush_p99']:7.2f} ms, nbdkit CPU {x['cpu']:6.2f} s "
                  f"({x['cpu_mb']:.2f} ms per MB)")
        tr.append(c["mbs"] / p["mbs"])
        fr.append(c["flush_mean"] / max(p["flush_mean"], 1e-9))
        print(f"{name:7s} round {r} ratio: throughput {tr[-1]:.2f}x, flush latency {fr[-1]:.2f}x")
    print(f"{name:7s} median ratio: throughput {statistics.median(tr):.2f}x (target >= 0.7), flush latency "
          f"{statistics.median(fr):.2f}x (target <= 1.5)")
jb = int(open(f"{out}/journal.bytes").read())
print(f"journal: {jb} bytes for {total} bytes written through the filter: {jb / total:.2f} journal bytes per written byte"
      " (each session's capture of the disk included)")
PY
