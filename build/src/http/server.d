build/src/http/server.o: src/http/server.c src/http/server.h \
 src/base/buf.h src/base/compiler.h src/base/str.h src/http/parser.h \
 src/http/router.h src/json/json.h src/base/arena.h src/base/log.h \
 src/db/db.h src/http/metrics.h src/net/loop.h
src/http/server.h:
src/base/buf.h:
src/base/compiler.h:
src/base/str.h:
src/http/parser.h:
src/http/router.h:
src/json/json.h:
src/base/arena.h:
src/base/log.h:
src/db/db.h:
src/http/metrics.h:
src/net/loop.h:
