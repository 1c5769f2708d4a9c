#!/usr/bin/perl
# The Lua API end to end: every req and res call, json, log, keystone.*,
# middleware order, short-circuit and next() misuse, groups, 405 with
# Allow, proxy routes (upstream, strip_prefix, headers, timeout), set_path
# and header edits reaching the upstream, response hooks, large output
# streamed chunked, HEAD, script errors as 500 with the request id, and
# http.request against t/backend with its deadline.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');
my $other = $t->backend(name => 'other');
my $app_addr = $app->addr;
my $dead = $t->free_port;

$t->write_file('scripts/api.lua', <<"LUA");
local APP = "$app_addr"
local DEAD = "127.0.0.1:$dead"

router:add_route("GET", "/hello", {handler = function(req, res) res:write("Hello World") end})

router:add_route("*", "/echo/{a}/*", {handler = function(req, res)
    res:json({
        method = req:method(), path = req:path(), host = req:host(),
        query = req:query(), x = req:query("x"), nox = req:query("nope"),
        query_string = req:query_string(),
        params = req:params(), a = req:param("a"), star = req:param("*"), none = req:param("zz"),
        headers = req:headers(), test = req:header("x-TEST"), missing = req:header("X-None"),
        cookie = req:header("Cookie"),
        client_ip = req:client_ip(), request_id = req:request_id(), tenant = req:tenant(),
    })
end})

