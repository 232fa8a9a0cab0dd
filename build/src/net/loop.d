build/src/net/loop.o: src/net/loop.c src/net/loop.h src/base/compiler.h \
 src/base/log.h src/base/str.h
src/net/loop.h:
src/base/compiler.h:
src/base/log.h:
src/base/str.h:
