build/src/base/log.o: src/base/log.c src/base/log.h src/base/compiler.h \
 src/base/str.h src/base/buf.h
src/base/log.h:
src/base/compiler.h:
src/base/str.h:
src/base/buf.h:
