build/asan/src/main.o: src/main.c src/app/app.h src/http/router.h \
 src/base/str.h src/http/parser.h src/http/server.h src/base/buf.h \
 src/base/compiler.h src/json/json.h src/base/arena.h src/base/log.h \
 src/config.h src/db/db.h src/http/router.h src/http/server.h
src/app/app.h:
src/http/router.h:
src/base/str.h:
src/http/parser.h:
src/http/server.h:
src/base/buf.h:
src/base/compiler.h:
src/json/json.h:
src/base/arena.h:
src/base/log.h:
src/config.h:
src/db/db.h:
src/http/router.h:
src/http/server.h:
