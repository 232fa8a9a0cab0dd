/*
 * parser.c - strict, zero-copy HTTP/1.1 request parser and chunked decoder
 * (see parser.h for the contracts).
 *
 * The request parser is one forward pointer loop over buf[0..len): every byte
 * is classified through a 256-entry table, so a syntax error is reported as
 * soon as the offending byte has been seen, and running out of bytes anywhere
 * means "incomplete" (-2). Nothing is allocated and nothing is read at or past
 * buf + min(len, max_header_bytes). The framing headers are interpreted in a
 * second pass over the (small, cache-hot) header array once the head is
 * complete, so a prefix of a valid request can never be rejected.
 *
 * Choices where RFC 9110/9112 leave room (all strict, see API.md wire rules):
 *   - One empty line (CRLF) before the request line is skipped (RFC 9112 2.2
 *     SHOULD, for clients that send a stray CRLF after a POST body); a second
 *     one is a 400. The skipped CRLF counts towards the head length and the
 *     max_header_bytes limit.
 *   - "HTTP/1." DIGIT with a minor version above 1 (1.2 ... 1.9) is served
 *     as HTTP/1.1, the highest 1.x implemented (RFC 9110 2.5); another major
 *     version ("HTTP/2.0", "HTTP/0.9") is a 505; anything else in the version
 *     position is a 400.
 *   - The request-target may hold any byte 0x21..0x7E except '#'. Accepted
 *     forms: origin-form, "*" for OPTIONS only, and absolute-form with the
 *     scheme "http" or "https" (case-insensitive) and a non-empty authority
 *     without userinfo (RFC 9110 4.2.4: '@' is rejected). Authority-form
 *     (CONNECT) is a 400.
 *   - Every duplicate Content-Length is a 400, even with equal values, and so is
 *     a comma list; leading zeros are allowed (1*DIGIT); values above
 *     INT64_MAX are a 400.
 *   - Transfer-Encoding (all fields together form one list): a syntactically
 *     malformed list (empty element, bad token or parameter) is a 400, and so
 *     is a list whose final coding is not "chunked" (e.g. "gzip": RFC 9112 6.3
 *     says the length cannot be determined: 400 and close); a list ending in
 *     "chunked" with any other coding is a 501 (RFC 9110 6.1), e.g.
 *     "gzip, chunked", "chunked, chunked", or two TE fields.
 *   - Host: exactly one in 1.1, at most one in 1.0; the value may be empty and
 *     otherwise may only hold URI authority characters without userinfo
 *     (unreserved, sub-delims, ':', '[', ']', '%').
 *   - Content-Type and Authorization are singleton fields: a duplicate is a
 *     400 (ambiguous). A duplicate X-Request-Id keeps the first.
 *   - Connection is a list of tokens; empty elements are skipped, a non-token
 *     element is a 400.
 *   - Expect: any field value other than "100-continue" (case-insensitive) is
 *     a 417; in an HTTP/1.0 request 100-continue is ignored (RFC 9110 10.1.1).
 *   - Status precedence when several rules break: syntax 400 / 431 / 505 (as
 *     met while scanning), then Host/framing 400s, 501, 413, 417.
 */
#include "http/parser.h"

#include <limits.h>
#include <string.h>

#include "base/compiler.h"

/* Character classes, one bit each, looked up through ctab[]. */
#define C_TCHAR 1  /* RFC 9110 token character */
#define C_VALUE 2  /* field-value byte: HTAB, SP, VCHAR, obs-text */
#define C_TARGET 4 /* request-target byte: 0x21..0x7E except '#' */
#define C_HOST 8   /* authority byte: unreserved, sub-delims, ':', '[', ']', '%' */
#define C_HEX 16   /* HEXDIG */

static const unsigned char ctab[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  2,  0,  0,  0,  0,  0,  0,  /* 0x00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 0x10 */
    2,  15, 6,  3,  15, 15, 15, 15, 14, 14, 15, 15, 14, 15, 15, 6,  /* 0x20 */
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 14, 14, 6,  14, 6,  6,  /* 0x30 */
    6,  31, 31, 31, 31, 31, 31, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x40 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 14, 6,  14, 7,  15, /* 0x50 */
    7,  31, 31, 31, 31, 31, 31, 15, 15, 15, 15, 15, 15, 15, 15, 15, /* 0x60 */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6,  7,  6,  15, 0,  /* 0x70 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0x80 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0x90 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xa0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xb0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xc0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xd0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xe0 */
    2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 0xf0 */
};

