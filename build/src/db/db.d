build/src/db/db.o: src/db/db.c src/base/log.h src/base/compiler.h \
 src/base/str.h src/db/db_int.h src/db/db.h
src/base/log.h:
src/base/compiler.h:
src/base/str.h:
src/db/db_int.h:
src/db/db.h:
