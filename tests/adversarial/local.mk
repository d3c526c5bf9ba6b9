# adversarial tests (automake fragment included by Makefile.am): cNN-*.sh is case NN (1-16) of
# the threat table of doc/SECURITY.md, the one test of that case; dNN-*.sh and eNN-*.sh are the
# cases the format's design and later reviews add (the same table names them).  adv-lib.sh is
# their shared setup, sourced, not a test.
SH_TESTS += \
	tests/adversarial/rollback.sh \
	tests/adversarial/c01-bitflip.sh \
	tests/adversarial/c02-position.sh \
	tests/adversarial/c03-swap.sh \
	tests/adversarial/c04-older-block.sh \
	tests/adversarial/c05-transplant.sh \
	tests/adversarial/c06-truncated.sh \
	tests/adversarial/c07-metadata.sh \
	tests/adversarial/c08-passphrase.sh \
	tests/adversarial/c09-wrong-key.sh \
	tests/adversarial/c10-caps.sh \
	tests/adversarial/c11-kill-consolidate.sh \
	tests/adversarial/c12-kill-backup.sh \
	tests/adversarial/c13-diskfull.sh \
	tests/adversarial/c14-locks.sh \
	tests/adversarial/c15-nonce.sh \
	tests/adversarial/c16-parsers.sh \
	tests/adversarial/d01-seal-replay.sh \
	tests/adversarial/d02-index-outside.sh \
	tests/adversarial/d03-same-chain-record.sh \
	tests/adversarial/d04-geometry.sh \
	tests/adversarial/d05-digest.sh \
	tests/adversarial/d06-keyslot.sh \
	tests/adversarial/d07-point-identity.sh \
	tests/adversarial/e01-live-tamper.sh \
	tests/adversarial/e02-exhaustion.sh \
	tests/adversarial/e03-plants.sh \
	tests/adversarial/e04-seq-range.sh \
	tests/adversarial/e05-seq-reuse.sh \
	tests/adversarial/e06-overlay-binding.sh \
	tests/adversarial/e07-leaks.sh \
	tests/adversarial/e08-revocation.sh \
	tests/adversarial/e09-kdf-cost.sh \
	tests/adversarial/e10-revoked-key.sh
EXTRA_DIST += tests/adversarial/adv-lib.sh
# e07-leaks.sh: tests/lib/dumpable.so, an LD_PRELOAD shim reporting prctl(PR_GET_DUMPABLE) at exit
check_DATA += tests/lib/dumpable.so
CLEANFILES += tests/lib/dumpable.so
tests/lib/dumpable.so: tests/lib/dumpable.c
	@$(MKDIR_P) tests/lib
	$(AM_V_CC)$(CC) -O2 -Wall -shared -fPIC -o $@ $(srcdir)/tests/lib/dumpable.c
