#!/usr/bin/perl
# The limits of tenant scripts in a running daemon: a call past its
# timeout (a plain loop, a loop around pcall, around load() or
# collectgarbage(), a response hook) and a memory
# bomb answer 500 within the timeout, the state is rebuilt for the next
# request while the worker lives on and other tenants keep theirs; a
# library buffer (string.rep, table.concat) refused while the state holds
# garbage gets a collection and a second try, and so do the strings of
# req:query, req:header and req:headers; req:body() and json.encode
# collect before they refuse for want of memory; a
# worker stuck inside a C function (a pathological pattern) is killed by
# the master's watchdog after hard_timeout and replaced.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use Time::HiRes ();
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');

$t->write_file('limits.lua', <<'LUA');
count = 0
router:add_route("GET", "/count", {handler = function(req, res)
    count = count + 1
    res:write(tostring(count))
end})
router:add_route("GET", "/loop", {handler = function(req, res) while true do end end})
router:add_route("GET", "/pcall-loop", {handler = function(req, res)
    while true do pcall(function() while true do end end) end
end})
router:add_route("GET", "/caught", {handler = function(req, res)
    -- catching the timeout and answering anyway does not work
    pcall(function() while true do end end)
    res:write("survived")
end})
router:add_route("GET", "/c-loop", {handler = function(req, res)
    -- a few VM instructions around a call that runs for milliseconds in C
    local t = {}
    for i = 1, 100000 do t[i] = i end
    while true do table.sort(t) end
end})
router:add_route("GET", "/churn", {handler = function(req, res)
    -- near the memory cap, garbage made in a loop: the cap refuses blocks
    -- that a collection then finds room for, until the timeout
    local keep = {}
    for i = 1, 2 do keep[i] = string.rep("k", 1 << 20) end
    while true do
        local t = {}
        for j = 1, 200 do t[j] = string.rep("x", 1000) .. j end
    end
end})
router:add_route("GET", "/bomb", {handler = function(req, res)
    -- megabytes at a time: the cap is reached at any speed, long before
    -- the timeout
    local t = {}
    for i = 1, 1e6 do t[i] = string.rep("x", 1 << 20) .. i end
end})
router:add_route("POST", "/body-len", {handler = function(req, res)
    res:write(tostring(#req:body()))
end})
router:add_route("GET", "/json-bomb", {handler = function(req, res)
    -- 1 MB of Lua memory, 500 MB of JSON text
    local s, t = string.rep("x", 1 << 20), {}
    for i = 1, 500 do t[i] = s end
    local ok, err = pcall(json.encode, t)
    res:write(tostring(ok) .. " " .. err .. "\n" .. json.encode({ s:sub(1, 3), #t }))
end})
router:add_route("GET", "/json-bomb-res", {handler = function(req, res)
    local s, t = string.rep("\0", 1 << 19), {}
    for i = 1, 500 do t[i] = s end
    res:json(t)
end})
router:add_route("GET", "/slow-pattern", {handler = function(req, res)
    res:write(tostring(string.find(string.rep("a", 40), string.rep("a*", 40) .. "b")))
end})
-- Fill the state to about 3.3 MB of its 4 MB with garbage that no
-- collection has freed yet (it is all reachable until the return).
local function garbage()
    local t = {}
    for i = 1, 1e6 do
        t[i] = string.rep("g", 4000) .. i
        if collectgarbage("count") > 3300 then return end
    end
end
router:add_route("GET", "/rep-garbage", {handler = function(req, res)
    -- string.rep's buffer of 1 MB fits only once the garbage is collected
    garbage()
    res:write(#string.rep("x", 1 << 20))
end})
router:add_route("GET", "/concat-garbage", {handler = function(req, res)
    local parts = {}
    for i = 1, 64 do parts[i] = string.rep("p", 16384) end
    garbage()
    res:write(#table.concat(parts))
end})
router:add_route("GET", "/rep-overflow", {handler = function(req, res)
    -- 3 MB that stay reachable: no collection makes room for 1 MB more
    local keep = {}
    for i = 1, 6 do keep[i] = string.rep("k", 1 << 19) end
    res:write(#string.rep("x", 1 << 20) + #keep)
end})
-- Fill the state to within 6 KB of its cap with garbage, in small
-- pieces (a list: no table grows by a large block on the way).
local function garbage_to_the_brim()
    local head
    for i = 1, 1e6 do
        if collectgarbage("count") > 4096 - 6 then return end
        head = { string.rep("h", 400) .. i, head }
    end
end
router:add_route("GET", "/query-garbage", {handler = function(req, res)
    -- the decoded value (16 KB) fits only once the garbage is collected
    garbage_to_the_brim()
    res:write(#req:query("v"))
end})
router:add_route("GET", "/headers-garbage", {handler = function(req, res)
    -- two X-Big headers joined (16 KB), and a 9,000-byte name lowered
    -- (the first header: nothing before it makes Lua collect)
    garbage_to_the_brim()
    local joined = #req:header("X-Big")
    garbage_to_the_brim()
    local long_name
    for name in pairs(req:headers()) do
        if #name == 9000 then long_name = name end
    end
    res:write(joined .. " " .. tostring(long_name == string.rep("n", 9000)))
end})
router:add_route("POST", "/body-garbage", {handler = function(req, res)
    -- a body that fits once the garbage is collected
    garbage()
    res:write(tostring(#req:body()))
end})
router:add_route("GET", "/log-big", {handler = function(req, res)
    -- a text of 1.5 MB under 4 MB: logged as one line of its start (a
    -- copy of all of it, and the string made of the copy, would not fit)
    local s = string.rep("l", 1500000)
    log("warn", "big:", s)
    res:write("logged")
end})
router:add_route("GET", "/json-garbage", {handler = function(req, res)
    -- a text of 1 MB that fits once the garbage is collected
    local s = string.rep("j", 1 << 19)
    garbage()
    res:write(tostring(#json.encode({ s, s })))
end})
router:on_response(function(req, res)
    if req:path() == "/hook-loop" then while true do end end
end)
LUA
$t->write_file('other.lua', <<'LUA');
count = 0
router:add_route("GET", "/count", {handler = function(req, res)
    count = count + 1
    res:write(tostring(count))
end})
LUA
$t->write_file('heavy.lua', <<'LUA');
count = 0
router:add_route("GET", "/count", {handler = function(req, res)
    count = count + 1
    res:write(tostring(count))
end})
router:add_route("GET", "/gc-loop", {handler = function(req, res)
    -- a big live heap, so that each full collection takes milliseconds
    -- (built here: at the top level it would take the load's time, which
    -- a slow build, with sanitizers, can run out of)
    local heap = {}
    for i = 1, 300000 do heap[i] = {} end
    -- then a few instructions around each collection
    while true do collectgarbage() end
end})
router:add_route("GET", "/load-loop", {handler = function(req, res)
    -- a few instructions around compiling 2 MB of source
    local src = string.rep("x=1 ", 500000)
    while true do load(src) end
end})
LUA
$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 2
  access_log: "off"
limits:
  max_request_line: 64KB
  max_header_bytes: 64KB
lua:
  timeout: 100ms
  memory: 4MB
  hard_timeout: 1s
tenants:
  - name: limited
    lua_script: limits.lua
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
  - name: heavy
    domains: [heavy.test]
    lua_script: heavy.lua
    lua_limits: { memory: 64MB }
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
  - name: other
    domains: [other.test]
    lua_script: other.lua
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
$t->start;

sub status_json {
    my ($code, $out) = $t->ctl('-c', "$t->{dir}/keystone.yaml", 'status', '-j');
    return $code == 0 ? decode_json($out) : undef;
}
sub worker_pids { my $s = status_json() or return (); map { $_->{pid} } @{ $s->{workers}{list} } }
sub lua_stats { my ($name) = @_; my ($tn) = grep { $_->{name} eq $name } @{ status_json()->{tenants} }; $tn->{lua} }

is($t->request($port, GET => '/count')->{body}, '1', 'the state counts');
is($t->request($port, GET => '/count')->{body}, '2', 'and keeps its globals between requests');
is($t->request($port, GET => '/count', host => 'other.test')->{body}, '1', 'the other tenant has its own');
my @pids = worker_pids();
is(scalar @pids, 1, 'one worker');

# ---- timeouts -------------------------------------------------------------------------
# (heavy.lua's loops go round load() and collectgarbage(), which do much
# work in C for few instructions: without their own checks of the time
# limit they ran on past it, into the watchdog)
for my $case (map({ [ limited => $_, 2.5 ] } qw(/loop /pcall-loop /caught /churn /c-loop)),
              map({ [ heavy => $_, 0.5 ] } qw(/gc-loop /load-loop))) {
    my ($tenant, $path, $bound) = @$case;
    my ($script, @host) = $tenant eq 'heavy' ? ('heavy', host => 'heavy.test') : ('limits');
    my $mark = $t->log_mark;
    my $t0 = Time::HiRes::time();
    my $c = $t->conn($port);
    my $r = $c->request(GET => $path, @host, headers => [ Connection => 'keep-alive' ]);
    my $took = Time::HiRes::time() - $t0;
    is($r->{status}, 500, "$path: 500");
    is($r->{json}{error}{message}, 'Lua script timed out', "$path: says it timed out");
    cmp_ok($took, '<', $bound, "$path: within the timeout, not the watchdog's hard_timeout");
    ok($t->wait_log(qr/lua-error: tenant $tenant, script \S+$script\.lua: timeout error in handler/, from => $mark),
       "$path: logged as a timeout");
    ok($t->wait_log(qr/lua-discard: tenant $tenant: Lua state discarded after a timeout/, from => $mark),
       "$path: the state is discarded");
    unlike($t->error_log($mark), qr/lua-watchdog/, "$path: the watchdog had nothing to do");
    $r = $c->request(GET => '/count', @host, headers => [ Connection => 'keep-alive' ]);
    is($r->{status}, 200, "$path: the same connection serves the next request");
    is($r->{body}, '1', "$path: from a fresh state");
    $c->close;
}
is(lua_stats('heavy')->{timeouts}, 2, 'both counted as timeouts');
is_deeply([ worker_pids() ], \@pids, 'the worker lived through every timeout');
is($t->request($port, GET => '/count', host => 'other.test')->{body}, '2', 'the other tenant kept its state');
is(lua_stats('limited')->{timeouts}, 5, 'timeouts counted per tenant');
is(lua_stats('limited')->{memory}, 0, 'none of them as a memory error');
is(lua_stats('other')->{timeouts}, 0, 'not for the other tenant');

# a response hook that loops: the proxied request answers 500
my $mark = $t->log_mark;
my $r = $t->request($port, GET => '/hook-loop');
is($r->{status}, 500, 'a response hook past the timeout: 500');
ok($t->wait_log(qr/lua-error: tenant limited, \S+ \S+: timeout error in response hook/, from => $mark),
   'logged as a timeout in the response hook');
is($t->request($port, GET => '/count')->{body}, '1', 'and the state was rebuilt');
is($t->request($port, GET => '/proxied')->{json}{target}, '/proxied', 'proxying goes on');

# ---- memory ------------------------------------------------------------------------------
$mark = $t->log_mark;
$r = $t->request($port, GET => '/bomb');
is($r->{status}, 500, 'a memory bomb: 500');
is($r->{json}{error}{message}, 'Lua script ran out of memory', 'says so');
ok($t->wait_log(qr/lua-error: tenant limited, \S+ \S+: memory error in handler/, from => $mark), 'logged');
ok($t->wait_log(qr/lua-discard: tenant limited: Lua state discarded after a memory error/, from => $mark),
   'the state is discarded');
is($t->request($port, GET => '/count')->{body}, '1', 'the next request gets a fresh state');
is(lua_stats('limited')->{memory}, 1, 'counted');
is_deeply([ worker_pids() ], \@pids, 'still the same worker');

# ---- a request body the state has no room for: 413, the state lives on -----------------------
is($t->request($port, GET => '/count')->{body}, '2', 'the state counts');
$mark = $t->log_mark;
$r = $t->request($port, POST => '/body-len', body => 'b' x (5 << 20));
is($r->{status}, 413, 'req:body() of 5 MB under a 4 MB Lua memory limit: 413');
ok($t->wait_log(qr/\[warn\] \d+ lua-body: tenant limited, request \S+: a request body of 5242880 bytes does not fit in the \d+ bytes of Lua memory left \(lua_limits.memory\): answered 413/,
                from => $mark), 'logged with the reason');
$r = $t->request($port, POST => '/body-len', body => 'b' x (5 << 20), chunked => 1);
is($r->{status}, 413, 'chunked: 413 too');
$r = $t->request($port, POST => '/body-len', body => 'b' x (1 << 20));
is($r->{body}, 1 << 20, 'one that fits is read');
is($t->request($port, GET => '/count')->{body}, '3', 'the state was kept');
is(lua_stats('limited')->{memory}, 1, 'no memory error counted');

# ---- json.encode measures its text against the memory left --------------------------------
$r = $t->request($port, GET => '/json-bomb');
like($r->{body}, qr/^false .*json\.encode: the text would take more than the \d+ kB of Lua memory left\n/,
     'json.encode of a text past the memory left: a Lua error');
like($r->{body}, qr/\n\["xxx",500\]$/, 'and goes on working for what fits');
$r = $t->request($port, GET => '/json-bomb-res');
is($r->{status}, 500, 'res:json of such a text: 500');
open(my $st, '<', "/proc/$pids[0]/status") or die "status of worker $pids[0]: $!";
my ($hwm) = join('', <$st>) =~ /^VmHWM:\s+(\d+) kB/m;
# (ASan's shadow memory alone takes tens of MB; without the measure: 500 MB)
cmp_ok($hwm, '<', 256 * 1024, "the worker never grew past 256 MB ($hwm kB)");
is_deeply([ worker_pids() ], \@pids, 'still the same worker');

# ---- a library buffer refused by the cap gets a collection and one more try -----------
for my $path (qw(/rep-garbage /concat-garbage)) {
    my $before = lua_stats('limited')->{memory};
    $r = $t->request($port, GET => $path);
    is($r->{status}, 200, "$path: a buffer that fits after a collection: 200");
    is($r->{body}, 1 << 20, "$path: with the whole result");
    is(lua_stats('limited')->{memory}, $before, "$path: no memory error counted");
}
is($t->request($port, GET => '/count')->{body}, '4', 'the state was kept');
$mark = $t->log_mark;
my $before = lua_stats('limited')->{memory};
$r = $t->request($port, GET => '/rep-overflow');
is($r->{status}, 500, 'a buffer that does not fit after a collection: 500');
is($r->{json}{error}{message}, 'Lua script ran out of memory', 'says so');
ok($t->wait_log(qr/lua-error: tenant limited, \S+ \S+: memory error in handler/, from => $mark), 'logged');
is(lua_stats('limited')->{memory}, $before + 1, 'counted as a memory error');
is($t->request($port, GET => '/count')->{body}, '1', 'the next request gets a fresh state');
is_deeply([ worker_pids() ], \@pids, 'still the same worker');

# ---- the request accessors' strings, built near the cap, get the same second try ---------
$before = lua_stats('limited')->{memory};
$r = $t->request($port, GET => '/query-garbage?v=' . ('%41' x 16384));
is($r->{status}, 200, 'req:query of a 16 KB decoded value within 6 KB of the cap: 200') or diag($r->{body});
is($r->{body}, 16384, 'with the whole value');
$r = $t->request($port, GET => '/headers-garbage',
                 headers => [ ('N' x 9000) => 'v', 'X-Big' => 'a' x 8000, 'X-Big' => 'b' x 8000 ]);
is($r->{status}, 200, 'req:header joining 16 KB, req:headers lowering a long name, at the cap: 200')
    or diag($r->{body});
is($r->{body}, '16002 true', 'with the whole value and the lowered name');
is(lua_stats('limited')->{memory}, $before, 'no memory error counted');

# ---- req:body() and json.encode measure what is left after a collection ------------------
$before = lua_stats('limited')->{memory};
$r = $t->request($port, POST => '/body-garbage', body => 'b' x (1 << 20));
is($r->{status}, 200, 'req:body() of 1 MB after 3.3 MB of garbage under 4 MB: 200');
is($r->{body}, 1 << 20, 'with the body');
$r = $t->request($port, POST => '/body-garbage', body => 'b' x (1 << 20), chunked => 1);
is($r->{body}, 1 << 20, 'chunked too');
$r = $t->request($port, GET => '/json-garbage');
is($r->{status}, 200, 'json.encode of a 1 MB text after 3.3 MB of garbage: 200');
is($r->{body}, 2 * ((1 << 19) + 2) + 3, 'with the whole text');
$mark = $t->log_mark;
$r = $t->request($port, GET => '/log-big');
is($r->{status}, 200, 'log() of a 1.5 MB text under 4 MB: 200 (only what fits in a line is copied)');
ok($t->wait_log(qr/lua-log: tenant limited: big:\tl{1900,2100}$/m, from => $mark), 'one line of its start');
is(lua_stats('limited')->{memory}, $before, 'no memory error counted');

# ---- stuck in C: the watchdog -------------------------------------------------------------
$mark = $t->log_mark;
my $t0 = Time::HiRes::time();
my ($bytes, $how) = $t->raw($port, "GET /slow-pattern HTTP/1.1\r\nHost: localhost\r\n\r\n", timeout => 10);
my $took = Time::HiRes::time() - $t0;
is($bytes, '', 'a pathological pattern: no answer');
ok($how eq 'eof' || $how eq 'reset', "the connection is closed ($how)");
cmp_ok($took, '>=', 0.9, 'not before hard_timeout');
ok($t->wait_log(qr/lua-watchdog: worker \d+ \(pid $pids[0]\) has been in Lua for \d+ ms \(hard_timeout 1000 ms\): killed/,
                from => $mark), 'the watchdog killed the worker');
ok($t->wait_for(sub { my @p = worker_pids(); @p == 1 && $p[0] != $pids[0] }, timeout => 10),
   'a new worker took its place');
ok($t->wait_for(sub { ($t->request($port, GET => '/count')->{body} // '') eq '1' }), 'and serves');
is($t->request($port, GET => '/count', host => 'other.test')->{body}, '1',
   'the other tenant too (a new process: new states)');

is($t->stop >> 8, 0, 'clean stop');
done_testing;
