#!/bin/bash
# check-layers.sh: the tree's layers (doc/ARCHITECTURE.md) and which way dependencies point.
#
#   format/                      0  the on-disk structures
#   src/base/                    1  errors, careful I/O, progress, record locks
#   src/crypto/                  2  keys, passphrases, one block <-> one record
#   src/store/                   3  image files, the chain directory, a point's block map
#   src/ops/ src/consolidate/ src/serve/
#                                4  operations, keyless consolidation, what front ends serve;
#                                   siblings: none of them includes another's headers
#   src/imgchain.h               5  the umbrella header of the library
#   tools/ front/*/              6  thin mains; front ends (front/imgmount: FUSE, front/nbdkit:
#                                   the nbdkit plugin); front ends include none of each other
#
# Fails when a file includes a header of a higher layer (or of a sibling at layer 4, or of
# another front end), when a quoted include names no header of the tree, or when anything
# under src/ includes FUSE or nbdkit.
set -u
top=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$top" || exit 99

declare -A where=()     # header name -> its directory
for h in format/*.h src/*.h src/*/*.h tools/*.h front/*/*.h; do
	[[ -e $h ]] || continue
	n=${h##*/}
	if [[ -n ${where[$n]:-} ]]; then
		echo "FAIL: two headers named $n: ${where[$n]} and ${h%/*}"
		exit 1
	fi
	where[$n]=${h%/*}
done

rank()
{
	case $1 in
	format) echo 0 ;;
	src/base) echo 1 ;;
	src/crypto) echo 2 ;;
	src/store) echo 3 ;;
	src/ops | src/consolidate | src/serve) echo 4 ;;
	src) echo 5 ;;
	tools | front/*) echo 6 ;;
	*) echo 99 ;;
	esac
}

bad=0 n=0
for f in format/*.h src/*.h src/*/*.[ch] tools/*.[ch] front/*/*.[ch]; do
	[[ -e $f ]] || continue
	n=$((n + 1))
	dir=${f%/*}
	r=$(rank "$dir")
	if [[ $r == 99 ]]; then
		echo "FAIL: $f: a folder that has no layer (add it to tests/check-layers.sh and ARCHITECTURE.md)"
		bad=1
		continue
	fi
	if [[ $dir == src* ]] && grep -Eq '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](fuse|fuse3/)' "$f"; then
		echo "FAIL: $f includes FUSE: the library knows nothing of FUSE (only front/imgmount/ does)"
		bad=1
	fi
	if [[ $dir == src* ]] && grep -Eq '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]nbdkit-' "$f"; then
		echo "FAIL: $f includes nbdkit: the library knows nothing of nbdkit (only front/nbdkit/ does)"
		bad=1
	fi
	while IFS= read -r inc; do
		[[ $inc == config.h ]] && continue
		hd=${where[$inc]:-}
		if [[ -z $hd ]]; then
			echo "FAIL: $f includes \"$inc\", which is no header of the tree"
			bad=1
			continue
		fi
		[[ $hd == "$dir" ]] && continue
		hr=$(rank "$hd")
		if [[ $dir == front/* && $hd == front/* ]]; then
			echo "FAIL: $f includes $hd/$inc: front ends share code through src/serve, not each other"
			bad=1
		elif ((hr > r)) || { ((hr == r)) && ((r == 4)); }; then
			echo "FAIL: $f (layer $r, $dir) includes $hd/$inc (layer $hr): dependencies point down only"
			bad=1
		fi
	done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
done
if ((bad)); then
	exit 1
fi
echo "check-layers: $n files, every include points down"
exit 0
