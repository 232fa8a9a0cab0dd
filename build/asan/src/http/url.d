build/asan/src/http/url.o: src/http/url.c src/http/url.h src/base/str.h
src/http/url.h:
src/base/str.h:
