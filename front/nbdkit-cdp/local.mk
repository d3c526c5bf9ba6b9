# The CDP journal (src/ops/ic_cdp*) and the nbdkit filter that writes it
# (front/nbdkit-cdp/; FORMAT.md section 14).  Included by Makefile.am.
libimgchain_a_SOURCES += format/imgchain_cdp.h src/ops/ic_cdp.h src/ops/ic_cdp_int.h \
	src/ops/ic_cdp_write.c src/ops/ic_cdp_read.c src/ops/ic_cdp_range.c
# position-independent, so that the filter (a shared object) can link it in
libimgchain_a_CFLAGS = $(AM_CFLAGS) -fPIC

# nbdkit loads filters from its filter directory (pkg-config nbdkit filterdir, or
# ./configure --with-nbdkit-filterdir=DIR): `nbdkit --filter=imgcdp ...`.  The library is
# linked in (built position-independent, above), so the filter needs no libimgchain.so.
nbdkitfilterdir = $(NBDKIT_FILTERDIR)
nbdkitfilter_PROGRAMS = nbdkit-imgcdp-filter.so
nbdkit_imgcdp_filter_so_SOURCES = front/nbdkit-cdp/imgcdp.c
nbdkit_imgcdp_filter_so_CFLAGS = $(AM_CFLAGS) $(NBDKIT_CFLAGS) -fPIC -fvisibility=hidden
nbdkit_imgcdp_filter_so_LDFLAGS = -shared -Wl,--exclude-libs,ALL
nbdkit_imgcdp_filter_so_LDADD = $(LIBDEPS)

dist_man_MANS += front/nbdkit-cdp/nbdkit-imgcdp-filter.1

# imgrestore --at
imgrestore_SOURCES += tools/ic_cdp_cli.c tools/ic_cdp_cli.h
