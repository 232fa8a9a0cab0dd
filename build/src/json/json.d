build/src/json/json.o: src/json/json.c src/json/json.h src/base/arena.h \
 src/base/compiler.h src/base/buf.h src/base/str.h
src/json/json.h:
src/base/arena.h:
src/base/compiler.h:
src/base/buf.h:
src/base/str.h:
