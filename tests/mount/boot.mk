SH_TESTS += tests/mount/boot.sh
