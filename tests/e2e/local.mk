# shell tests of tests/e2e (automake fragment included by Makefile.am)
SH_TESTS += tests/lib/selftest_disks.sh
SH_TESTS += tests/e2e/chain_restore.sh