#define IS(c, cls) ((ctab[(unsigned char)(c)] & (cls)) != 0)
#define IS_OWS(c) ((c) == ' ' || (c) == '\t')

/* SWAR helpers: does the 8-byte word hold a byte < 0x20, or a byte == 0x7F? */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL
#define HAS_LESS(x, n) ((((x)-ONES * (n)) & ~(x)&HIGHS) != 0)
#define HAS_ZERO(x) ((((x)-ONES) & ~(x)&HIGHS) != 0)

/* The path of an absolute-form target with no path component ("http://h"). */
static const char slash_path[] = "/";

static const char *const method_names[HTTP_METHOD_COUNT] = {
    [HTTP_GET] = "GET",         [HTTP_HEAD] = "HEAD",   [HTTP_POST] = "POST",
    [HTTP_PUT] = "PUT",         [HTTP_PATCH] = "PATCH", [HTTP_DELETE] = "DELETE",
    [HTTP_OPTIONS] = "OPTIONS", [HTTP_OTHER] = "OTHER",
};

enum http_method http_method_from_str(struct str m)
{
    /* Methods are case-sensitive (RFC 9110 9.1): "get" is HTTP_OTHER. */
    switch (m.len) {
    case 3:
        if (memcmp(m.ptr, "GET", 3) == 0)
            return HTTP_GET;
        if (memcmp(m.ptr, "PUT", 3) == 0)
            return HTTP_PUT;
        break;
    case 4:
        if (memcmp(m.ptr, "HEAD", 4) == 0)
            return HTTP_HEAD;
        if (memcmp(m.ptr, "POST", 4) == 0)
            return HTTP_POST;
        break;
    case 5:
        if (memcmp(m.ptr, "PATCH", 5) == 0)
            return HTTP_PATCH;
        break;
    case 6:
        if (memcmp(m.ptr, "DELETE", 6) == 0)
            return HTTP_DELETE;
        break;
    case 7:
        if (memcmp(m.ptr, "OPTIONS", 7) == 0)
            return HTTP_OPTIONS;
        break;
    default:
        break;
    }
    return HTTP_OTHER;
}

const char *http_method_name(enum http_method m)
{
    if ((unsigned)m >= HTTP_METHOD_COUNT)
        return "OTHER";
    return method_names[m];
}

/* ASCII case-insensitive comparison of s with a lowercase literal of length n. */
static bool ieq(struct str s, const char *lower, size_t n)
{
    if (s.len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        if (c != (unsigned char)lower[i])
            return false;
    }
    return true;
}

#define IEQ(s, lit) ieq((s), (lit), sizeof(lit) - 1)

/* True when s starts with the lowercase literal lit, ASCII case-insensitively. */
#define PREFIX_IEQ(s, lit)                                                                         \
    ((s).len >= sizeof(lit) - 1 &&                                                                 \
     ieq((struct str){(s).ptr, sizeof(lit) - 1}, (lit), sizeof(lit) - 1))

bool http_header_get(const struct http_request *req, const char *name, struct str *out_value)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->num_headers; i++) {
        const struct http_header *h = &req->headers[i];
        if (h->name.len != n)
            continue;
        size_t j = 0;
        for (; j < n; j++) {
            unsigned char a = (unsigned char)h->name.ptr[j], b = (unsigned char)name[j];
            if (a >= 'A' && a <= 'Z')
                a = (unsigned char)(a + 32);
            if (b >= 'A' && b <= 'Z')
                b = (unsigned char)(b + 32);
            if (a != b)
                break;
        }
        if (j == n) {
            *out_value = h->value;
            return true;
        }
    }
    return false;
}

/*
 * Split req->target into path and query (and, for absolute-form, *authority).
 * Returns false when the target is not in a form we accept.
 */
