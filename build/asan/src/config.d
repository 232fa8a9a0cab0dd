build/asan/src/config.o: src/config.c src/config.h src/base/compiler.h \
 src/base/log.h src/base/compiler.h src/base/str.h
src/config.h:
src/base/compiler.h:
src/base/log.h:
src/base/compiler.h:
src/base/str.h:
