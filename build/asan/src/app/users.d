build/asan/src/app/users.o: src/app/users.c src/app/app.h \
 src/http/router.h src/base/str.h src/http/parser.h src/http/server.h \
 src/base/buf.h src/base/compiler.h src/json/json.h src/base/arena.h \
 src/app/validate.h src/base/timefmt.h src/db/db.h src/http/url.h
src/app/app.h:
src/http/router.h:
src/base/str.h:
src/http/parser.h:
src/http/server.h:
src/base/buf.h:
src/base/compiler.h:
src/json/json.h:
src/base/arena.h:
src/app/validate.h:
src/base/timefmt.h:
src/db/db.h:
src/http/url.h:
