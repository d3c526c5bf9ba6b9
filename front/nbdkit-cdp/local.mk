# The CDP journal (src/ops/ic_cdp*) and the nbdkit filter that writes it
# (front/nbdkit-cdp/; FORMAT.md section 15).  Included by Makefile.am.  The library is
# built position-independent (Makefile.am) so that the filter, a shared object, links it in.
libimgchain_a_SOURCES += format/imgchain_cdp.h src/ops/ic_cdp.h src/ops/ic_cdp_int.h \
	src/ops/ic_cdp_write.c src/ops/ic_cdp_read.c src/ops/ic_cdp_range.c \
	src/store/ic_journal.c src/store/ic_journal.h src/store/ic_fold.c \
	src/consolidate/ic_cons_fold.c \
	src/serve/ic_session_cdp.c src/serve/ic_session_cdp.h

# imgrestore --at, --checkpoints
imgrestore_SOURCES += tools/ic_cdp_cli.c tools/ic_cdp_cli.h

# nbdkit loads filters from its filter directory (pkg-config nbdkit filterdir, or
# ./configure --with-nbdkit-filterdir=DIR): `nbdkit --filter=imgcdp ...`.  Like the
# plugin, not built with the sanitizers (nbdkit itself is built without them).
if ENABLE_NBDKIT
nbdkitfilterdir = $(NBDKIT_FILTERDIR)
nbdkitfilter_PROGRAMS = nbdkit-imgcdp-filter.so
nbdkit_imgcdp_filter_so_SOURCES = front/nbdkit-cdp/imgcdp.c
nbdkit_imgcdp_filter_so_CFLAGS = $(AM_CFLAGS) $(NBDKIT_CFLAGS) -fPIC -fvisibility=hidden
nbdkit_imgcdp_filter_so_LDFLAGS = $(AM_LDFLAGS) -shared -Wl,--exclude-libs,ALL
nbdkit_imgcdp_filter_so_LDADD = $(LIBDEPS)
dist_man_MANS += front/nbdkit-cdp/nbdkit-imgcdp-filter.1
endif
