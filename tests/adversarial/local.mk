# adversarial tests (automake fragment included by Makefile.am)
SH_TESTS += tests/adversarial/rollback.sh
