#!/usr/bin/perl
# Loading scripts: keystoned -t and keystonectl configtest compile and run
# every script once, so syntax errors, failing top levels and refused
# registrations (bad pattern, unknown upstream, conflicting route) fail
# with file:line; a reload with a broken script keeps the running
# generation; an edited script is reloaded through inotify after the
# debounce (several writes, one reload), with the same all-or-nothing
# check; keystonectl routes lists what the scripts register.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $dir = $t->dir;
my $app = $t->backend(name => 'app');

sub config {
    my ($script, $extra) = @_;
    $extra //= '';
    return <<"EOF";
server:
  public_addr: 127.0.0.1:$port
  workers: 2
  min_spare: 0
  max_spare: 4
  access_log: "off"
lua:
  reload_debounce: 1s
  hard_timeout: 1s
$extra
tenants:
  - name: demo
    lua_script: scripts/$script
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
}

sub check {
    my ($script, $src) = @_;
    $t->write_file("scripts/$script", $src);
    $t->write_file('check.yaml', config($script));
    return $t->run([$t->bin('keystoned'), '-t', '-c', "$dir/check.yaml"]);
}

# ---- keystoned -t ------------------------------------------------------------------------
my ($code, $out, $err) = check('ok.lua', "router:add_route('GET', '/v1', {handler = function(req, res) res:write('v1') end})\n");
is($code, 0, '-t accepts a good script');
is($out, "configuration OK\n", 'and says so');

