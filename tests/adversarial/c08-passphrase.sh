#!/bin/bash
# c08-passphrase.sh (doc/SECURITY.md case 8): a wrong passphrase gives "wrong passphrase" and exit 3
# from every keyed tool (imgbackup, imgrestore, imgverify --data, imgmount, imgkey add/remove),
# and nothing is written: the chain, the key file, the key holder's state, no DEST, no
# temporary file, no mount.  A passphrase of a removed key slot no longer opens the chain.
source "${top_srcdir:-.}/tests/adversarial/adv-lib.sh"
requires imgkey
make_chain
good=$IMGCHAIN_PASSPHRASE
cp -a C/imgchain.key key.before

export IMGCHAIN_PASSPHRASE="Correct horse battery staple"    # one letter off
snap
for cmd in "imgbackup --name p4 C s2" "imgbackup --name p4 --full C s1" "imgrestore C p1 out" \
	"imgverify --data C" "imgkey add C" "imgkey remove C 0"; do
	IMGCHAIN_NEW_PASSPHRASE=new expect_exit 3 $cmd
	expect_msg "^${cmd%% *}: C/imgchain.key: wrong passphrase \(no key slot opens with it\)$"
	[[ $(wc -l <last.err) -eq 1 ]] || fail "$cmd: more than one message: $LAST_ERR"
	[[ ! -e out ]] || fail "$cmd: created DEST"
	no_tmp_files C
	no_tmp_files .
	unchanged "$cmd with a wrong passphrase"
done
mount_refused 3 "C/imgchain.key: wrong passphrase" C
unchanged "imgmount with a wrong passphrase"
# a new chain needs no old passphrase; a wrong one is only wrong for an existing chain
cmp C/imgchain.key key.before || fail "the key file changed"
# the keyless tools do not need it
expect_exit 0 imgverify -q C
expect_exit 0 imginfo C

# a second passphrase in slot 1, then slot 1 removed: its passphrase no longer opens anything
export IMGCHAIN_PASSPHRASE=$good
IMGCHAIN_NEW_PASSPHRASE=second expect_exit 0 imgkey add C
IMGCHAIN_PASSPHRASE=second expect_exit 0 imgverify -q --data C
expect_exit 0 imgkey remove C 1
snap
IMGCHAIN_PASSPHRASE=second expect_exit 3 imgrestore C p1 out
expect_msg "wrong passphrase"
[[ ! -e out ]] || fail "a removed passphrase restored"
unchanged "a removed passphrase"
restore_cmp C p2 s2
