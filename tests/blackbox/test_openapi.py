"""GET /openapi.json and the document behind it (api/openapi.json).

- the server serves the repository's file, byte for byte, without a token;
- the document and the route table of src/app/routes.c name the same
  method + path pairs, with the same public routes, and OPTIONS agrees;
- the document is well formed: every $ref resolves, every schema is a valid
  JSON Schema 2020-12, path parameters are declared, info.version is the
  binary's;
- at the end of the run (harness.final_check), every response the suite read
  through harness.request() is checked against the document: its status is
  listed for the route, its content type and body match that status's schema,
  its required headers are there and match theirs. A document with a mistake
  fails (mutated_document_fails).

The schemas are checked with python3-jsonschema (Draft 2020-12), after the
$refs are inlined, so no resolver API (which changed between versions) is used.
"""

import copy
import gzip
import json
import os
import re
import subprocess

from harness import REPO, RESPONSES, check, eq, fail, final_check, test, uniq
import harness

DOC_PATH = os.path.join(REPO, "api", "openapi.json")
ROUTES_C = os.path.join(REPO, "src", "app", "routes.c")
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def load_doc():
    with open(DOC_PATH, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def jsonschema_mod():
    try:
        import jsonschema  # noqa: PLC0415 - only these tests need it
    except ImportError:
        fail("python3-jsonschema is not installed (scripts/deps.sh test installs it)")
    return jsonschema


def route_table():
    """[(METHOD, pattern, public)] parsed from the route table in src/app/routes.c."""
    with open(ROUTES_C) as f:
        src = f.read()
    m = re.search(r"k_routes\[\]\s*=\s*\{(.*?)\n\};", src, re.S)
    check(m, "route table not found in src/app/routes.c")
    rows = re.findall(r"\{\s*HTTP_([A-Z]+)\s*,\s*\"([^\"]+)\"\s*,\s*(\w+)\s*,\s*([^,]+),", m.group(1))
    check(len(rows) >= 10, "routes parsed from routes.c: %r" % rows)
    return [(meth, pat, "ROUTE_PUBLIC" in flags) for meth, pat, _h, flags in rows]


# ------------------------------------------------------------------ $ref handling

def resolve(doc, ref):
    check(ref.startswith("#/"), "only local $refs are used: %r" % ref)
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        check(isinstance(node, dict) and part in node, "$ref %s does not resolve" % ref)
        node = node[part]
    return node


def inline(doc, node, active=()):
    """node with every $ref replaced by its target ($ref with siblings becomes
    allOf, as 2020-12 reads it). A cycle is an error (the document has none)."""
    if isinstance(node, list):
        return [inline(doc, x, active) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node and isinstance(node["$ref"], str):
        ref = node["$ref"]
        check(ref not in active, "$ref cycle through %s" % ref)
        target = inline(doc, resolve(doc, ref), active + (ref,))
        rest = {k: inline(doc, v, active) for k, v in node.items() if k != "$ref"}
        return {"allOf": [target], **rest} if rest else target
    return {k: inline(doc, v, active) for k, v in node.items()}


def deref(doc, node):
    """A response/parameter/header object that may be a $ref, followed."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        node = resolve(doc, node["$ref"])
        seen += 1
        check(seen < 10, "$ref chain too long")
    return node


# ------------------------------------------------------------------ path matching

def decode_segment(seg):
    """Percent-decode one path segment like src/http/router.c: None when the
    segment can match nothing (a bad escape, %00, a decoded '/')."""
    out = bytearray()
    i = 0
    raw = seg.encode("latin-1", "replace")
    while i < len(raw):
        if raw[i:i + 1] == b"%":
            h = raw[i + 1:i + 3]
            if len(h) != 2 or not re.match(rb"^[0-9A-Fa-f]{2}$", h):
                return None
            b = int(h, 16)
            if b in (0, 0x2F):
                return None
            out.append(b)
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def template_matches(template, path):
    tsegs = template.split("/")[1:]
    if path == "/":
        psegs = []
    elif not path.startswith("/"):
        return False
    else:
        psegs = path.split("/")[1:]
    if len(tsegs) != len(psegs):
        return False
    for t, p in zip(tsegs, psegs):
        d = decode_segment(p)
        if d is None:
            return False
        if t.startswith("{") and t.endswith("}"):
            if not d:
                return False
        elif d != t.encode():
            return False
    return True


def body_bytes(rec):
    """The recorded body, gunzipped when it came with Content-Encoding: gzip."""
    enc = [v for k, v in rec["headers"] if k.lower() == "content-encoding"]
    if enc and enc[0].strip().lower() == "gzip":
        return gzip.decompress(rec["body"])
    return rec["body"]


class Checker:
    """Validates recorded responses against one (maybe mutated) document."""

    def __init__(self, doc):
        self.doc = doc
        self.js = jsonschema_mod()
        self.cls = self.js.Draft202012Validator
        self.validators = {}
        self.errors = {}  # message -> count
        self.checked = 0
        self.outside = 0  # responses of no documented operation (404 unknown path, 405, OPTIONS)
        self.seen = set()  # (METHOD, template, status)
        # literal templates first, as routes.c orders its table (the router takes the first match)
        self.templates = sorted(doc.get("paths", {}),
                                key=lambda t: sum(1 for s in t.split("/") if s.startswith("{")))

    def error(self, msg):
        self.errors[msg] = self.errors.get(msg, 0) + 1

    def validator(self, key, schema):
        v = self.validators.get(key)
        if v is None:
            v = self.cls(inline(self.doc, schema))
            self.validators[key] = v
        return v

    def schema_errors(self, key, schema, value):
        v = self.validator(key, schema)
        return sorted(v.iter_errors(value), key=lambda e: list(e.absolute_path))

    def operation(self, method, path):
        """(template, op) the server routes method+path to, (template, None) for a
        known path without that method, or (None, None)."""
        m = "get" if method == "HEAD" else method.lower()
        path_only = path.split("?", 1)[0]
        first = None
        for t in self.templates:
            if template_matches(t, path_only):
                first = first or t
                op = self.doc["paths"][t].get(m)
                if op is not None:
                    return t, op
        return first, None

    def check_error_shape(self, rec, where):
        if rec["status"] < 400 or rec["method"] == "HEAD":
            return
        schema = self.doc.get("components", {}).get("schemas", {}).get("Error")
        if schema is None:
            self.error("%s: no components.schemas.Error to check it against" % where)
            return
        try:
            body = json.loads(body_bytes(rec).decode("utf-8"))
        except (ValueError, OSError, EOFError):
            self.error("%s: error body is not JSON" % where)
            return
        for e in self.schema_errors(("#Error",), schema, body)[:1]:
            self.error("%s: body does not match Error: %s" % (where, e.message[:200]))

    def check(self, rec):
        self.checked += 1
        method, status = rec["method"], rec["status"]
        template, op = self.operation(method, rec["path"])
        if op is None:
            self.outside += 1
            where = "%s %s %d (no operation)" % (method, template or rec["path"].split("?")[0][:60], status)
            self.check_error_shape(rec, where)
            return
        where = "%s %s %d" % (method, template, status)
        self.seen.add((method if method != "HEAD" else "GET", template, status))
        resp = op.get("responses", {}).get(str(status))
        if resp is None:
            self.error("%s: status not documented for the operation" % where)
            return
        resp = deref(self.doc, resp)
        headers = {}
        for k, v in rec["headers"]:
            headers.setdefault(k.lower(), v)
        for hname, h in resp.get("headers", {}).items():
            h = deref(self.doc, h)
            val = headers.get(hname.lower())
            if val is None:
                if h.get("required"):
                    self.error("%s: required header %s missing" % (where, hname))
                continue
            if "schema" in h:
                for e in self.schema_errors((where, "header", hname), h["schema"], val)[:1]:
                    self.error("%s: header %s %r: %s" % (where, hname, val[:80], e.message[:200]))
        content = resp.get("content") or {}
        ctype = rec["content_type"]
        if not content:
            if ctype is not None or rec["body"]:
                self.error("%s: documented without content, got %r with %d bytes" % (where, ctype, len(rec["body"])))
            return
        if ctype is None:
            self.error("%s: no Content-Type; documented %s" % (where, sorted(content)))
            return
        bare = ctype.split(";")[0].strip().lower()
        media = content.get(ctype) or next(
            (m for k, m in content.items() if ";" not in k and k.strip().lower() == bare), None)
        if media is None:
            self.error("%s: Content-Type %r not documented (%s)" % (where, ctype, sorted(content)))
            return
        if method == "HEAD" or "schema" not in media:
            return
        try:
            text = body_bytes(rec).decode("utf-8", "replace")
        except (OSError, EOFError) as e:
            self.error("%s: Content-Encoding gzip, but: %s" % (where, e))
            return
        if bare == "application/json":
            try:
                value = json.loads(text)
            except ValueError:
                self.error("%s: body is not JSON: %r" % (where, text[:100]))
                return
        else:
            value = text
        errs = self.schema_errors((where, ctype), media["schema"], value)
        for e in errs[:1]:
            at = "/".join(str(p) for p in e.absolute_path)
            self.error("%s: body at /%s: %s" % (where, at, e.message[:240]))

    def run(self, records):
        for rec in records:
            self.check(rec)
        return self

    def report(self, limit=12):
        items = sorted(self.errors.items(), key=lambda kv: -kv[1])
        return "; ".join("%s (x%d)" % (m, n) for m, n in items[:limit])


def documented_operations(doc):
    for t, item in doc.get("paths", {}).items():
        for m in METHODS:
            if m in item:
                yield m.upper(), t, item[m]


# ------------------------------------------------------------------ tests

@test()
def served_document_is_the_file(ctx):
    r = ctx.req("GET", "/openapi.json")
    eq(r.status, 200, "GET /openapi.json")
    eq((r.header("Content-Type") or "").split(";")[0].strip(), "application/json", "Content-Type")
    with open(DOC_PATH, "rb") as f:
        want = f.read()
    check(r.body == want, "served document (%d bytes) differs from api/openapi.json (%d bytes): rebuild?"
          % (len(r.body), len(want)))
    doc = r.json()
    check(str(doc.get("openapi", "")).startswith("3.1."), "openapi version %r" % doc.get("openapi"))
    h = ctx.req("HEAD", "/openapi.json")
    eq(h.status, 200, "HEAD /openapi.json")
    eq(h.header("Content-Length"), str(len(want)), "HEAD Content-Length")


@test(server="auth")
def document_needs_no_token(ctx):
    eq(ctx.req("GET", "/openapi.json").status, 200, "GET /openapi.json without a token")
    eq(ctx.req("GET", "/users").status, 401, "GET /users without a token (the server requires one)")
    r = ctx.req("GET", "/users", headers=[("Authorization", "Bearer " + harness.TOKEN)])
    eq(r.status, 200, "GET /users with the token")


@test(server=None)
def routes_match_table(ctx):
    doc = load_doc()
    table = route_table()
    routed = {(m, p) for m, p, _ in table}
    documented = {(m, t) for m, t, _ in documented_operations(doc)}
    eq(sorted(routed - documented), [], "routes of src/app/routes.c missing from api/openapi.json")
    eq(sorted(documented - routed), [], "operations of api/openapi.json that src/app/routes.c does not route")
    check(len(routed) == len(table), "routes.c lists a method + path twice")
    top = doc.get("security")
    check(top == [{"bearerAuth": []}], "top-level security is the bearer scheme: %r" % top)
    check(doc["components"]["securitySchemes"]["bearerAuth"].get("scheme") == "bearer", "bearerAuth is http bearer")
    for m, p, public in table:
        op = doc["paths"][p][m.lower()]
        sec = op.get("security", top)
        if public:
            eq(sec, [], "%s %s is ROUTE_PUBLIC: security" % (m, p))
            check("401" not in op["responses"], "%s %s is public but documents 401" % (m, p))
        else:
            eq(sec, [{"bearerAuth": []}], "%s %s needs the token: security" % (m, p))
            check("401" in op["responses"], "%s %s needs the token but does not document 401" % (m, p))


@test(server="small")  # not "default": see mutated_document_fails
def options_allow_matches_document(ctx):
    doc = load_doc()
    for t in doc["paths"]:
        path = re.sub(r"\{[^}]+\}", "1", t)
        r = ctx.req("OPTIONS", path)
        eq(r.status, 204, "OPTIONS %s" % path)
        allow = {a.strip() for a in (r.header("Allow") or "").split(",") if a.strip()}
        # the router answers with every route whose pattern matches the path
        # (/orders/process: its POST and the GET of /orders/{id})
        want = {m.upper() for t2, item2 in doc["paths"].items() if template_matches(t2, path)
                for m in METHODS if m in item2} | {"OPTIONS"}
        if "GET" in want:
            want.add("HEAD")
        eq(sorted(allow), sorted(want), "Allow of %s against the document's methods" % path)


@test(server=None)
def document_is_well_formed(ctx):
    js = jsonschema_mod()
    doc = load_doc()
    check(re.match(r"^3\.1\.\d+$", doc.get("openapi", "")), "openapi: %r" % doc.get("openapi"))
    for k in ("title", "version"):
        check(doc.get("info", {}).get(k), "info.%s missing" % k)
    p = subprocess.run([ctx.binary, "--version"], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    ver = p.stdout.decode().split()[-1] if p.stdout.split() else ""
    eq(doc["info"]["version"], ver, "info.version against `brisk --version`")
    inline(doc, doc)  # every $ref resolves, no cycles
    for name, schema in doc["components"]["schemas"].items():
        try:
            js.Draft202012Validator.check_schema(inline(doc, schema))
        except js.exceptions.SchemaError as e:
            fail("components.schemas.%s is not a valid JSON Schema: %s" % (name, e.message))
    ids = set()
    for m, t, op in documented_operations(doc):
        where = "%s %s" % (m, t)
        check(op.get("operationId") and op["operationId"] not in ids, "%s: operationId missing or repeated" % where)
        ids.add(op["operationId"])
        check(op.get("responses"), "%s: no responses" % where)
        for status, resp in op["responses"].items():
            check(re.match(r"^[1-5][0-9][0-9]$", status), "%s: response key %r" % (where, status))
            resp = deref(doc, resp)
            check(resp.get("description"), "%s %s: no description" % (where, status))
            check("X-Request-Id" in resp.get("headers", {}), "%s %s: X-Request-Id header not documented" % (where, status))
            if status.startswith(("4", "5")):
                check(list(resp.get("content", {})) == ["application/json"],
                      "%s %s: an error is application/json" % (where, status))
        params = [deref(doc, x) for x in doc["paths"][t].get("parameters", []) + op.get("parameters", [])]
        for name in re.findall(r"\{([^}]+)\}", t):
            check(any(x.get("in") == "path" and x.get("name") == name and x.get("required") is True for x in params),
                  "%s: path parameter %s not declared (required)" % (where, name))
        for x in params:
            js.Draft202012Validator.check_schema(inline(doc, x.get("schema", {})))
        if m in ("POST", "PATCH"):
            rb = op.get("requestBody", {})
            check("application/json" in rb.get("content", {}), "%s: no application/json request body" % where)
            check("415" in op["responses"], "%s takes JSON but does not document 415" % where)
        # examples in the document obey their own schemas
        for status, resp in op["responses"].items():
            for ctype, media in deref(doc, resp).get("content", {}).items():
                if "example" in media and "schema" in media:
                    errs = list(js.Draft202012Validator(inline(doc, media["schema"])).iter_errors(media["example"]))
                    check(not errs, "%s %s example: %s" % (where, status, errs[0].message if errs else ""))


def _sample(ctx):
    """A few real responses of the server, recorded the way the harness records."""
    recs = []

    def keep(method, path, body=None, headers=None):
        r = ctx.req(method, path, body, headers)
        ctype = r.header("Content-Type")
        recs.append({"method": method, "path": path, "status": r.status, "content_type": ctype,
                     "headers": list(r.headers), "body": r.body})
        return r

    u = keep("POST", "/users", {"name": "Grace Hopper", "email": "%s@example.com" % uniq("oa")}).json()
    keep("GET", "/users/%d" % u["id"])
    keep("GET", "/users?limit=2")
    keep("GET", "/users/999999999")
    o = keep("POST", "/orders", {"user_id": u["id"], "items": [{"sku": "A-1", "quantity": 3, "unit_price_cents": 5000}]})
    keep("GET", "/orders/%d" % o.json()["id"])
    keep("GET", "/users/%d/orders" % u["id"])
    keep("POST", "/orders/process", {"orders": [{"id": "x", "user_id": 1, "items": [{"sku": "B", "quantity": 1, "unit_price_cents": 1}]}]})
    keep("DELETE", "/users/%d" % u["id"])  # 409: it has an order
    v = keep("POST", "/users", {"name": "Temp", "email": "%s@example.com" % uniq("oa")}).json()
    keep("DELETE", "/users/%d" % v["id"])  # 204
    keep("GET", "/health")
    keep("GET", "/nope")
    return recs


# Not on the "default" server: ops.metrics_counters_increase there expects no
# route label under /users/ but /users/{id} yet (/users/{id}/orders is one).
@test(server="small")
def mutated_document_fails(ctx):
    recs = _sample(ctx)
    doc = load_doc()
    good = Checker(doc).run(recs)
    eq(good.report(), "", "the real document against real responses")
    eq(good.checked, len(recs), "responses checked")

    def errors_with(mutate, what):
        d = copy.deepcopy(doc)
        mutate(d)
        c = Checker(d).run(recs)
        check(c.errors, "a document with %s still validates every response" % what)
        return c.report()

    S = lambda d: d["components"]["schemas"]  # noqa: E731

    def drop_email(d):
        del S(d)["User"]["properties"]["email"]
        S(d)["User"]["required"].remove("email")
    rep = errors_with(drop_email, "no email in User (additionalProperties false)")
    check("POST /users 201" in rep and "email" in rep, "the error names the route and the member: %s" % rep)

    def created_is_200(d):
        ops = d["paths"]["/users"]["post"]["responses"]
        ops["200"] = ops.pop("201")
    rep = errors_with(created_is_200, "201 of POST /users documented as 200")
    check("POST /users 201: status not documented" in rep, rep)

    errors_with(lambda d: S(d)["Order"]["properties"]["status"].update(enum=["open"]), "another order status enum")
    errors_with(lambda d: S(d)["Sku"].update(maxLength=0), "a sku of at most 0 characters")
    errors_with(lambda d: S(d)["Error"]["properties"].update(error={"type": "integer"}), "an integer error")
    errors_with(lambda d: d["paths"]["/health"]["get"]["responses"]["200"]["content"].update(
        {"text/plain; charset=utf-8": {"schema": {"const": "fine"}}}), "/health says 'fine'")
    errors_with(lambda d: d["paths"]["/users/{id}"]["delete"]["responses"]["204"].update(
        content={"application/json": {"schema": {"type": "object"}}}), "a 204 with a body")
    errors_with(lambda d: d["components"]["headers"]["X-Request-Id"]["schema"].update(maxLength=2),
                "an X-Request-Id of at most 2 characters")
    errors_with(lambda d: d["paths"]["/orders"]["post"]["responses"]["201"]["headers"]["Location"]["schema"].update(
        pattern="^/users/"), "a Location under /users for an order")
    errors_with(lambda d: d["components"]["schemas"]["BatchResult"]["properties"]["receipt"].update(
        {"$ref": "#/components/schemas/Cents"}), "an integer receipt")


@final_check("openapi.every_response_matches_document")
def every_response_matches_document():
    """Every response read through harness.request() in this run, against api/openapi.json."""
    doc = load_doc()
    with harness._rec_lock:
        recs = list(RESPONSES)
    c = Checker(doc).run(recs)
    missing = []
    if not harness.FILTERED:
        # the whole suite ran: it must have seen every operation succeed
        for m, t, op in documented_operations(doc):
            for status in op["responses"]:
                if status.startswith("2") and (m, t, int(status)) not in c.seen:
                    missing.append("%s %s %s" % (m, t, status))
    print("openapi: %d responses checked against api/openapi.json (%d outside any operation), "
          "%d operation+status pairs seen, %d distinct errors" % (c.checked, c.outside, len(c.seen), len(c.errors)),
          flush=True)
    check(not c.errors, "responses that break the document: %s" % c.report())
    check(not missing, "documented successes no test received: %s" % ", ".join(missing))
