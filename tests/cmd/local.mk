# shell tests of tests/cmd (automake fragment included by Makefile.am)
SH_TESTS += \
	tests/cmd/usage.sh \
	tests/cmd/backup_basic.sh \
	tests/cmd/passphrase.sh \
	tests/cmd/imgkey.sh \
	tests/cmd/imginfo.sh \
	tests/cmd/bad_input.sh \
	tests/cmd/source_shrinks.sh \
	tests/cmd/corrupt_meta.sh \
	tests/cmd/verify.sh \
	tests/cmd/changed_blocks.sh \
	tests/cmd/blockdev.sh \
	tests/cmd/restore_sync.sh \
	tests/cmd/restore_sync_dev.sh \
	tests/cmd/restore_sync_nbd.sh
EXTRA_DIST += tests/cmd/restore_sync_lib.sh