static bool split_target(struct http_request *req, struct str *authority)
{
    const char *t = req->target.ptr, *e = t + req->target.len;

    if (t[0] == '/') {
        const char *q = memchr(t, '?', req->target.len);
        if (q) {
            req->path = (struct str){t, (size_t)(q - t)};
            req->query = (struct str){q + 1, (size_t)(e - q - 1)};
        } else {
            req->path = req->target;
        }
        return true;
    }
    if (req->target.len == 1 && t[0] == '*') {
        if (req->method != HTTP_OPTIONS)
            return false;
        req->path = req->target;
        return true;
    }

    /* absolute-form: scheme "://" authority [path-abempty] ["?" query] */
    size_t skip;
    if (PREFIX_IEQ(req->target, "http://"))
        skip = 7;
    else if (PREFIX_IEQ(req->target, "https://"))
        skip = 8;
    else
        return false;
    const char *a = t + skip, *p = a;
    while (p < e && *p != '/' && *p != '?') {
        if (!IS(*p, C_HOST))
            return false; /* '@' (userinfo) or another non-authority byte */
        p++;
    }
    if (p == a)
        return false; /* empty host (RFC 9110 4.2.1) */
    *authority = (struct str){a, (size_t)(p - a)};
    if (p == e || *p == '?') {
        req->path = (struct str){slash_path, 1};
    } else {
        const char *q = memchr(p, '?', (size_t)(e - p));
        req->path = (struct str){p, (size_t)((q ? q : e) - p)};
        p = q ? q : e;
    }
    if (p < e) /* *p == '?' */
        req->query = (struct str){p + 1, (size_t)(e - p - 1)};
    return true;
}

/*
 * Host field value (RFC 9110 7.2: uri-host [ ":" port ]): empty, or an
 * IP-literal "[...]" of hex digits, ':' and '.', or a reg-name / IPv4 of
 * authority bytes without ':'; then optionally ':' and digits.
 */
static bool host_valid(struct str v)
{
    size_t i = 0;
    if (v.len == 0)
        return true;
    if (v.ptr[0] == '[') {
        for (i = 1; i < v.len && v.ptr[i] != ']'; i++) {
            char c = v.ptr[i];
            bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
            if (!hex && c != ':' && c != '.')
                return false;
        }
        if (i == v.len || i == 1)
            return false; /* no closing bracket, or "[]" */
        i++;
    } else {
        for (; i < v.len && v.ptr[i] != ':'; i++)
            if (!IS(v.ptr[i], C_HOST) || v.ptr[i] == '[' || v.ptr[i] == ']')
                return false;
        if (i == 0)
            return false; /* ":80" names no host */
    }
    if (i == v.len)
        return true;
    if (v.ptr[i] != ':')
        return false;
    for (i++; i < v.len; i++)
        if (v.ptr[i] < '0' || v.ptr[i] > '9')
            return false;
    return true;
}

/* Content-Length: 1*DIGIT, at most INT64_MAX. */
static bool parse_content_length(struct str v, uint64_t *out)
{
    if (v.len == 0)
        return false;
    uint64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        unsigned d = (unsigned)(unsigned char)v.ptr[i] - '0';
        if (d > 9)
            return false;
        if (n > ((uint64_t)INT64_MAX - d) / 10)
            return false;
        n = n * 10 + d;
    }
    *out = n;
    return true;
}

static const char *skip_ows(const char *p, const char *e)
{
    while (p < e && IS_OWS(*p))
        p++;
    return p;
}

static const char *skip_token(const char *p, const char *e)
{
    while (p < e && IS(*p, C_TCHAR))
        p++;
    return p;
}

/*
 * Parse one Transfer-Encoding field value as a list of transfer-codings
 * (RFC 9112 7: token *( OWS ";" OWS token BWS "=" BWS ( token / quoted-string ) ),
 * separated by OWS "," OWS; empty elements are rejected). Adds the number of
 * codings to *count and sets *other when one of them is not a bare "chunked".
 * Returns false when the value is malformed.
 */
static bool parse_te(struct str v, size_t *count, bool *other, bool *last_chunked)
{
    const char *p = v.ptr, *e = v.ptr + v.len;
    for (;;) {
        const char *s = p;
        p = skip_token(p, e);
        if (p == s)
            return false;
        bool plain_chunked = IEQ(((struct str){s, (size_t)(p - s)}), "chunked");
        p = skip_ows(p, e);
        while (p < e && *p == ';') {
            plain_chunked = false;
            p = skip_ows(p + 1, e);
            s = p;
            p = skip_token(p, e);
            if (p == s)
                return false;
            p = skip_ows(p, e);
            if (p == e || *p != '=')
                return false;
            p = skip_ows(p + 1, e);
            if (p < e && *p == '"') {
                p++;
                while (p < e && *p != '"') {
                    if (*p == '\\' && ++p == e)
                        return false;
                    p++;
                }
                if (p == e)
                    return false;
                p++;
            } else {
                s = p;
                p = skip_token(p, e);
                if (p == s)
                    return false;
            }
            p = skip_ows(p, e);
        }
        ++*count;
        if (!plain_chunked)
            *other = true;
        *last_chunked = plain_chunked;
        if (p == e)
            return true;
        if (*p != ',')
            return false;
        p = skip_ows(p + 1, e);
        if (p == e)
            return false; /* trailing empty element */
    }
}

/*
 * Parse a Connection field value (#connection-option, tokens). Sets *close /
 * *keep when those options are present. Returns false on a non-token element.
 */
static bool parse_connection(struct str v, bool *close, bool *keep)
{
    const char *p = v.ptr, *e = v.ptr + v.len;
    while (p < e) {
        p = skip_ows(p, e);
        if (p < e && *p == ',') {
            p++;
            continue; /* empty element */
        }
        const char *s = p;
        p = skip_token(p, e);
        struct str tok = {s, (size_t)(p - s)};
        p = skip_ows(p, e);
        if (tok.len == 0 || (p < e && *p != ','))
            return false;
        if (IEQ(tok, "close"))
            *close = true;
        else if (IEQ(tok, "keep-alive"))
            *keep = true;
    }
    return true;
}

/* Interpret the framing and frequently used headers of a complete head. */
static int interpret_headers(struct http_request *req, const struct http_limits *lim,
                             const struct str *authority)
{
    size_t n_host = 0, n_cl = 0, n_ct = 0, n_auth = 0, n_te_fields = 0, n_codings = 0;
    bool te_other = false, te_bad = false, te_last_chunked = false, conn_close = false,
         conn_keep = false;
    bool conn_bad = false, expect_bad = false, expect_continue = false;
    struct str cl = STR_NULL;

    for (size_t i = 0; i < req->num_headers; i++) {
        const struct http_header *h = &req->headers[i];
        switch (h->name.len) {
        case 4:
            if (IEQ(h->name, "host")) {
                if (n_host++ == 0)
                    req->host = h->value;
            }
            break;
        case 6:
            if (IEQ(h->name, "expect")) {
                if (IEQ(h->value, "100-continue"))
                    expect_continue = true;
                else
                    expect_bad = true;
            }
            break;
        case 10:
            if (IEQ(h->name, "connection")) {
                if (!parse_connection(h->value, &conn_close, &conn_keep))
                    conn_bad = true;
            }
            break;
        case 12:
            if (IEQ(h->name, "content-type")) {
                if (n_ct++ == 0)
                    req->content_type = h->value;
            } else if (IEQ(h->name, "x-request-id")) {
                if (req->request_id.ptr == NULL)
                    req->request_id = h->value;
            }
            break;
        case 13:
            if (IEQ(h->name, "authorization")) {
                if (n_auth++ == 0)
                    req->authorization = h->value;
            }
            break;
        case 14:
            if (IEQ(h->name, "content-length")) {
                n_cl++;
                cl = h->value;
            }
            break;
        case 17:
            if (IEQ(h->name, "transfer-encoding")) {
                n_te_fields++;
                if (!parse_te(h->value, &n_codings, &te_other, &te_last_chunked))
                    te_bad = true;
            }
            break;
        default:
            break;
        }
    }

    /* Host (RFC 9112 3.2): exactly one in 1.1, at most one in 1.0. */
    if (n_host > 1 || (n_host == 0 && req->minor_version == 1))
        return 400;
    if (n_host == 1 && !host_valid(req->host))
        return 400;
    /* RFC 9112 3.3: for absolute-form the target's authority is the host. */
    if (authority->ptr)
        req->host = *authority;
    if (n_ct > 1 || n_auth > 1 || conn_bad)
        return 400;

    if (n_cl > 1)
        return 400; /* duplicates are rejected even when equal */
    if (n_cl == 1 && !parse_content_length(cl, &req->content_length))
        return 400;
    if (n_te_fields) {
        if (n_cl)
            return 400; /* CL + TE: request smuggling vector (RFC 9112 6.1) */
        if (req->minor_version == 0)
            return 400; /* RFC 9112 6.1: TE in 1.0 means faulty framing */
        if (te_bad)
            return 400;
        if (!te_last_chunked)
            return 400; /* chunked not final: the length is unknowable (RFC 9112 6.3) */
        if (te_other || n_codings != 1)
            return 501; /* chunked last, but another coding we do not implement */
        req->body_kind = HTTP_BODY_CHUNKED;
    } else if (n_cl) {
        req->body_kind = HTTP_BODY_LENGTH;
        if (req->content_length > lim->max_body)
            return 413;
    }

    if (expect_bad)
        return 417;
    req->expect_continue = expect_continue && req->minor_version == 1;
    if (req->minor_version == 1)
        req->keep_alive = !conn_close;
    else
        req->keep_alive = conn_keep && !conn_close;
    return 0;
}

int http_parse_request(const char *buf, size_t len, const struct http_limits *lim,
                       struct http_request *req, int *out_status)
{
    size_t scan = len < lim->max_header_bytes ? len : lim->max_header_bytes;
    const char *p, *end;
    struct str authority = STR_NULL;
    int st;

    req->method = HTTP_OTHER;
    req->method_str = STR_NULL;
    req->target = STR_NULL;
    req->path = STR_NULL;
    req->query = STR_NULL;
    req->minor_version = 1;
    req->num_headers = 0;
    req->body_kind = HTTP_BODY_NONE;
    req->content_length = 0;
    req->keep_alive = false;
    req->expect_continue = false;
    req->host = STR_NULL;
    req->content_type = STR_NULL;
    req->authorization = STR_NULL;
    req->request_id = STR_NULL;

    if (scan == 0)
        goto incomplete;
    p = buf;
    end = buf + scan;

    /* RFC 9112 2.2: ignore at least one empty line before the request-line; we ignore one. */
    if (*p == '\r') {
        if (end - p < 2)
            goto incomplete;
        if (p[1] != '\n')
            goto bad;
        p += 2;
    }

    /* method SP */
    const char *s = p;
    while (p < end && IS(*p, C_TCHAR))
        p++;
    if (p == end)
        goto incomplete;
    if (*p != ' ' || p == s)
        goto bad;
    req->method_str = (struct str){s, (size_t)(p - s)};
    req->method = http_method_from_str(req->method_str);
    p++;

    /* request-target SP */
    s = p;
    while (p < end && IS(*p, C_TARGET))
        p++;
    if (p == end)
        goto incomplete;
    if (*p != ' ' || p == s)
        goto bad;
    req->target = (struct str){s, (size_t)(p - s)};
    if (!split_target(req, &authority))
        goto bad;
    p++;

    /* HTTP-version CRLF, checked byte by byte so a bad prefix fails early. */
    {
        static const char tmpl[] = "HTTP/#.#\r\n";
        for (size_t i = 0; i < sizeof(tmpl) - 1; i++) {
            if (p + i == end)
                goto incomplete;
            char c = p[i];
            if (tmpl[i] == '#' ? (unsigned)(unsigned char)c - '0' > 9 : c != tmpl[i])
                goto bad;
        }
        if (p[5] != '1') {
            *out_status = 505;
            return -1;
        }
        req->minor_version = p[7] == '0' ? 0 : 1; /* 1.2 and up: as 1.1 */
        p += sizeof(tmpl) - 1;
    }

    /* field-line CRLF ... CRLF */
    for (;;) {
        if (p == end)
            goto incomplete;
        if (*p == '\r') {
            if (end - p < 2)
                goto incomplete;
            if (p[1] != '\n')
                goto bad;
            p += 2;
            break;
        }
        /* A line starting with SP/HTAB is obs-fold (or whitespace after the
         * request line, RFC 9112 2.2); both are rejected by the name check. */
        s = p;
        while (p < end && IS(*p, C_TCHAR))
            p++;
        if (p == end)
            goto incomplete;
        if (*p != ':' || p == s)
            goto bad;
        if (unlikely(req->num_headers == lim->max_headers)) {
            *out_status = 431;
            return -1;
        }
        struct http_header *h = &req->headers[req->num_headers];
        h->name = (struct str){s, (size_t)(p - s)};
        p++;
        while (p < end && IS_OWS(*p))
            p++;
        s = p;
        /* Fast path: 8 bytes at a time while none is a CTL (HTAB included) or DEL. */
        while (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            if (HAS_LESS(w, 0x20) || HAS_ZERO(w ^ (ONES * 0x7F)))
                break;
            p += 8;
        }
        while (p < end && IS(*p, C_VALUE))
            p++;
        if (p == end)
            goto incomplete;
        if (*p != '\r')
            goto bad; /* NUL, bare LF, other CTL or DEL in the value */
        if (end - p < 2)
            goto incomplete;
        if (p[1] != '\n')
            goto bad; /* bare CR */
        const char *ve = p;
        while (ve > s && IS_OWS(ve[-1]))
            ve--;
        h->value = (struct str){s, (size_t)(ve - s)};
        req->num_headers++;
        p += 2;
    }

    st = interpret_headers(req, lim, &authority);
    if (st) {
        *out_status = st;
        return -1;
    }
    if (unlikely(p - buf > INT_MAX)) { /* only with an absurd max_header_bytes */
        *out_status = 431;
        return -1;
    }
    return (int)(p - buf);

incomplete:
    if (len >= lim->max_header_bytes) {
        *out_status = 431;
        return -1;
    }
    return -2;
bad:
    *out_status = 400;
    return -1;
}

/* ---- chunked decoder ---------------------------------------------------- */

/* Zero is the initial state, so a zeroed struct http_chunked starts here. */
enum {
    CK_SIZE_START, /* first HEXDIG of a chunk-size */
    CK_SIZE,       /* more HEXDIG, ';' or CR */
    CK_EXT_START,  /* BWS, then the first byte of a chunk-ext-name after ';' */
    CK_EXT_NAME,   /* rest of the name (a token) */
    CK_EXT_EQ,     /* BWS after the name: '=', ';' or CR */
    CK_EXT_VAL0,   /* BWS after '=', then a token or a quoted-string */
    CK_EXT_TOKEN,  /* chunk-ext-val as a token */
    CK_EXT_QUOTED, /* inside a quoted-string */
    CK_EXT_QPAIR,  /* the byte after a backslash in a quoted-string */
    CK_EXT_END,    /* BWS after a value: ';' or CR */
    CK_SIZE_LF,    /* LF ending the chunk-size line */
    CK_DATA,       /* chunk_left data bytes */
    CK_DATA_CR,    /* CR after chunk data */
    CK_DATA_LF,    /* LF after chunk data */
    CK_TR_START,   /* start of a trailer field line or the final CRLF */
    CK_TR_NAME,    /* trailer field name */
    CK_TR_VALUE,   /* trailer field value, up to CR */
    CK_TR_LF,      /* LF ending a trailer field line */
    CK_END_LF,     /* LF of the final CRLF */
    CK_DONE,
    CK_ERR_400,
    CK_ERR_413,
    CK_ERR_431,
};

#define CHUNK_LINE_MAX 4096 /* chunk-size line incl. extensions and CRLF */

