build/asan/src/app/validate.o: src/app/validate.c src/app/validate.h \
 src/base/str.h src/json/json.h src/base/arena.h src/base/compiler.h \
 src/base/buf.h
src/app/validate.h:
src/base/str.h:
src/json/json.h:
src/base/arena.h:
src/base/compiler.h:
src/base/buf.h:
