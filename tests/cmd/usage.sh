#!/bin/bash
# usage.sh: --help and --version exit 0 on stdout for every tool; unknown options, missing or
# extra arguments, and bad option values exit 2 (usage) with one line and the --help hint,
# before touching anything.  Every tool parses through tools/ic_cli: the help fits 80 columns
# and a short option letter means the same in every tool.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imginfo imgverify imgkey imgconsolidate imgmount

version=$(sed -nE 's/^AC_INIT\(\[[^]]*\], *\[([^]]*)\].*/\1/p' "$top_srcdir/configure.ac")
[[ -n $version ]] || fail "no version in configure.ac"

for t in imgbackup imgrestore imginfo imgverify imgkey; do
	for h in --help -h; do
		expect_exit 0 $t $h
		expect_out "^Usage: $t "
		expect_out "Exit status: 0 (ok|sound), 1 error, 2 usage"
		[[ -z $LAST_ERR ]] || fail "$t $h wrote to stderr"
	done
	for v in --version -V; do
		expect_exit 0 $t $v
		[[ $LAST_OUT == "$t (imgchain) $version" ]] || fail "$t $v: '$LAST_OUT'"
	done
	expect_exit 2 $t --no-such-option
	expect_msg "^$t: unrecognized option '--no-such-option'"
	expect_exit 2 $t -Z
	expect_msg "^$t: (invalid|unrecognized) option"
done

# every tool: a usage error is one line and the hint, never the whole help; the help fits
# 80 columns; a short letter stands for one long option across the tools
declare -A letter=()
for t in imgbackup imgrestore imginfo imgverify imgkey imgconsolidate imgmount; do
	for bad in --no-such-option -Z; do
		expect_exit 2 $t $bad
		[[ $(wc -l <last.err) -eq 2 ]] || fail "$t $bad: not two lines: $LAST_ERR"
		expect_msg "^Try '$t --help' for more information\.$"
	done
	expect_msg "^$t: invalid option -- 'Z'$"
	expect_exit 0 $t --help
	wide=$(awk 'length > 80' last.out)
	[[ -z $wide ]] || fail "$t --help: lines over 80 columns: $wide"
	while read -r l n; do
		[[ -z ${letter[$l]:-} || ${letter[$l]} == "$n" ]] ||
			fail "$t: $l is $n here and ${letter[$l]} elsewhere"
		letter[$l]=$n
	done < <(sed -nE 's/^  (-[A-Za-z]), (--[a-z-]+).*/\1 \2/p' last.out)
done
for l in -P -q -R -h -V; do
	[[ -n ${letter[$l]:-} ]] || fail "common option $l missing"
done
# -P and -R everywhere a key is used (imgmount and imgkey too)
for t in imgbackup imgrestore imgverify imgkey imgmount; do
	expect_exit 0 $t --help
	expect_out "^  -P, --passphrase-file FILE "
	expect_out "^  -R, --accept-rollback "
done
expect_exit 2 imgmount -P
expect_msg "^imgmount: option requires an argument -- 'P'$"
expect_exit 2 imgconsolidate --merge
expect_msg "^imgconsolidate: option '--merge' requires an argument$"
expect_exit 2 imginfo --json=yes C
expect_msg "^imginfo: option '--json=yes' doesn't allow an argument$"

# missing and extra operands
expect_exit 2 imgbackup
expect_msg "^imgbackup: expected CHAIN and SOURCE"
expect_exit 2 imgbackup C
expect_exit 2 imgbackup C a b
expect_msg "expected CHAIN and SOURCE"
expect_exit 2 imgrestore C p
expect_msg "^imgrestore: expected CHAIN, NAME and DEST"
expect_exit 2 imgrestore C p d e
expect_exit 2 imginfo
expect_msg "^imginfo: expected CHAIN"
expect_exit 2 imginfo C D
expect_exit 2 imgverify
expect_msg "^imgverify: expected CHAIN \[NAME\]"
expect_exit 2 imgverify C p q
expect_exit 2 imgkey
expect_msg "^imgkey: missing command"
expect_exit 2 imgkey frobnicate C
expect_msg "^imgkey: unknown command 'frobnicate'"
expect_exit 2 imgkey list
expect_exit 2 imgkey remove C
expect_exit 2 imgkey list C D
expect_msg "too many operands"

# options that need an argument
expect_exit 2 imgbackup C src --name
expect_msg "option '--name' requires an argument"
expect_exit 2 imgbackup C src -n
expect_msg "^imgbackup: option requires an argument -- 'n'$"
# an invalid name is a usage error too, found before anything is created
for n in .hidden -x "a b" "" latest/x; do
	expect_exit 2 imgbackup --name "$n" C src
	expect_msg "^imgbackup: --name '$n': invalid name"
done
expect_exit 2 imgrestore C p d --passphrase-file
expect_exit 2 imgverify --passphrase-file
expect_exit 2 imgkey add C --new-passphrase-file

# bad values
for bs in 0 1000 2K 3K 5000 6K 8M 4G 64X -4K 4K4 "" abc; do
	expect_exit 2 imgbackup --block-size "$bs" C src
	expect_msg "^imgbackup: --block-size $bs: must be a power of two from 4K to 4M"
done
for bs in 4K 4k 4KiB 4096 64K 1M 4M 4MiB; do
	# a good size passes option parsing (and then fails for the missing source)
	expect_exit 1 imgbackup -q --block-size "$bs" C no-such-source
	expect_msg "no-such-source: No such file or directory"
done
for l in -1 20 100 x 3x; do
	expect_exit 2 imgbackup --level "$l" C src
	expect_msg "^imgbackup: --level $l: must be 0..19"
done
for j in 0 65 -1 x; do
	expect_exit 2 imgbackup --threads "$j" C src
	expect_msg "^imgbackup: --threads $j: must be 1..64"
	expect_exit 2 imgrestore --threads "$j" C p d
	expect_msg "^imgrestore: --threads $j: must be 1..64"
done
expect_exit 2 imgbackup --full --parent p C src
expect_msg "^imgbackup: --full and --parent exclude each other"

# none of the above created anything
[[ -z $(ls -A | grep -v '^last\.\(out\|err\)$') ]] || fail "usage errors left files: $(ls -A)"

# on a real chain: a bad SLOT is a usage error and leaves the key file alone
head -c 100000 /dev/urandom >src
expect_exit 0 imgbackup -q REAL src
tree=$(sha_tree REAL)
for slot in eight 8 1x ""; do
	expect_exit 2 imgkey remove REAL "$slot"
	expect_msg "^imgkey: SLOT must be a number from 0 to 7$"
done
expect_exit 2 imgkey remove REAL -1    # getopt takes it for an option: a usage error too
expect_exit 2 imgkey list --passphrase-file src REAL
expect_msg "^imgkey: --passphrase-file is not used by this command$"
# imgkey and imgmount take -P like every keyed tool
echo "$IMGCHAIN_PASSPHRASE" >pass
expect_exit 0 env -u IMGCHAIN_PASSPHRASE imgkey check -P pass REAL
expect_out "^key slot 0 opens"
expect_exit 2 imgkey list -P pass REAL
expect_msg "^imgkey: --passphrase-file is not used by this command$"
[[ $(sha_tree REAL) == "$tree" ]] || fail "a usage error changed the chain"

# an empty number is no number (strtol accepts "" as 0)
for opt in --level --threads; do
	expect_exit 2 imgbackup $opt "" C2 no-such-source
	expect_msg "^imgbackup: $opt : must be "
done
expect_exit 2 imgrestore --threads "" C2 p d
