build/src/db/sqlite.o: src/db/sqlite.c src/base/buf.h src/base/compiler.h \
 src/base/log.h src/base/str.h src/db/db_int.h src/db/db.h \
 src/db/migrations_sqlite.h
src/base/buf.h:
src/base/compiler.h:
src/base/log.h:
src/base/str.h:
src/db/db_int.h:
src/db/db.h:
src/db/migrations_sqlite.h:
