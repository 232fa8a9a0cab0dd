build/asan/src/base/timefmt.o: src/base/timefmt.c src/base/timefmt.h
src/base/timefmt.h:
