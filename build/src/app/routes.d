build/src/app/routes.o: src/app/routes.c src/app/app.h src/http/router.h \
 src/base/str.h src/http/parser.h src/http/server.h src/base/buf.h \
 src/base/compiler.h src/json/json.h src/base/arena.h
src/app/app.h:
src/http/router.h:
src/base/str.h:
src/http/parser.h:
src/http/server.h:
src/base/buf.h:
src/base/compiler.h:
src/json/json.h:
src/base/arena.h:
