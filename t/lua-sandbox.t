#!/usr/bin/perl
# Sandbox escapes tried from a running daemon, at request time and at load:
# io, os.execute, require, package, debug, dofile/loadfile, bytecode
# through load, string.dump, __gc finalizers, metatable tampering with the
# API tables and the string metatable, _ENV tricks, and keystone.env
# outside lua.allowed_env.  Nothing gets out: no file is written, no
# command runs, and the API stays intact for the next request.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $dir = $t->dir;
my $marker = "$dir/escaped";

$t->write_file('sandbox.lua', <<"LUA");
local MARKER = "$marker"
local function try(f) local ok, e = pcall(f) return {ok = ok, err = tostring(e)} end

router:add_route("GET", "/escape", {handler = function(req, res)
    local r = {}
    r.io = try(function() return io.open(MARKER, "w") end)
    r.os_execute = try(function() return os.execute("touch " .. MARKER) end)
    r.require = try(function() return require("io") end)
    r.package = try(function() return package.loadlib("libc.so.6", "system") end)
    r.debug = try(function() return debug.getregistry() end)
    r.dofile = try(function() return dofile("/etc/passwd") end)
    r.loadfile = try(function() return loadfile("/etc/passwd") end)
    r.dump = try(function() return string.dump(function() end) end)
    local f, e = load("\\27LuaS\\0\\25\\147\\r\\n\\26\\n")
    r.bytecode = {ok = f ~= nil, err = tostring(e)}
    f, e = load("return 1", "chunk", "b")
    r.bytecode_mode = {ok = f ~= nil, err = tostring(e)}
    r.gc = try(function() return setmetatable({}, {__gc = function() end}) end)
    r.string_tamper = try(function() string.format = nil end)
    r.string_rawset = try(function() rawset(string, "format", nil) end)
    r.string_mt = try(function() getmetatable("").__index = {} end)
    r.router_tamper = try(function() router.add_route = function() end end)
    r.router_mt = try(function() setmetatable(router, nil) end)
    r.req_mt = try(function() getmetatable(req).__index.method = nil end)
    r.env_nil = try(function() local _ENV = nil; return io end)
    r.env_swap = try(function() local _ENV = {}; return os end)
    r.env_load = try(function() return load("return os or io or debug", "x", "t", _G)() end)
    r.global_io = _G.io ~= nil or _G.os ~= nil or _G.debug ~= nil or _G.package ~= nil
    r.secret = try(function() return keystone.env("KS_SECRET_FOR_TEST") end)
    r.allowed = keystone.env("KS_ALLOWED_FOR_TEST")
    r.env_nul = try(function() return keystone.env("KS_ALLOWED_FOR_TEST\\0junk") end)
    res:json(r)
end})

-- xpcall passes on any number of arguments (the C version copies them:
-- it must grow the stack first)
router:add_route("GET", "/xpcall-many", {handler = function(req, res)
    local t = {}
    for i = 1, 5000 do t[i] = i end
    local function count(...) return select("#", ...), (select(select("#", ...), ...)) end
    local function handler(e) return "handled: " .. tostring(e) end
    local ok, n, last = xpcall(count, handler, table.unpack(t, 1, 5000))
    local eok, emsg = xpcall(function(...) error("boom " .. select("#", ...), 0) end, handler,
                             table.unpack(t, 1, 5000))
    res:json({ok = ok, n = n, last = last, eok = eok, emsg = emsg})
end})

