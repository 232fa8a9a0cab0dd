build/asan/src/base/arena.o: src/base/arena.c src/base/arena.h \
 src/base/compiler.h src/base/log.h src/base/str.h
src/base/arena.h:
src/base/compiler.h:
src/base/log.h:
src/base/str.h:
