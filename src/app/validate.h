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

/* Path id: a positive 64-bit decimal integer. Returns false otherwise. */
bool parse_id(struct str s, int64_t *out);

/*
 * Read an optional string member `key` of obj. Returns 0 with *present=false
 * when absent or null, 0 with *present=true and *out set for a string, or -1
 * with *err set ("<key> must be a string") for any other type.
 */
int json_opt_string(const struct json_value *obj, const char *key, bool *present,
                    struct str *out, const char **err);

#endif