# limits.max_routes counts the scripts' routes too
$t->write_file('scripts/many.lua', join '', map { "router:add_route('GET', '/r$_', {upstream = 'app'})\n" } 1 .. 4);
$t->write_file('many.yaml', config('many.lua', "limits:\n  max_routes: 3"));
($code, $out, $err) = $t->run([$t->bin('keystoned'), '-t', '-c', "$dir/many.yaml"]);
is($code, 1, 'scripts registering more routes than limits.max_routes fail -t');
like($err, qr{many\.yaml: limits\.max_routes: the tenants' scripts register 4 routes, more than 3}, 'saying so');
$t->write_file('many.yaml', config('many.lua', "limits:\n  max_routes: 4"));
is(($t->run([$t->bin('keystoned'), '-t', '-c', "$dir/many.yaml"]))[0], 0, 'exactly max_routes is fine');

($code, $out, $err) = check('syntax.lua', "local a = 1\nlocal b = \nfunction(\n");
is($code, 1, 'a syntax error fails -t');
like($err, qr{^\Q$dir\E/scripts/syntax\.lua:4: .*near <eof> \(tenant demo\)$}m, 'with file:line and the tenant');

($code, $out, $err) = check('runtime.lua', "\n\nlocal x = nil\nx.y = 1\n");
like($err, qr{scripts/runtime\.lua:4: attempt to index a nil value}, 'a failing top level: file:line');

($code, $out, $err) = check('reg.lua', <<'LUA');
router:add_route("GET", "/a", {upstream = "app"})
router:add_route("GET", "a-b", {upstream = "app"})
router:add_route("GET", "/b", {upstream = "missing"})
router:add_route("GET", "/a", {upstream = "app"})
router:add_route("GET", "/c", {middleware = {"nope"}})
LUA
is($code, 1, 'refused registrations fail -t');
like($err, qr{scripts/reg\.lua:2: pattern "a-b" must start with /}, 'bad pattern: file:line');
like($err, qr{scripts/reg\.lua:3: unknown upstream "missing"}, 'unknown upstream: file:line');
like($err, qr{scripts/reg\.lua:4: GET /a conflicts with route r1 \(GET /a at \S+reg\.lua:1\)}, 'conflict: both places');
like($err, qr{scripts/reg\.lua:5: unknown middleware "nope"}, 'unknown middleware: file:line');
like($err, qr/has 4 errors/, 'every error is reported, not just the first');

# a NUL byte would cut a C string short: refused, never truncated
($code, $out, $err) = check('nul-arg.lua', "router:add_route('GET', '/a\\0b', {upstream = 'app'})\n");
is($code, 1, 'a pattern with a NUL byte fails -t');
like($err, qr{nul-arg\.lua:1: bad argument #\d to 'add_route' \(a NUL byte in the string\)}, 'saying so, with file:line');
($code, $out, $err) = check('nul-opts.lua', <<'LUA');
router:add_route("GET", "/h", {upstream = "app\0x"})
router:add_route("GET", "/i", {upstream = "app", headers = {["X-A"] = "1\0 2"}})
router:add_route("GET", "/j", {upstream = "app", strip_prefix = "/j\0"})
router:add_route("GET", "/k", {handler = "x\0"})
router:add_route("GET", "/l", {upstream = "app", headers = {["X A"] = "1"}})
router:add_route("GET", "/m", {upstream = "app", headers = {["X-A"] = "1\127"}})
router:add_route("GET", "/n", {upstream = "app", headers = {["Transfer-Encoding"] = "chunked"}})
router:add_route("GET", "/o", {upstrem = "app"})
router:add_route("GET", "/p", {"app"})
LUA
is($code, 1, 'route options with NUL bytes fail -t');
like($err, qr{nul-opts\.lua:1: upstream must be the name}, 'a NUL in the upstream name');
like($err, qr{nul-opts\.lua:2: a NUL byte in a header of the route}, 'in a header value');
like($err, qr{nul-opts\.lua:3: strip_prefix "\(with a NUL byte\)" is not a prefix}, 'in strip_prefix');
like($err, qr{nul-opts\.lua:4: a NUL byte in the handler's name}, "in a handler's name");
like($err, qr{nul-opts\.lua:5: bad header name "X A"}, 'and a route header name that is not a token');
like($err, qr{nul-opts\.lua:6: header X-A: control characters are not allowed in a value}, 'and a DEL in a route header value');
like($err, qr{nul-opts\.lua:7: header Transfer-Encoding is set by keystoned}, 'and a framing field as a route header');
like($err, qr{nul-opts\.lua:8: unknown route option "upstrem" \(a route has handler or upstream}, 'a misspelt option');
like($err, qr{nul-opts\.lua:9: unknown route option \(a number key\)}, 'and a list instead of options');

($code, $out, $err) = check('slow.lua', "while true do end\n");
like($err, qr{slow\.lua:1: the script's top level ran longer than 50 ms \(lua_limits\.timeout\)}, 'a top level that loops');
($code, $out, $err) = check('big.lua', "local s = string.rep('x', 64 * 1024 * 1024)\n");
like($err, qr{big\.lua:1: the script's top level needs more than \d+ bytes \(lua_limits\.memory\)}, 'one that eats memory, with its line');
my $t0 = Time::HiRes::time();
($code, $out, $err) = check('stuck.lua', "string.find(string.rep('a', 40), string.rep('a*', 40) .. 'b')\n");
is($code, 1, 'a top level stuck in C fails -t');
like($err, qr{stuck\.lua: the script check did not finish within \d+ ms}, 'the check is killed and says so');
cmp_ok(Time::HiRes::time() - $t0, '<', 8, 'in bounded time');

$t->write_file('missing.yaml', config('nonexistent.lua'));
($code, $out, $err) = $t->run([$t->bin('keystoned'), '-t', '-c', "$dir/missing.yaml"]);
like($err, qr{lua_script: .*nonexistent\.lua}, 'a missing script fails the load');

($code, $out, $err) = $t->ctl('-c', "$dir/check.yaml", 'configtest');
is($code, 4, 'keystonectl configtest runs the same check');
like($err, qr{stuck\.lua}, 'and reports it');

# ---- a running daemon: reload, inotify ------------------------------------------------------
$t->write_file('scripts/live.lua', <<'LUA');
router:add_route("GET", "/v", {handler = function(req, res) res:write("one") end})
LUA
$t->write_config(config('live.lua'));
$t->start;
is($t->request($port, GET => '/v')->{body}, 'one', 'the script serves');

sub generation {
    my ($c, $o) = $t->ctl('-c', "$dir/keystone.yaml", 'status', '-j');
    return $c == 0 ? decode_json($o)->{generation} : -1;
}
is(generation(), 1, 'generation 1');

# a broken script: HUP keeps the old generation and says where
$t->write_file('scripts/broken.lua', "router:add_route('GET', '/v', {upstream = 'nowhere'})\n");
$t->write_config(config('broken.lua'));
my $mark = $t->log_mark;
$t->signal('HUP');
ok($t->wait_log(qr/reload FAILED, keeping generation 1/, from => $mark), 'a broken script fails the reload');
ok($t->wait_log(qr{config: \S+broken\.lua:1: unknown upstream "nowhere" .*\(tenant demo\)$}m, from => $mark),
   'with file:line in the log');
($code, $out, $err) = $t->ctl('-c', "$dir/keystone.yaml", 'reload');
is($code, 4, 'keystonectl reload: configuration invalid');
like($err, qr{broken\.lua:1: unknown upstream}, 'with the reason');
is($t->request($port, GET => '/v')->{body}, 'one', 'the old script still serves');
$t->write_config(config('live.lua'));
$t->signal('HUP');
ok($t->wait_for(sub { generation() == 2 }), 'back to the good config');

# inotify: edit the script, no HUP
$mark = $t->log_mark;
$t->write_file('scripts/live.lua', <<'LUA');
router:add_route("GET", "/v", {handler = function(req, res) res:write("two") end})
router:add_route("GET", "/new", {handler = function(req, res) res:write("new route") end})
LUA
ok($t->wait_log(qr{lua-watch: \S+live\.lua changed: reloading}, from => $mark), 'the change is seen');
ok($t->wait_for(sub { ($t->request($port, GET => '/new')->{body} // '') eq 'new route' }),
   'the new route serves without a HUP');
is($t->request($port, GET => '/v')->{body}, 'two', 'and the changed one');
my $gen = generation();

# several writes in a row: one reload after the quiet time
$mark = $t->log_mark;
for my $i (1 .. 5) {
    $t->write_file('scripts/live.lua',
        "router:add_route('GET', '/v', {handler = function(req, res) res:write('w$i') end})\n");
    Time::HiRes::sleep(0.05);
}
ok($t->wait_for(sub { ($t->request($port, GET => '/v')->{body} // '') eq 'w5' }), 'the last write serves');
# (a debounce of 1 s: writes 50 ms apart stay within it even when a loaded
# machine runs this script late; wait one more debounce for a stray reload)
Time::HiRes::sleep(1.2);
my $reloads = () = substr($t->error_log, $mark) =~ /lua-watch: \S+ changed: reloading/g;
is($reloads, 1, 'five writes within the debounce: one reload');
is(generation(), $gen + 1, 'one new generation');

# an editor that saves by renaming a new file over the old one
$mark = $t->log_mark;
$t->write_file('scripts/.live.lua.swp', "router:add_route('GET', '/v', {handler = function(req, res) res:write('renamed') end})\n");
rename("$dir/scripts/.live.lua.swp", "$dir/scripts/live.lua") or die $!;
ok($t->wait_for(sub { ($t->request($port, GET => '/v')->{body} // '') eq 'renamed' }), 'a rename over the script is seen');

# a broken edit: the reload fails, the old script serves on
$mark = $t->log_mark;
$t->write_file('scripts/live.lua', "router:add_route('GET', '/v' {\n");
ok($t->wait_log(qr/reload FAILED/, from => $mark), 'a broken edit fails the reload');
ok($t->wait_log(qr{live\.lua:1: .*\(tenant demo\)}, from => $mark), 'with file:line');
is($t->request($port, GET => '/v')->{body}, 'renamed', 'the previous script still serves');

# ---- keystonectl routes ----------------------------------------------------------------------
$t->write_file('scripts/live.lua', <<'LUA');
router:handler("named", function(req, res) res:write("named") end)
router:add_route("GET", "/fn", {handler = function(req, res) end})
router:add_route("POST", "/named", {handler = "named"})
router:add_route("*", "/api/*", {upstream = "app"})
router:add_route("GET", "/balanced")
LUA
ok($t->wait_for(sub { ($t->request($port, POST => '/named')->{body} // '') eq 'named' }), 'reloaded');
($code, $out) = $t->ctl('-c', "$dir/keystone.yaml", 'routes');
is($code, 0, 'keystonectl routes');
like($out, qr{^demo\s+r1\s+static\s+GET\s+/fn\s+lua function$}m, 'a function route');
like($out, qr{^demo\s+r2\s+static\s+POST\s+/named\s+handler named$}m, 'a named handler');
like($out, qr{^demo\s+r3\s+static\s+\*\s+/api/\*\s+upstream app$}m, 'a proxy route');
like($out, qr{^demo\s+r4\s+static\s+GET\s+/balanced\s+balanced upstreams$}m, 'a balanced one');
($code, $out) = $t->ctl('-c', "$dir/keystone.yaml", 'routes', '-j');
my $j = decode_json($out);
is(scalar @{ $j->{routes} }, 4, 'routes -j: every route');
is_deeply([ map { $_->{source} } @{ $j->{routes} } ], [ ('static') x 4 ], 'all static');
is($j->{routes}[2]{upstream}, 'app', 'with the upstream');

is($t->stop >> 8, 0, 'clean stop');

# ---- the master dies while a reload's check is stuck: nothing lingers ---------------------------
$t->write_file('scripts/live.lua', "router:add_route('GET', '/v', {handler = function(req, res) res:write('x') end})\n");
my $master = $t->start;
my @before = $t->processes_of($master);
$t->write_file('scripts/live.lua', "string.find(string.rep('a', 40), string.rep('a*', 40) .. 'b')\n");
my @children;
ok($t->wait_for(sub { @children = $t->processes_of($master); @children > @before }),
   'the reload\'s script check runs in a child');
kill 'KILL', $master;
ok($t->wait_for(sub { !grep { $t->alive($_) } @children }, timeout => 5),
   'killing the master: the workers and the stuck check child all go')
    or diag(join ' ', map { "$_:" . ($t->alive($_) ? 'alive' : 'gone') . ':' . `cat /proc/$_/cmdline 2>/dev/null | tr '\\0' ' '` } @children);
done_testing;
