#!/bin/bash
# usage.sh: --help and --version exit 0 on stdout for every tool; unknown options, missing or
# extra arguments, and bad option values exit 2 (usage) with a message, before touching anything.
source "${top_srcdir:-.}/tests/lib/functions.sh"
requires imgbackup imgrestore imginfo imgverify imgkey

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
[[ $(sha_tree REAL) == "$tree" ]] || fail "a usage error changed the chain"

# an empty number is no number (strtol accepts "" as 0)
for opt in --level --threads; do
	expect_exit 2 imgbackup $opt "" C2 no-such-source
	expect_msg "^imgbackup: $opt : must be "
done
expect_exit 2 imgrestore --threads "" C2 p d
