# shell tests of tests/e2e (automake fragment included by Makefile.am)
