/*
 * validate.h - field rules of the contract, kept apart from the handlers so
 * unit tests (and later the fuzzers) reach them directly.
 *
 * Each validator returns NULL when the value is acceptable, otherwise a short
 * lowercase message for {"error": ...}.
 */
#ifndef BRISK_VALIDATE_H
#define BRISK_VALIDATE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/str.h"
#include "json/json.h"

/* User name: 1..200 characters (code points) of UTF-8, no control characters. */
const char *validate_name(struct str name);

/* Email: 3..254 bytes, exactly one '@' with text either side, no whitespace or controls. */
const char *validate_email(struct str email);

/* Page sizes of the list endpoints (GET /users, GET /users/{id}/orders). */
#define LIST_DEFAULT 50
#define LIST_MAX 1000

/*
 * Parse the pagination query "limit=1..1000&after=N" (defaults 50 and 0) of
 * the raw query string q. scratch must hold q.len + 1 bytes (the decoded key
 * and value). Returns NULL or the error message. Unknown parameters are
 * ignored; a repeated known one is an error, since "which one wins" differs
 * between frameworks.
 */
const char *validate_list_query(struct str q, char *scratch, int *limit, int64_t *after);

/* Path id: a positive 64-bit decimal integer. Returns false otherwise. */
bool parse_id(struct str s, int64_t *out);

/*
 * Read an optional string member `key` of obj. Returns 0 with *present=false
 * when absent or null, 0 with *present=true and *out set for a string, or -1
 * with *err set ("<key> must be a string") for any other type.
 */
int json_opt_string(const struct json_value *obj, const char *key, bool *present, struct str *out,
                    const char **err);

#endif
