/*
 * pg_schema.c - print brisk's PostgreSQL schema (src/db/migrations_pg.h) as SQL,
 * so the peers can be given the same schema when brisk cannot apply it itself
 * (a brisk built without the PostgreSQL backend).
 */
#include <stdio.h>

#include "db/migrations_pg.h"

int main(void)
{
    printf("BEGIN;\n");
    for (size_t i = 0; i < sizeof pg_migrations / sizeof pg_migrations[0]; i++)
        printf("-- %d %s\n%s\n", pg_migrations[i].version, pg_migrations[i].name,
               pg_migrations[i].sql);
    printf("COMMIT;\n");
    return 0;
}
