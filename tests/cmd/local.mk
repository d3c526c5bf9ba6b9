# shell tests of tests/cmd (automake fragment included by Makefile.am)
