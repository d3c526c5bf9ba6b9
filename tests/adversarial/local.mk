# adversarial tests (automake fragment included by Makefile.am): CRYPTO.md's adversarial and fault
# cases 1-16 (cNN-*.sh) and the cases the format's design adds (dNN-*.sh); doc/SECURITY.md's
# table names them.  adv-lib.sh is their shared setup, sourced, not a test.
SH_TESTS += \
	tests/adversarial/rollback.sh \
	tests/adversarial/c01-bitflip.sh
EXTRA_DIST += tests/adversarial/adv-lib.sh