ssize_t http_chunked_decode(struct http_chunked *d, char *buf, size_t *len, uint64_t max_body,
                            size_t max_header_bytes, int *out_status)
{
    size_t n_in = *len;
    int err;

    switch (d->state) {
    case CK_DONE:
        *len = 0; /* everything passed after the end belongs to the next request */
        return (ssize_t)n_in;
    case CK_ERR_400:
        err = 400;
        goto fail;
    case CK_ERR_413:
        err = 413;
        goto fail;
    case CK_ERR_431:
        err = 431;
        goto fail;
    default:
        break;
    }
    if (n_in == 0)
        return -2;

    char *in = buf, *out = buf, *end = buf + n_in;
    while (in < end) {
        if (d->state == CK_DATA) {
            size_t n = (size_t)(end - in);
            if (n > d->chunk_left)
                n = (size_t)d->chunk_left;
            if (out != in)
                memmove(out, in, n);
            out += n;
            in += n;
            d->chunk_left -= n;
            if (d->chunk_left == 0)
                d->state = CK_DATA_CR;
            continue;
        }

        unsigned char c = (unsigned char)*in++;
        if (d->state <= CK_SIZE_LF && ++d->line_len > CHUNK_LINE_MAX)
            goto bad;
        if (d->state >= CK_TR_START && ++d->trailer_bytes > max_header_bytes)
            goto too_large;

        switch (d->state) {
        case CK_SIZE_START:
        case CK_SIZE:
            if (IS(c, C_HEX)) {
                if (d->chunk_left > (UINT64_MAX >> 4))
                    goto bad; /* overflow */
                unsigned v = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
                d->chunk_left = (d->chunk_left << 4) | v;
                d->state = CK_SIZE;
            } else if (c == ';' && d->state == CK_SIZE) {
                d->state = CK_EXT_START;
            } else if (c == '\r' && d->state == CK_SIZE) {
                d->state = CK_SIZE_LF;
            } else {
                goto bad; /* empty size, sign, space, "0x5", "5 ", bare LF */
            }
            break;
        /*
         * chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
         * chunk-ext-name = token, chunk-ext-val = token / quoted-string (RFC 9112
         * 7.1.1), checked exactly: anything else is a framing error, since
         * parsers that disagree on where an extension ends disagree on where
         * the chunk starts. BWS before the first ';' stays refused ("5 ;x").
         */
        case CK_EXT_START:
        case CK_EXT_VAL0:
            if (IS_OWS(c))
                break;
            if (d->state == CK_EXT_VAL0 && c == '"')
                d->state = CK_EXT_QUOTED;
            else if (IS(c, C_TCHAR))
                d->state = d->state == CK_EXT_START ? CK_EXT_NAME : CK_EXT_TOKEN;
            else
                goto bad;
            break;
        case CK_EXT_NAME:
        case CK_EXT_TOKEN:
            if (IS(c, C_TCHAR))
                break;
            FALLTHROUGH; /* the name or value ended */
        case CK_EXT_EQ:
        case CK_EXT_END:
            if (c == '\r')
                d->state = CK_SIZE_LF;
            else if (c == ';')
                d->state = CK_EXT_START;
            else if (c == '=' && (d->state == CK_EXT_NAME || d->state == CK_EXT_EQ))
                d->state = CK_EXT_VAL0;
            else if (IS_OWS(c))
                d->state =
                    d->state == CK_EXT_NAME || d->state == CK_EXT_EQ ? CK_EXT_EQ : CK_EXT_END;
            else
                goto bad;
            break;
        case CK_EXT_QUOTED:
            /* qdtext = HTAB / SP / 0x21 / 0x23-0x5B / 0x5D-0x7E / obs-text */
            if (c == '"')
                d->state = CK_EXT_END;
            else if (c == '\\')
                d->state = CK_EXT_QPAIR;
            else if (!IS(c, C_VALUE))
                goto bad;
            break;
        case CK_EXT_QPAIR: /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
            if (!IS(c, C_VALUE))
                goto bad;
            d->state = CK_EXT_QUOTED;
            break;
        case CK_SIZE_LF:
            if (c != '\n')
                goto bad;
            d->line_len = 0;
            if (d->chunk_left == 0) {
                d->state = CK_TR_START;
                d->trailer_bytes = 0;
            } else {
                if (d->chunk_left > max_body - d->total)
                    goto too_big;
                d->total += d->chunk_left;
                d->state = CK_DATA;
            }
            break;
        case CK_DATA_CR:
            if (c != '\r')
                goto bad; /* data longer than the chunk size */
            d->state = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            if (c != '\n')
                goto bad;
            d->state = CK_SIZE_START;
            break;
        case CK_TR_START:
            if (c == '\r')
                d->state = CK_END_LF;
            else if (IS(c, C_TCHAR))
                d->state = CK_TR_NAME;
            else
                goto bad; /* obs-fold, empty name, bare LF */
            break;
        case CK_TR_NAME:
            if (c == ':')
                d->state = CK_TR_VALUE;
            else if (!IS(c, C_TCHAR))
                goto bad;
            break;
        case CK_TR_VALUE:
            if (c == '\r')
                d->state = CK_TR_LF;
            else if (!IS(c, C_VALUE))
                goto bad;
            break;
        case CK_TR_LF:
            if (c != '\n')
                goto bad;
            d->state = CK_TR_START;
            break;
        case CK_END_LF: {
            if (c != '\n')
                goto bad;
            d->state = CK_DONE;
            size_t rest = (size_t)(end - in);
            if (rest && out != in)
                memmove(out, in, rest);
            *len = (size_t)(out - buf);
            return (ssize_t)rest;
        }
        default:
            goto bad;
        }
    }
    *len = (size_t)(out - buf);
    return -2;

too_big:
    d->state = CK_ERR_413;
    *len = (size_t)(out - buf);
    *out_status = 413;
    return -1;
too_large:
    d->state = CK_ERR_431;
    *len = (size_t)(out - buf);
    *out_status = 431;
    return -1;
bad:
    d->state = CK_ERR_400;
    *len = (size_t)(out - buf);
    *out_status = 400;
    return -1;
fail:
    *len = 0;
    *out_status = err;
    return -1;
}
