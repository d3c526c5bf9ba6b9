# shell tests of tests/mount (automake fragment included by Makefile.am)
