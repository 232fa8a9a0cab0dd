build/asan/src/base/buf.o: src/base/buf.c src/base/buf.h \
 src/base/compiler.h src/base/log.h src/base/str.h
src/base/buf.h:
src/base/compiler.h:
src/base/log.h:
src/base/str.h:
