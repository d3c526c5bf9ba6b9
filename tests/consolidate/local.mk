# shell tests of tests/consolidate (automake fragment included by Makefile.am)
SH_TESTS += \
	tests/consolidate/merge.sh \
	tests/consolidate/retention.sh \
	tests/consolidate/enospc.sh \
	tests/consolidate/corrupt.sh \
	tests/consolidate/lock.sh \
	tests/consolidate/mount.sh \
	tests/consolidate/online.sh \
	tests/consolidate/reflink.sh
EXTRA_DIST += tests/consolidate/cons-lib.sh