router:add_route("POST", "/body", {handler = function(req, res)
    local b = req:body()
    local t = json.decode(b)
    t.len = #b
    t.again = req:body() == b
    res:status(201)
    res:header("X-Len", tostring(#b))
    res:json(t)
end})

router:add_route("GET", "/stream", {handler = function(req, res)
    for i = 1, tonumber(req:query("n")) do res:write(string.rep("x", 9999) .. "\\n") end
end})
router:add_route("GET", "/redirect", {handler = function(req, res) res:redirect("/hello", 301) end})
router:add_route("GET", "/found", {handler = function(req, res) res:redirect("https://example.com/") end})
router:add_route("GET", "/status", {handler = function(req, res)
    res:status(418)
    res:header("X-A", "1") res:header("X-A", "2")
    res:header("X-B", "b") res:header("X-B", nil)
    res:header("Server", "teapot/1") res:header("date", "Thu, 01 Jan 2026 00:00:00 GMT")
    res:write("tea") res:write("pot")
end})
router:add_route("GET", "/empty", {handler = function(req, res) res:status(204) res:write("ignored") end})
router:add_route("GET", "/reset", {handler = function(req, res)
    res:status(205)
    res:write(string.rep("x", tonumber(req:query("n")) or 3))
end})
router:add_route("GET", "/nothing", {handler = function(req, res) end})
router:add_route("GET", "/error", {handler = function(req, res) local x = nil; return x.field end})
router:add_route("GET", "/error-table", {handler = function(req, res) error({code = 1}) end})
router:add_route("GET", "/bad-header", {handler = function(req, res) res:header("Content-Length", "5") end})
router:add_route("GET", "/interim", {handler = function(req, res) res:status(100) res:write("x") end})
router:add_route("GET", "/header-limits", {handler = function(req, res)
    local function refused(f, ...) local ok, e = pcall(f, res, ...) return not ok and e or false end
    local big = {}
    for i = 1, 16 do big[i] = refused(res.header, "X-Big-" .. i, string.rep("b", 1000)) end
    res:json({s100 = refused(res.status, 100), s199 = refused(res.status, 199),
              id = refused(res.header, "X-Request-ID", "mine"), via = refused(res.header, "Via", "1.1 hidden"),
              del = refused(res.header, "X-Del", "a\\127b"), big = big[16], big15 = big[15]})
end})
router:add_route("GET", "/late-status", {handler = function(req, res)
    res:write(string.rep("y", 70000))
    res:status(500)
end})
router:add_route("GET", "/misc", {handler = function(req, res)
    log("warn", "misc handler", req:request_id())
    print("printed", 42)
    log("info", "two\\nlines, a NUL \\0 here, an ESC \\27[31m there")
    res:json({now = keystone.now(), time = keystone.time(), year = keystone.date("!%Y", 0),
              ok = pcall(keystone.env, "HOME") == false, version = keystone.version})
end})
router:add_route("PUT", "/only-put", {handler = function(req, res) res:write("put") end})
router:add_route("DELETE", "/only-put", {handler = function(req, res) res:write("delete") end})

-- proxy routes
router:add_route("GET", "/up/*", {upstream = "app", strip_prefix = true,
                                  headers = {["X-Route"] = "up"}, timeout = "300ms"})
router:add_route("GET", "/other/{x}", {upstream = "other"})

-- middleware: global, group, route; order and short-circuit
router:use(function(req, res, next)
    req:set_header("X-Order", "g")
    res:header("X-Global", "g")
    next()
end)
router:middleware("one", function(req, res, next)
    req:set_header("X-Order", req:header("X-Order") .. "1")
    next()
    res:header("X-After", "one-after")
end)
router:middleware("two", function(req, res, next)
    req:set_header("X-Order", req:header("X-Order") .. "2")
    next()
end)
router:middleware("many-edits", function(req, res, next)
    -- 63 here and the global middleware's X-Order: the most a request may have
    for i = 1, 63 do req:set_header("X-E" .. i, tostring(i)) end
    res:header("X-Edit-65", select(2, pcall(req.set_header, req, "X-E64", "x")))
    next()
end)
router:create_group("/edits", {middleware = {"many-edits"}})
    :add_route("GET", "/*", {upstream = "app", headers = {["X-Route-H"] = "kept"}})
router:middleware("deny", function(req, res, next)
    if req:header("X-Let-In") ~= "yes" then
        res:status(403)
        res:write("denied by middleware")
        return
    end
    next()
end)
local mw = router:create_group("/mw", {middleware = {"one"}})
mw:add_route("GET", "/chain", {middleware = {"two"}, handler = function(req, res)
    res:write(req:header("X-Order"))
end})
mw:add_route("GET", "/proxy", {middleware = {"two"}, upstream = "app"})
local guarded = router:create_group("/guarded", {middleware = {"deny"}})
guarded:add_route("GET", "/x", {handler = function(req, res) res:write("inside") end})

router:middleware("rewrite", function(req, res, next)
    req:set_path("/rewritten" .. req:path())
    req:del_header("X-Secret")
    req:set_header("Host", "rewritten.example")
    res:header("X-From-Middleware", "yes")
    next()
end)
router:create_group("/rw", {middleware = {"rewrite"}}):add_route("GET", "/*", {upstream = "app"})

router:middleware("twice", function(req, res, next) next() next() end)
router:create_group("/twice", {middleware = {"twice"}}):add_route("GET", "/x", {handler = function(req, res) res:write("x") end})
router:middleware("write-then-next", function(req, res, next) res:write("partial") next() end)
router:create_group("/wn", {middleware = {"write-then-next"}}):add_route("GET", "/x", {handler = function(req, res) res:write("x") end})
router:middleware("argcheck", function(req, res, next)
    local req_ok, req_err = pcall(req.set_header, req, "X\\0Y", "v")
    local res_ok, res_err = pcall(res.header, res, "X\\0Y", "v")
    local class_ok, class_err = pcall(res.header, req, "X-A", "v")
    local _, del_err = pcall(req.set_header, req, "X-A", "a\\127b")
    local _, up_err = pcall(req.set_header, req, "Upgrade", "h2c")
    local _, conn_err = pcall(req.del_header, req, "connection")
    local _, ka_err = pcall(res.header, res, "Keep-Alive", "timeout=5")
    res:json({req_ok = req_ok, req_err = req_err, res_ok = res_ok, res_err = res_err,
              class_ok = class_ok, class_err = class_err, del_err = del_err,
              up_err = up_err, conn_err = conn_err, ka_err = ka_err})
end)
-- X-Request-ID (tracing) and Via (loop detection) of the request sent
-- upstream are keystoned's, like the framing fields
router:middleware("forge", function(req, res, next)
    local errs = {}
    for _, f in ipairs({
        function() req:set_header("X-Request-ID", "forged") end,
        function() req:set_header("via", "1.1 forged") end,
        function() req:del_header("Via") end,
        function() req:del_header("x-request-id") end,
    }) do
        local ok, e = pcall(f)
        errs[#errs + 1] = ok and "accepted" or e
    end
    res:header("X-Edit-Errors", table.concat(errs, " | "))
    next()
end)
router:create_group("/forge", {middleware = {"forge"}}):add_route("GET", "/*", {upstream = "app"})
router:create_group("/argcheck", {middleware = {"argcheck"}}):add_route("GET", "/x", {handler = function(req, res) res:write("x") end})
router:add_route("GET", "/set-path-in-handler", {handler = function(req, res) req:set_path("/x") end})
-- a middleware that catches the rest of the chain's error goes on as middleware
router:middleware("catch-next", function(req, res, next)
    local ok, err = pcall(next)
    local again = select(2, pcall(next))
    if req:path() == "/catch/fail-after" then error("the middleware broke after") end
    res:json({ok = ok, err = type(err) == "table" and err.code or err, again = again})
end)
local catching = router:create_group("/catch", {middleware = {"catch-next"}})
catching:add_route("GET", "/x", {handler = function(req, res) error("handler broke") end})
catching:add_route("GET", "/table", {handler = function(req, res) error({code = 7}) end})
catching:add_route("GET", "/fail-after", {handler = function(req, res) error("handler broke") end})
router:middleware("guard-fails", function(req, res, next) error("the guard refused") end)
router:create_group("/catch2", {middleware = {"catch-next", "guard-fails"}})
    :add_route("GET", "/x", {handler = function(req, res) res:header("X-Bypassed", "yes") end})

-- response hook on every proxied response
router:on_response(function(req, res)
    res:header("X-Hook", "status=" .. res:get_status() .. " name=" .. tostring(res:get_header("x-backend")))
    if req:path() == "/up/teapot" then res:status(299) end
    if req:path() == "/up/to-200" then res:status(200) end
    if req:path() == "/up/to-205" then res:status(205) end
    if req:path() == "/up/hook-error" then error("the hook broke") end
    if req:path() == "/up/cookies" then
        res:header("Set-Cookie", {"s=1", "t=2"})
        res:header("X-Seen", res:get_header("Set-Cookie"))
        res:header("X-Backend", {})
    end
end)

-- several lines of one header: a list of values
router:add_route("GET", "/cookies", {handler = function(req, res)
    res:header("Set-Cookie", "old=1")
    res:header("Set-Cookie", {"a=1; Path=/", "b=2"})
    res:header("X-Gone", "x")
    res:header("X-Gone", {})
    local ok, err = pcall(res.header, res, "X-Bad", {"fine", {}})
    res:write(tostring(ok) .. " " .. err)
end})
router:middleware("cookies", function(req, res, next)
    res:header("Set-Cookie", {"m=1", "n=2"})
    next()
end)
router:create_group("/mwc", {middleware = {"cookies"}}):add_route("GET", "/*", {upstream = "app"})

-- http.request
router:add_route("GET", "/fetch", {handler = function(req, res)
    local r, err = http.request{method = "POST", url = "http://" .. APP .. "/fetched?x=1",
                                headers = {["X-From"] = "lua"}, body = "payload", timeout = "2s"}
    if not r then res:status(502) res:write(err) return end
    local seen = json.decode(r.body)
    res:json({status = r.status, ctype = r.headers["content-type"], method = seen.method,
              target = seen.target, body = seen.body, name = seen.name})
end})
router:add_route("GET", "/fetch-slow", {handler = function(req, res)
    local t0 = keystone.now()
    local r, err = http.request{url = "http://" .. APP .. "/slow?delay=3000", timeout = "300ms"}
    res:json({ok = r ~= nil, err = err, took = keystone.now() - t0})
end})
router:add_route("GET", "/fetch-dead", {handler = function(req, res)
    local r, err = http.request{url = "http://" .. DEAD .. "/"}
    res:json({ok = r ~= nil, err = err})
end})
router:add_route("GET", "/fetch-status", {handler = function(req, res)
    local r = http.request{url = "http://" .. APP .. "/s?status=404&header=X-Up%3Ayes", method = "GET"}
    res:json({status = r.status, up = r.headers["x-up"]})
end})
router:add_route("GET", "/fetch-trailers", {handler = function(req, res)
    local r = http.request{url = "http://" .. APP .. "/t?chunked=1&trailer=1&size=10"}
    local ok, err = pcall(http.request, {url = "http://" .. APP .. "/", method = "POST",
                                         headers = {["Content-Length"] = "3"}, body = "abcdef"})
    local _, up_err = pcall(http.request, {url = "http://" .. APP .. "/", headers = {Upgrade = "websocket"}})
    local _, name_err = pcall(http.request, {url = "http://" .. APP .. "/", headers = {["a(b"] = "1"}})
    res:json({body = r.body, trailer = r.headers["x-trailer"] or false, te = r.headers["transfer-encoding"],
              cl_ok = ok, cl_err = err, up_err = up_err, name_err = name_err})
end})
-- interim 1xx answers before the final one: skipped
local function pct(s) return (s:gsub("[^%w]", function(c) return string.format("%%%02X", c:byte()) end)) end
router:add_route("GET", "/fetch-interim", {handler = function(req, res)
    local out = {}
    local hints = "HTTP/1.1 103 Early Hints\\r\\nLink: </style.css>; rel=preload\\r\\n\\r\\n" ..
                  "HTTP/1.1 100 Continue\\r\\nX-Interim: yes\\r\\n\\r\\n"
    local final = "HTTP/1.1 201 Created\\r\\nX-Final: yes\\r\\nContent-Length: 5\\r\\n\\r\\nhello"
    for _, q in ipairs({"raw=" .. pct(hints .. final) .. "&close=1",
                        "raw=" .. pct(hints) .. "&later=" .. pct(final) .. "&later_ms=200&close=1",
                        "status=103"}) do
        local r, err = http.request{url = "http://" .. APP .. "/i?" .. q}
        out[#out + 1] = r and {status = r.status, final = r.headers["x-final"] or false,
                               link = r.headers["link"] or false, interim = r.headers["x-interim"] or false,
                               backend = r.headers["x-backend"] or false, body = r.body} or {err = err}
    end
    res:json(out)
end})
router:add_route("GET", "/fetch-misuse", {handler = function(req, res)
    local msgs = {}
    for _, args in ipairs({ {}, {url = 5.5, method = {}}, {url = "http://x/", headers = "a"} }) do
        local ok, err = pcall(http.request, args)
        msgs[#msgs + 1] = err
    end
    msgs[#msgs + 1] = select(2, pcall(http.request, "http://x/"))
    res:write(table.concat(msgs, "\\n"))
end})
router:add_route("GET", "/fetch-https", {handler = function(req, res)
    local r, err = http.request{url = "https://" .. APP .. "/"}
    res:json({ok = r ~= nil, err = err})
end})
LUA

sub config {
    my ($extra) = @_;
    $extra //= '';
    return <<"EOF";
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 2
  access_log: "off"
limits:
  max_body_bytes: 64KB
lua:
  timeout: 1s
$extra
tenants:
  - name: demo
    lua_script: scripts/api.lua
    upstreams:
      - { name: app, url: "http://$app_addr" }
      - { name: other, url: "http://@{[ $other->addr ]}", weight: 1 }
EOF
}
$t->write_config(config());
$t->start;

# ---- answered by Lua ---------------------------------------------------------------
my $r = $t->request($port, GET => '/hello');
is($r->{status}, 200, 'GET /hello');
is($r->{body}, 'Hello World', 'Hello World');
is($r->{headers}{'content-type'}, 'text/plain; charset=utf-8', 'default content type');
is($r->{headers}{'content-length'}, 11, 'with a Content-Length');
like($r->{headers}{'x-request-id'}, qr/^[0-9a-f]{32}$/, 'and the request id');
$r = $t->request($port, HEAD => '/hello');
is($r->{status}, 200, 'HEAD is answered by the GET route');
is($r->{headers}{'content-length'}, 11, 'HEAD: the length of the GET body');
is($r->{body}, '', 'HEAD: no body');

$r = $t->request($port, PATCH => '/echo/aa/b/c?x=1&x=2&y=a%20b+c&flag',
                 headers => [ 'X-Test' => 'one', 'X-Test' => 'two', 'X-Other' => 'o',
                              Cookie => 'a=1', Cookie => 'b=2; c=3' ]);
is($r->{status}, 200, 'method * route');
my $j = $r->{json};
is($j->{method}, 'PATCH', 'req:method()');
is($j->{path}, '/echo/aa/b/c', 'req:path()');
is($j->{host}, 'localhost', 'req:host()');
is_deeply($j->{query}, { x => '1', y => 'a b c', flag => '' }, 'req:query(): first values, decoded');
is($j->{x}, '1', 'req:query(name)');
ok(!exists $j->{nox}, 'req:query(missing) is nil');
is($j->{query_string}, 'x=1&x=2&y=a%20b+c&flag', 'req:query_string()');
is_deeply($j->{params}, { a => 'aa', '*' => 'b/c' }, 'req:params()');
is($j->{a}, 'aa', 'req:param(name)');
is($j->{star}, 'b/c', 'req:param("*")');
ok(!exists $j->{none}, 'req:param(missing) is nil');
is($j->{headers}{'x-test'}, 'one, two', 'req:headers(): lower-case names, repeats joined');
is($j->{headers}{'x-other'}, 'o', 'req:headers(): other headers');
is($j->{test}, 'one, two', 'req:header() is case-insensitive');
ok(!exists $j->{missing}, 'req:header(missing) is nil');
is($j->{cookie}, 'a=1; b=2; c=3', 'req:header("Cookie"): several Cookie fields joined by "; "');
is($j->{headers}{cookie}, 'a=1; b=2; c=3', 'req:headers() too');
is($j->{client_ip}, '127.0.0.1', 'req:client_ip()');
is($j->{request_id}, $r->{headers}{'x-request-id'}, 'req:request_id() is the X-Request-ID');
is($j->{tenant}, 'demo', 'req:tenant()');
is($r->{headers}{'content-type'}, 'application/json', 'res:json sets the content type');

my $sent = '{"a":[1,2,{"b":null}],"s":"caf\u00e9"}';
$r = $t->request($port, POST => '/body', body => $sent, headers => [ 'Content-Type' => 'application/json' ]);
is($r->{status}, 201, 'res:status(201)');
is($r->{headers}{'x-len'}, length $sent, 'res:header()');
is_deeply($r->{json}, { a => [ 1, 2, { b => undef } ], s => "caf\x{e9}", len => length $sent,
                        again => JSON::PP::true },
          'req:body() and a json round trip (null, nesting, UTF-8)') or diag explain $r->{json};
$r = $t->request($port, POST => '/body', body => 'x' x 100, chunked => 1);
is($r->{status}, 500, 'a chunked body that is not JSON: the script fails');
$r = $t->request($port, POST => '/body', body => 'x' x 70000, chunked => 1);
is($r->{status}, 413, 'req:body() past limits.max_body_bytes: 413, not a script error');
is($r->{headers}{connection}, 'close', 'and the connection closes (the rest of the body is unread)');

$r = $t->request($port, GET => '/stream?n=3');
ok(!$r->{chunked}, 'small output: one buffered response');
is(length $r->{body}, 30000, 'with everything written');
is($r->{headers}{'content-length'}, 30000, 'and its length');
$r = $t->request($port, GET => '/stream?n=100');
ok($r->{chunked}, 'large output is streamed chunked');
is(length $r->{body}, 1_000_000, 'every byte of it');
my $c = $t->conn($port);
$r = $c->request(GET => '/stream?n=50', headers => [ Connection => 'keep-alive' ]);
is(length $r->{body}, 500_000, 'streamed on a keep-alive connection');
$r = $c->request(GET => '/hello', headers => [ Connection => 'keep-alive' ]);
is($r->{body}, 'Hello World', 'and the connection goes on');
$c->close;
my $raw = $t->raw($port, "GET /stream?n=10 HTTP/1.0\r\nHost: localhost\r\n\r\n");
my ($head, $body) = split /\r\n\r\n/, $raw, 2;
unlike($head, qr/chunked/i, 'HTTP/1.0: no chunked framing');
is(length $body, 100_000, 'HTTP/1.0: the body until close');

$r = $t->request($port, GET => '/redirect');
is($r->{status}, 301, 'res:redirect(url, 301)');
is($r->{headers}{location}, '/hello', 'Location');
$r = $t->request($port, GET => '/found');
is($r->{status}, 302, 'res:redirect defaults to 302');
$r = $t->request($port, GET => '/status');
is($r->{status}, 418, 'any status');
is($r->{headers}{'x-a'}, '2', 'res:header replaces');
ok(!exists $r->{headers}{'x-b'}, 'res:header(name, nil) removes');
is(scalar(() = $r->{raw} =~ /^Server:/gmi), 1, 'one Server field');
is($r->{headers}{server}, 'teapot/1', "the script's");
is(scalar(() = $r->{raw} =~ /^Date:/gmi), 1, 'one Date field');
is($r->{headers}{date}, 'Thu, 01 Jan 2026 00:00:00 GMT', "the script's");
is($r->{body}, 'teapot', 'several writes');
$r = $t->request($port, GET => '/empty');
is($r->{status}, 204, 'res:status(204)');
is($r->{body}, '', 'without a body');
ok(!exists $r->{headers}{'content-length'}, 'nor a length');
$c = $t->conn($port);
for my $n (3, 100000) {
    $r = $c->request(GET => "/reset?n=$n", headers => [ Connection => 'keep-alive' ]);
    is($r->{status}, 205, "res:status(205), $n bytes written");
    is($r->{headers}{'content-length'}, '0', 'Content-Length: 0 (RFC 9110 15.3.6)');
    ok(!exists $r->{headers}{'transfer-encoding'} && !exists $r->{headers}{'content-type'}, 'nothing else of a body');
    is($r->{body}, '', 'and none is sent');
}
is($c->request(GET => '/hello', headers => [ Connection => 'keep-alive' ])->{body}, 'Hello World',
   'the connection goes on');
$c->close;
$r = $t->request($port, GET => '/nothing');
is($r->{status}, 200, 'a handler that writes nothing: 200');
is($r->{headers}{'content-length'}, 0, 'empty');

$r = $t->request($port, GET => '/misc');
cmp_ok(abs($r->{json}{now} - time), '<', 5, 'keystone.now() is wall-clock seconds');
cmp_ok(abs($r->{json}{time} - time), '<', 5, 'keystone.time()');
is($r->{json}{year}, '1970', 'keystone.date()');
ok($r->{json}{ok}, 'keystone.env refuses names not in lua.allowed_env');
like($r->{json}{version}, qr/^\d+\.\d+/, 'keystone.version');
ok($t->wait_log(qr/\[warn\] \d+ lua-log: tenant demo: misc handler\t[0-9a-f]{32}/), 'log() writes to the error log');
ok($t->wait_log(qr/lua-log: tenant demo: printed\t42/), 'print() too');
ok($t->wait_log(qr/lua-log: tenant demo: two lines, a NUL \\x00 here, an ESC \\x1b\[31m there$/m),
   'a line break becomes a space, other control bytes \\xHH, nothing is cut at a NUL');

# ---- 405 --------------------------------------------------------------------------------
$r = $t->request($port, GET => '/only-put');
is($r->{status}, 405, 'a path with routes for other methods: 405');
is($r->{headers}{allow}, 'PUT, DELETE', 'with Allow');
is($r->{json}{error}{code}, 405, 'and the JSON envelope');
is($r->{headers}{'x-global'}, 'g', 'and the headers middleware set before next()');
is($t->request($port, GET => '/hello')->{headers}{'x-global'}, 'g', 'as on any answer');
is($t->request($port, DELETE => '/only-put')->{body}, 'delete', 'the allowed method is served');

# ---- errors ------------------------------------------------------------------------------
my $mark = $t->log_mark;
$r = $t->request($port, GET => '/error');
is($r->{status}, 500, 'a runtime error: 500');
is($r->{json}{error}{message}, 'Lua script error', 'the Lua message stays in the log');
is($r->{json}{error}{request_id}, $r->{headers}{'x-request-id'}, 'the envelope has the request id');
my $line = $t->wait_log(qr/lua-error: tenant demo/, from => $mark);
like($line, qr/script \S+api\.lua: runtime error in handler \(request $r->{json}{error}{request_id}\)/,
     'the log line names tenant, script, kind, where and the request');
like($line, qr/api\.lua:\d+: attempt to index a nil value .*stack traceback:/, 'with message and traceback');
unlike($line, qr/\n./, 'on one line');
$r = $t->request($port, GET => '/error-table');
is($r->{status}, 500, 'an error object that is a table: 500 too');
$r = $t->request($port, GET => '/bad-header');
is($r->{status}, 500, 'res:header refuses the framing headers');
$c = $t->conn($port);
$r = $c->request(GET => '/interim', headers => [ Connection => 'keep-alive' ]);
is($r->{status}, 500, 'res:status(100) in a handler: a script error, not an interim answer');
$r = $c->request(GET => '/hello', headers => [ Connection => 'keep-alive' ]);
ok(!defined $r->{status} || $r->{body} eq 'Hello World', 'the next answer on the connection is its own');
$c->close;
$r = $t->request($port, GET => '/header-limits');
like($r->{json}{s100} || '', qr/res:status: 100 is not a final HTTP status/, 'res:status refuses 100');
like($r->{json}{s199} || '', qr/not a final HTTP status/, 'and 199');
like($r->{json}{id} || '', qr/X-Request-ID is set by keystoned/i, 'res:header refuses X-Request-ID');
ok(!$r->{json}{via}, 'res:header may set Via (a response\'s is the upstream\'s)') or diag($r->{json}{via});
like($r->{json}{del} || '', qr/control characters/, 'and DEL in a value');
ok(!$r->{json}{big15}, '15 KB of script headers are accepted');
like($r->{json}{big} || '', qr/headers would take more than 15360 bytes/, 'the 16th KB is refused');
is(scalar(() = $r->{raw} =~ /^X-Request-ID:/mig), 1, 'one X-Request-ID in the answer');
$r = $t->request($port, GET => '/catch/x');
is($r->{status}, 200, 'a middleware may catch the error of the rest of the chain');
like($r->{json}{err} // '', qr/handler broke$/, 'and sees it');
like($r->{json}{again} // '', qr/next\(\) may be called once per middleware/, 'it is middleware again afterwards');
is($t->request($port, GET => '/catch/table')->{json}{err}, 7, 'an error table comes through as it was raised');
$r = $t->request($port, GET => '/catch2/x');
like($r->{json}{err} // '', qr/the guard refused$/, 'an inner middleware that fails is caught too');
like($r->{json}{again} // '', qr/next\(\) may be called once per middleware/,
     'and a second next() does not run the chain past it');
ok(!exists $r->{headers}{'x-bypassed'}, 'the handler behind it never ran');
my $mark_catch = $t->log_mark;
$r = $t->request($port, GET => '/catch/fail-after');
is($r->{status}, 500, 'its own error after that: 500');
ok($t->wait_log(qr{runtime error in middleware \(request \Q$r->{headers}{'x-request-id'}\E\): \S+: the middleware broke after},
                from => $mark_catch), 'logged as a middleware error');
$r = $t->request($port, GET => '/argcheck/x');
is($r->{status}, 200, 'argument checks answered');
ok(!$r->{json}{req_ok} && !$r->{json}{res_ok}, 'a NUL byte in a header name is refused by req:set_header and res:header');
like($r->{json}{req_err} // '', qr/^req:set_header: bad header name/, 'req:set_header says why');
like($r->{json}{del_err} // '', qr/^req:set_header: control characters in the value/, 'req:set_header refuses DEL in a value');
like($r->{json}{up_err} // '', qr/^req:set_header: Upgrade is set by keystoned/, 'req:set_header refuses a hop-by-hop field');
like($r->{json}{conn_err} // '', qr/^req:del_header: connection is set by keystoned/, 'so does req:del_header');
like($r->{json}{ka_err} // '', qr/^res:header: Keep-Alive is set by keystoned/, 'and res:header');
like($r->{json}{res_err} // '', qr/^res:header: bad header name/, 'res:header says why');
ok(!$r->{json}{class_ok}, 'a res method called on req is refused');
like($r->{json}{class_err} // '', qr/bad argument #1 to '[^']+' \(ks\.res expected, got ks\.req\)/,
     'with the usual message of a wrong argument') or diag($r->{json}{class_err});
$r = $t->request($port, GET => '/late-status');
ok(!defined $r->{status} && $r->{error} eq 'eof', 'an error once the head is out (res:status too late) '
   . 'closes the connection: the client sees a truncated stream');
like($r->{raw}, qr/^HTTP\/1\.1 200 OK\r\n/, 'after the 200 that was already sent');
$r = $t->request($port, GET => '/twice/x');
is($r->{status}, 500, 'next() twice is an error');
$r = $t->request($port, GET => '/wn/x');
is($r->{status}, 500, 'next() after writing is an error');
$r = $t->request($port, GET => '/set-path-in-handler');
is($r->{status}, 500, 'req:set_path outside middleware is an error');
ok($t->wait_log(qr/req:set_path is not available in a handler/, from => $mark), 'saying where');
my ($code, $out) = $t->ctl('-c', "$t->{dir}/keystone.yaml", 'status', '-j');
my ($demo) = grep { $_->{name} eq 'demo' } @{ decode_json($out)->{tenants} };
cmp_ok($demo->{lua}{errors}, '>=', 6, 'script errors are counted per tenant');

# ---- middleware ---------------------------------------------------------------------------
$r = $t->request($port, GET => '/mw/chain');
is($r->{body}, 'g12', 'global, then group, then route middleware, then the handler');
is($r->{headers}{'x-after'}, 'one-after', 'a middleware runs on after next() and may still add headers');
$r = $t->request($port, GET => '/mw/proxy');
my %up = map { lc($_->[0]) => $_->[1] } @{ $r->{json}{headers} };
is($up{'x-order'}, 'g12', 'the chain before the proxy: the upstream sees the headers it set');
is($r->{json}{name}, 'app', 'route upstream');
$r = $t->request($port, GET => '/guarded/x');
is($r->{status}, 403, 'a middleware that does not call next() ends the request');
is($r->{body}, 'denied by middleware', 'with what it wrote');
$r = $t->request($port, GET => '/guarded/x', headers => [ 'X-Let-In' => 'yes' ]);
is($r->{body}, 'inside', 'and lets it through when it calls next()');

# ---- proxy routes, edits and hooks -----------------------------------------------------------
$r = $t->request($port, GET => '/up/a/b?q=1');
is($r->{json}{target}, '/a/b?q=1', 'strip_prefix = true: the literal prefix is removed, the query kept');
%up = map { lc($_->[0]) => $_->[1] } @{ $r->{json}{headers} };
is($up{'x-route'}, 'up', 'route headers are added upstream');
is($r->{headers}{'x-hook'}, 'status=200 name=app', 'the response hook sees the proxied head');
$r = $t->request($port, GET => '/edits/x');
is($r->{status}, 200, 'GET through middleware making 64 header changes') or diag $r->{raw};
%up = map { lc($_->[0]) => $_->[1] } @{ $r->{json}{headers} };
is("$up{'x-e1'} $up{'x-e63'}", '1 63', 'the scripts may change 64 request headers');
like($r->{headers}{'x-edit-65'} // '', qr/too many header changes \(at most 64\)/, 'not a 65th');
is($up{'x-route-h'}, 'kept', "and the route's headers are still added after them");
$r = $t->request($port, GET => '/up/teapot');
is($r->{status}, 299, 'the response hook may change the status');
# a hook that gives a status a body where the upstream's had none, or
# takes it away (205): framed, so that the connection goes on
{
    my $c = $t->conn($port);
    for my $case ([ 204, 200 ], [ 304, 200 ], [ 200, 205 ]) {
        my ($from, $to) = @$case;
        my $path = $to == 205 ? '/up/to-205?size=10' : "/up/to-200?status=$from";
        my $res = $c->request(GET => $path, timeout => 5);
        is($res->{status}, $to, "a hook making the upstream's $from a $to");
        is($res->{headers}{'content-length'}, '0', '... says Content-Length: 0');
        is($res->{body}, '', '... with no body');
    }
    is($c->request(GET => '/hello', timeout => 5)->{body}, 'Hello World', 'and the connection goes on');
    $c->close;
}
$r = $t->request($port, GET => '/up/hook-error');
is($r->{status}, 500, 'a response hook that fails: 500');
is($r->{json}{error}{message}, 'Lua script error', 'saying so');
$r = $t->request($port, GET => '/up/cookies?header=Set-Cookie:up%3D1&header=Set-Cookie:up%3D2');
is_deeply([ map { $_->[1] } grep { lc $_->[0] eq 'set-cookie' } @{ $r->{header_list} } ], [ 's=1', 't=2' ],
          'a response hook replaces the upstream\'s Set-Cookie lines with a list')
    or diag explain $r->{header_list};
is($r->{headers}{'x-seen'}, 's=1', 'res:get_header gives the first of them');
ok(!exists $r->{headers}{'x-backend'}, 'an empty list removes a header');
$r = $t->request($port, GET => '/cookies');
is_deeply([ map { $_->[1] } grep { lc $_->[0] eq 'set-cookie' } @{ $r->{header_list} } ], [ 'a=1; Path=/', 'b=2' ],
          'a handler sends a list as one line per value, replacing earlier ones');
ok(!exists $r->{headers}{'x-gone'}, 'an empty list removes');
like($r->{body}, qr/^false .*res:header: value 2 of the list is not a string/, 'a list of other things: an error');
ok(!exists $r->{headers}{'x-bad'}, 'and nothing of it is set');
$r = $t->request($port, GET => '/mwc/x?header=Set-Cookie:up%3D1');
is_deeply([ map { $_->[1] } grep { lc $_->[0] eq 'set-cookie' } @{ $r->{header_list} } ], [ 'm=1', 'n=2' ],
          'a list set by middleware before next() reaches the client of a proxied route');
$r = $t->request($port, GET => '/up/slow?delay=1500');
is($r->{status}, 504, 'timeout = "300ms": the route\'s response timeout');
$r = $t->request($port, GET => '/other/1');
is($r->{json}{name}, 'other', 'upstream = "other" forces that upstream');
is($t->request($port, GET => '/other/2')->{json}{name}, 'other', 'every time');
$r = $t->request($port, GET => '/rw/p?z=9', headers => [ 'X-Secret' => 's', 'X-Kept' => 'k' ]);
is($r->{json}{target}, '/rewritten/rw/p?z=9', 'req:set_path rewrites the path sent upstream');
%up = map { lc($_->[0]) => $_->[1] } @{ $r->{json}{headers} };
ok(!exists $up{'x-secret'}, 'req:del_header removes a header upstream');
is($up{'x-kept'}, 'k', 'others stay');
is($up{host}, 'rewritten.example', 'req:set_header can set Host');
is($r->{headers}{'x-from-middleware'}, 'yes', 'res:header before next() reaches a proxied response');
$r = $t->request($port, GET => '/forge/x', headers => [ Via => '1.0 client-proxy', 'X-Request-ID' => 'client.1' ]);
is($r->{status}, 200, 'a middleware that tries to change X-Request-ID and Via: proxied');
is_deeply([ map { s/^\S+api\.lua:\d+: //r } split / \| /, $r->{headers}{'x-edit-errors'} // '' ],
          [ 'req:set_header: X-Request-ID is set by keystoned', 'req:set_header: via is set by keystoned',
            'req:del_header: Via is set by keystoned', 'req:del_header: x-request-id is set by keystoned' ],
          'req:set_header and req:del_header refuse X-Request-ID and Via, saying why');
my @seen = @{ $r->{json}{headers} || [] };
is_deeply([ map { $_->[1] } grep { lc $_->[0] eq 'x-request-id' } @seen ], [ 'client.1' ],
          'the upstream gets the request id of the gateway, once');
is($r->{headers}{'x-request-id'}, 'client.1', 'the one the client sees');
my @via = map { $_->[1] } grep { lc $_->[0] eq 'via' } @seen;
is(scalar @via, 2, 'the upstream gets the Via lines: the client\'s and the gateway\'s') or diag explain \@via;
is($via[0], '1.0 client-proxy', "the client's, as sent");
like($via[1] // '', qr/^1\.1 keystoned-[0-9a-f]{8}$/, "then the gateway's");

$r = $t->request($port, GET => '/no/route/here');
is($r->{json}{target}, '/no/route/here', 'no Lua route: proxied as before');
like($r->{headers}{'x-hook'}, qr/^status=200/, 'through the response hook too');

# ---- http.request --------------------------------------------------------------------------
$r = $t->request($port, GET => '/fetch');
is_deeply($r->{json}, { status => 200, ctype => 'application/json', method => 'POST',
                        target => '/fetched?x=1', body => 'payload', name => 'app' },
          'http.request: method, url, headers, body; status, headers, body back') or diag explain $r->{json};
my $t0 = Time::HiRes::time();
$r = $t->request($port, GET => '/fetch-slow');
my $took = Time::HiRes::time() - $t0;
ok(!$r->{json}{ok}, 'http.request past its timeout returns nil');
like($r->{json}{err}, qr/timeout/, 'and says timeout');
cmp_ok($r->{json}{took}, '<', 2.5, 'the deadline held (not the upstream\'s 3 s)');
$r = $t->request($port, GET => '/fetch-dead');
like($r->{json}{err}, qr/connect to 127\.0\.0\.1:$dead: Connection refused/, 'a refused connect: nil, why');
$r = $t->request($port, GET => '/fetch-status');
is_deeply($r->{json}, { status => 404, up => 'yes' }, 'the upstream status and headers as they are');
$r = $t->request($port, GET => '/fetch-trailers');
is($r->{json}{body}, 'abcdefghij', 'http.request de-chunks a body');
ok(!$r->{json}{trailer}, 'and drops its trailer fields (not headers)');
ok(!$r->{json}{cl_ok}, 'a Content-Length from the script is refused');
like($r->{json}{cl_err} // '', qr/Content-Length is set by keystoned/, 'saying why');
like($r->{json}{up_err} // '', qr/http\.request: Upgrade is set by keystoned/, 'so is any hop-by-hop field');
like($r->{json}{name_err} // '', qr/http\.request: bad header name/, 'and a name that is not a token');
$r = $t->request($port, GET => '/fetch-interim');
my $fin = { status => 201, final => 'yes', link => JSON::PP::false, interim => JSON::PP::false,
            backend => JSON::PP::false, body => 'hello' };
is_deeply($r->{json}[0], $fin, 'http.request skips 103 and 100 answers: the final status, headers and body')
    or diag explain $r->{json}[0];
is_deeply($r->{json}[1], $fin, 'also when the final answer comes in a later read') or diag explain $r->{json}[1];
is($r->{json}[2]{status}, 200, 't/backend ?status=103: the final 200');
is($r->{json}[2]{backend}, 'app', 'with its headers');
like($r->{json}[2]{body} // '', qr/"target":"\/i\?status=103"/, 'and its body');
$r = $t->request($port, GET => '/fetch-misuse');
is_deeply([ map { s/^.*?http\.request: //r } split /\n/, $r->{body} ],
          [ 'url is missing', 'method must be a string, not a table', 'headers must be a table, not a string',
            'takes a table: http.request{url = "http://...", ...}' ], 'http.request misused: what is wrong, by name')
    or diag $r->{body};
$r = $t->request($port, GET => '/fetch-https');
like($r->{json}{err}, qr/https is not supported/, 'https is refused');

# ---- a route's headers option: refused at load for the fields keystoned sets ----------------
for my $h ('X-Request-ID', 'via', 'Content-Length') {
    $t->write_file('scripts/bad.lua', qq{router:add_route("GET", "/x", {upstream = "app", headers = {["$h"] = "forged"}})\n});
    (my $cfg = config()) =~ s/api\.lua/bad.lua/;
    $t->write_file('bad.yaml', $cfg);
    my ($code, undef, $err) = $t->run([$t->bin('keystoned'), '-t', '-c', "$t->{dir}/bad.yaml"]);
    is($code, 1, "-t refuses a route with headers = {[\"$h\"] = ...}");
    like($err, qr/bad\.lua:1: .*header \Q$h\E is set by keystoned/, 'naming the script line and the header')
        or diag($err);
}

# ---- expose_errors ---------------------------------------------------------------------------
$t->write_config(config("  expose_errors: true"));
$t->signal('HUP');
ok($t->wait_log(qr/reload applied: generation 2/), 'reloaded with expose_errors');
ok($t->wait_for(sub { ($t->request($port, GET => '/error')->{json}{error}{message} // '') =~ /attempt to index/ }),
   'lua.expose_errors: true puts the Lua message in the 500');
like($t->request($port, GET => '/up/hook-error')->{json}{error}{message} // '', qr/^Lua script error: .*the hook broke/,
     "a response hook's too");

done_testing;