router:add_route("GET", "/intact", {handler = function(req, res)
    res:write(string.format("%s %s %d", req:method(), type(router.add_route), #string.rep("x", 3)))
end})
LUA
my $config = <<"EOF";
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  access_log: "off"
lua:
  allowed_env: [KS_ALLOWED_FOR_TEST]
tenants:
  - name: sandboxed
    lua_script: sandbox.lua
    upstreams:
      - { name: app, url: "http://127.0.0.1:9" }
EOF
$t->write_config($config);
$ENV{KS_SECRET_FOR_TEST} = 'hidden';
$ENV{KS_ALLOWED_FOR_TEST} = 'visible';
$t->start;

my $r = $t->request($port, GET => '/escape');
is($r->{status}, 200, 'the escape attempts ran') or diag($r->{body});
my $j = $r->{json};
for my $k (qw(io os_execute require package debug dofile loadfile dump)) {
    ok(!$j->{$k}{ok}, "$k: refused") and like($j->{$k}{err}, qr/attempt to (call|index) a nil value/, "$k: not there");
}
ok(!$j->{bytecode}{ok}, 'load() of bytecode: refused');
like($j->{bytecode}{err}, qr/binary chunk/, 'load() says binary chunks are refused');
ok(!$j->{bytecode_mode}{ok}, 'load() with mode "b": refused');
ok(!$j->{gc}{ok}, 'a __gc finalizer: refused');
like($j->{gc}{err}, qr/__gc metamethods are not allowed/, 'saying why');
for my $k (qw(string_tamper string_rawset string_mt router_tamper router_mt req_mt)) {
    ok(!$j->{$k}{ok}, "$k: refused") or diag($j->{$k}{err});
}
like($j->{string_tamper}{err}, qr/read-only table string/, 'the API tables are read-only');
ok(!$j->{env_nil}{ok}, '_ENV = nil: no globals at all');
ok($j->{env_swap}{ok} && $j->{env_swap}{err} eq 'nil', 'a swapped _ENV finds nothing');
ok($j->{env_load}{ok} && $j->{env_load}{err} eq 'nil', 'load with _G as env finds no io/os/debug');
ok(!$j->{global_io}, 'no io, os, debug or package in _G');
ok(!$j->{secret}{ok}, 'keystone.env outside lua.allowed_env: refused');
like($j->{secret}{err}, qr/not in lua\.allowed_env/, 'saying why');
is($j->{allowed}, 'visible', 'keystone.env of an allowed name');
ok(!$j->{env_nul}{ok}, 'keystone.env of an allowed name with a NUL and more after it: refused')
    or diag($j->{env_nul}{err});
like($j->{env_nul}{err}, qr/bad argument #1 to 'env' \(a NUL byte in the string\)/, 'saying why');
ok(!-e $marker, 'no file was written');

$r = $t->request($port, GET => '/intact');
is($r->{body}, 'GET function 3', 'the API is intact after the attempts');

# xpcall with 5000 arguments: all reach the function, results come back
my $mark = $t->log_mark;
for (1 .. 3) {
    $r = $t->request($port, GET => '/xpcall-many');
    is($r->{status}, 200, 'xpcall with 5000 arguments answered') or diag($r->{body});
    is_deeply($r->{json}, { ok => JSON::PP::true, n => 5000, last => 5000, eok => JSON::PP::false,
                            emsg => 'handled: boom 5000' },
              'every argument reached the function, its results and the handler\'s came back')
        or diag explain $r->{json};
}
is($t->request($port, GET => '/intact')->{body}, 'GET function 3', 'the worker goes on');
ok(!$t->wait_log(qr/worker \d+ exited/, from => $mark, timeout => 0.5),
   'no worker died');

# ---- at load: the master's check refuses the script, with file:line ------------------------
for my $case (
    [ 'os.execute("touch ' . $marker . '")', qr/bad\.lua:1: attempt to index a nil value \(global 'os'\)/ ],
    [ 'io.open("' . $marker . '", "w")', qr/bad\.lua:1: attempt to index a nil value \(global 'io'\)/ ],
    [ "local x = 1\nrequire('os')", qr/bad\.lua:2: attempt to call a nil value \(global 'require'\)/ ],
    [ "setmetatable({}, {__gc = function() end})", qr/bad\.lua:1: setmetatable: __gc metamethods are not allowed/ ],
    [ "string.upper = nil", qr/bad\.lua:1: attempt to modify the read-only table string/ ],
) {
    my ($src, $want) = @$case;
    $t->write_file('bad.lua', "$src\n");
    (my $cfg = $config) =~ s/sandbox\.lua/bad.lua/;
    $t->write_file('bad.yaml', $cfg);
    my ($code, $out, $err) = $t->run([$t->bin('keystoned'), '-t', '-c', "$dir/bad.yaml"]);
    (my $name = $src) =~ s/\n/; /g;
    is($code, 1, "-t refuses: $name");
    like($err, $want, 'with file:line') or diag($err);
}
ok(!-e $marker, 'still no file written');

is($t->stop >> 8, 0, 'clean stop');
done_testing;
