build/asan/src/http/metrics.o: src/http/metrics.c src/http/metrics.h \
 src/base/buf.h src/base/compiler.h src/http/parser.h src/base/str.h \
 src/base/log.h src/http/router.h
src/http/metrics.h:
src/base/buf.h:
src/base/compiler.h:
src/http/parser.h:
src/base/str.h:
src/base/log.h:
src/http/router.h:
