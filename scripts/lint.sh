#!/usr/bin/env bash
# Static checks on the code we own: formatting, banned functions, cppcheck, clang-tidy.
set -uo pipefail
cd "$(dirname "$0")/.."
rc=0
files=$(find src tests/unit fuzz tests/json_diff -name '*.[ch]' | sort)

echo "== clang-format"
if ! clang-format --dry-run -Werror $files; then rc=1; fi

echo "== banned functions"
# unsafe or thread-unsafe libc calls (see docs/CODE_STYLE.md)
if grep -nE '\b(sprintf|vsprintf|strcpy|strcat|strncpy|strtok|sscanf|atoi|atol|gets|localtime|gmtime|ctime|asctime|strerror_l)\s*\(' \
    $(find src -name '*.[ch]') | grep -v 'NOLINT'; then
    rc=1
fi

echo "== cppcheck"
if ! cppcheck --quiet --error-exitcode=1 --enable=warning,portability,performance \
    --std=c11 --inline-suppr -Isrc --suppress=missingIncludeSystem src; then rc=1; fi

echo "== clang-tidy"
if ! clang-tidy --quiet $(find src -name '*.c') -- -std=gnu11 -Isrc $(pkg-config --cflags libpq 2>/dev/null || echo -I/usr/include/postgresql) -DBRISK_VERSION='"lint"' 2>/dev/null; then
    rc=1
fi
exit $rc
