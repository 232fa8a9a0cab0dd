build/asan/src/http/parser.o: src/http/parser.c src/http/parser.h \
 src/base/str.h src/base/compiler.h
src/http/parser.h:
src/base/str.h:
src/base/compiler.h:
