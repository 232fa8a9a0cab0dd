/*
 * str.c - slice helpers (see str.h).
 */
#include "base/str.h"

bool str_to_i64(struct str s, int64_t *out)
{
    if (s.len == 0 || s.len > 19)
        return false;
    if (s.ptr[0] == '0' && s.len > 1)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (uint64_t)(c - '0'); /* 19 digits cannot overflow uint64 */
    }
    if (v > (uint64_t)INT64_MAX)
        return false;
    *out = (int64_t)v;
    return true;
}

const char str_digit_pairs[200] = "00010203040506070809"
                                  "10111213141516171819"
                                  "20212223242526272829"
                                  "30313233343536373839"
                                  "40414243444546474849"
                                  "50515253545556575859"
                                  "60616263646566676869"
                                  "70717273747576777879"
                                  "80818283848586878889"
                                  "90919293949596979899";
