build/src/http/router.o: src/http/router.c src/http/router.h \
 src/base/str.h src/http/parser.h src/base/log.h src/base/compiler.h \
 src/http/url.h
src/http/router.h:
src/base/str.h:
src/http/parser.h:
src/base/log.h:
src/base/compiler.h:
src/http/url.h:
