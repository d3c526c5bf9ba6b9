# shell tests of tests/consolidate (automake fragment included by Makefile.am)
