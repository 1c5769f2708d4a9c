#!/usr/bin/perl
# Runtime routes: added from Lua at request time and through the admin
# API, checked by the master (dynamic_routing_enabled, handler names,
# upstreams, conflicts, the per-tenant rate), published to every worker
# (each of three workers holding a keep-alive connection serves the new
# route on its next request), deleted, listed with source dynamic, kept
# by a reload that still allows them and dropped by one that does not.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $admin = $t->free_port;
my $dir = $t->dir;
my $app = $t->backend(name => 'app');
my $v2 = $t->backend(name => 'v2');
my $token = 'test-admin-token';

$t->write_file('dyn.lua', <<'LUA');
router:handler("hello", function(req, res) res:write("hello " .. req:param("name")) end)
router:add_route("GET", "/static", {handler = function(req, res) res:write("static") end})
router:add_route("POST", "/add", {handler = function(req, res)
    local spec = json.decode(req:body())
    local opts = {handler = spec.handler, upstream = spec.upstream}
    if spec.fn then opts.handler = function() end end
    res:json(router:add_route(spec.method, spec.pattern, opts))
end})
router:add_route("POST", "/del", {handler = function(req, res)
    res:json(router:delete_route(req:body()))
end})
router:add_route("GET", "/list", {handler = function(req, res) res:json(router:list_routes()) end})
LUA
$t->write_file('locked.lua', <<'LUA');
router:add_route("POST", "/add", {handler = function(req, res)
    res:json(router:add_route("GET", "/x", {upstream = "app"}))
end})
LUA

sub config {
    my (%o) = @_;
    my $plain_v2 = $o{no_v2} ? '' : "      - { name: v2, url: \"http://@{[ $v2->addr ]}\" }\n";
    return <<"EOF";
server:
  public_addr: 127.0.0.1:$port
  admin_addr: 127.0.0.1:$admin
  admin_token: $token
  workers: 4
  min_spare: 0
  max_spare: 4
  max_workers: 4
  idle_timeout: 30s
  access_log: "off"
dynamic_routing:
  max_changes_per_minute: 5
tenants:
  - name: demo
    lua_script: dyn.lua
    dynamic_routing_enabled: true
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
  - name: plain
    domains: [plain.test]
    dynamic_routing_enabled: true
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
$plain_v2  - name: locked
    domains: [locked.test]
    lua_script: locked.lua
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
}
$t->write_config(config());
$t->start;

sub status_json {
    my ($code, $out) = $t->ctl('-c', "$dir/keystone.yaml", 'status', '-j');
    return $code == 0 ? decode_json($out) : undef;
}
sub admin_req {
    my ($method, $path, %o) = @_;
    my @h = $o{token} // 1 ? (Authorization => "Bearer " . ($o{token} // $token)) : ();
    return $t->request($o{port} // $admin, $method => $path, headers => [ @h ],
                       exists $o{body} ? (body => $o{body}) : ());
}
sub lua_add {
    my (%spec) = @_;
    return $t->request($port, POST => '/add', body => encode_json(\%spec), host => $spec{host} // 'localhost')->{json};
}

# ---- three workers, each holding a keep-alive connection ----------------------------------
my @conns = map { $t->conn($port) } 1 .. 3;
for my $c (@conns) {
    is($c->request(GET => '/static', headers => [ Connection => 'keep-alive' ])->{body}, 'static', 'a held connection');
}
ok($t->wait_for(sub { my $s = status_json(); $s && $s->{workers}{busy} >= 3 }),
   'three workers busy with the held connections');

# ---- from Lua -------------------------------------------------------------------------------
my $r = $conns[0]->request(POST => '/add', body => encode_json({ method => 'GET', pattern => '/dyn/{name}', handler => 'hello' }),
                           headers => [ Connection => 'keep-alive' ]);
is_deeply($r->{json}, { ok => JSON::PP::true, id => 'd1' }, 'router:add_route at request time: {ok = true, id}');
for my $i (0 .. 2) {
    $r = $conns[$i]->request(GET => '/dyn/bob', headers => [ Connection => 'keep-alive' ]);
    is($r->{body}, 'hello bob', "worker $i serves the new route on its next request");
}
$_->close for @conns;

my $list = $t->request($port, GET => '/list')->{json};
my ($d1) = grep { $_->{id} eq 'd1' } @$list;
is_deeply($d1, { id => 'd1', method => 'GET', pattern => '/dyn/{name}', source => 'dynamic', handler => 'hello' },
          'router:list_routes shows it as dynamic');
my ($s1) = grep { $_->{id} eq 'r1' } @$list;
is($s1->{source}, 'static', 'and the script\'s own as static');

my $j = lua_add(method => 'GET', pattern => '/fn', fn => 1);
ok(!$j->{ok}, 'a runtime route cannot take a function');
like($j->{error}, qr/cannot take a function/, 'saying so');
$j = lua_add(method => 'GET', pattern => '/static', upstream => 'app');
ok(!$j->{ok}, 'a runtime route conflicting with the script\'s');
like($j->{error}, qr{GET /static conflicts with the script's route r1}, 'is refused by the master');
$j = lua_add(method => 'GET', pattern => '/x', handler => 'nope');
like($j->{error}, qr/unknown handler "nope"/, 'an unknown handler is refused');
$j = lua_add(method => 'GET', pattern => '/x', upstream => 'nope');
like($j->{error}, qr/unknown upstream "nope"/, 'an unknown upstream too');
$j = lua_add(method => 'GET', pattern => 'x{', upstream => 'app');
like($j->{error}, qr/must start with/, 'a bad pattern too');
$r = $t->request($port, POST => '/add', host => 'locked.test');
like($r->{json}{error}, qr/dynamic_routing_enabled/, 'a tenant without dynamic_routing_enabled cannot');
$r = $t->request($port, POST => '/del', body => 'r1');
like($r->{json}{error}, qr/only runtime routes can be deleted/, 'the script\'s routes cannot be deleted at run time');

# ---- the admin API ------------------------------------------------------------------------------
$r = $t->request($admin, GET => '/routes');
is($r->{status}, 401, 'GET /routes without the token: 401');
is($r->{headers}{'www-authenticate'}, 'Bearer', 'asking for a bearer token');
is($r->{headers}{'cache-control'}, 'no-store', 'the 401 envelope is not cached');
$r = admin_req(GET => '/routes', token => 'wrong');
is($r->{status}, 401, 'a wrong token: 401');
$r = admin_req(GET => '/routes');
is($r->{status}, 200, 'GET /routes with the token');
my ($dd1) = grep { $_->{id} eq 'd1' } @{ $r->{json}{routes} };
is($dd1->{source}, 'dynamic', 'lists the runtime route');
is($dd1->{tenant}, 'demo', 'with its tenant');
is(scalar(grep { $_->{source} eq 'static' } @{ $r->{json}{routes} }), 5, 'and the scripts\' routes');

my $spec = encode_json({ method => 'get', pattern => '/v2/*', upstream => 'v2', strip_prefix => JSON::PP::true,
                         headers => { 'X-Dyn' => 'yes' }, timeout => '2s' });
$r = $t->request($port, POST => '/admin/tenants/plain/routes', body => $spec,
                 headers => [ Authorization => "Bearer $token" ]);
is($r->{status}, 403, 'POST on the public listener: 403');
like($r->{json}{error}{message}, qr/only served on the admin listener/, 'saying why');
$r = admin_req(POST => '/tenants/plain/routes', body => $spec, token => 'wrong');
is($r->{status}, 401, 'POST with a wrong token: 401');
$r = admin_req(POST => '/tenants/plain/routes', body => $spec);
is($r->{status}, 201, 'POST /tenants/plain/routes: 201');
is($r->{json}{id}, 'd2', 'with the id');
cmp_ok($r->{json}{generation}, '>', 2, 'and the generation that publishes it');
$r = $t->request($port, GET => '/v2/a/b', host => 'plain.test');
is($r->{json}{name}, 'v2', 'a tenant without a script serves the runtime route: its upstream');
is($r->{json}{target}, '/a/b', 'stripped');
my %up = map { lc($_->[0]) => $_->[1] } @{ $r->{json}{headers} };
is($up{'x-dyn'}, 'yes', 'with its headers');

$r = admin_req(POST => '/tenants/plain/routes', body => $spec);
is($r->{status}, 409, 'the same route again: 409');
$r = admin_req(POST => '/tenants/plain/routes', body => '{"method":');
is($r->{status}, 400, 'bad JSON: 400');
$r = admin_req(POST => '/tenants/plain/routes', body => '{"method":"GET","pattern":"/q","upstream":"zz"}');
is($r->{status}, 400, 'unknown upstream: 400');
$r = admin_req(POST => '/tenants/plain/routes', body => '{"method":"GET","pattern":"/q\\u0000x","upstream":"v2"}');
is($r->{status}, 400, 'a pattern with a NUL byte: 400, not a route cut short');
like($r->{body}, qr/without NUL bytes/, 'saying why');
$r = admin_req(POST => '/tenants/nobody/routes', body => '{"method":"GET","pattern":"/q"}');
is($r->{status}, 404, 'unknown tenant: 404');
$r = admin_req(POST => '/tenants/locked/routes', body => '{"method":"GET","pattern":"/q"}');
is($r->{status}, 403, 'a tenant without dynamic_routing_enabled: 403');
$r = admin_req(PUT => '/tenants/plain/routes', body => '{}');
is($r->{status}, 405, 'another method: 405');
is($r->{headers}{allow}, 'POST', 'with Allow');
is($r->{headers}{'cache-control'}, 'no-store', 'and no-store');

$r = admin_req(DELETE => '/tenants/plain/routes/d2');
is($r->{status}, 200, 'DELETE /tenants/plain/routes/d2');
$r = $t->request($port, GET => '/v2/a/b', host => 'plain.test');
%up = map { lc($_->[0]) => $_->[1] } @{ $r->{json}{headers} };
ok(!exists $up{'x-dyn'}, 'the route is gone');
$r = admin_req(DELETE => '/tenants/plain/routes/d2');
is($r->{status}, 404, 'deleting it again: 404');

# ---- the rate: 5 changes a minute per tenant ------------------------------------------------
# plain has made 2 (add d2, delete d2); 3 more pass, the next is refused
for my $c ([ '/r3', 'app' ], [ '/r4', 'app' ], [ '/keep-v2', 'v2' ]) {
    my ($p, $u) = @$c;
    is(admin_req(POST => '/tenants/plain/routes', body => qq({"method":"GET","pattern":"$p","upstream":"$u"}))->{status},
       201, "change to $p accepted");
}
$r = admin_req(POST => '/tenants/plain/routes', body => '{"method":"GET","pattern":"/r6","upstream":"app"}');
is($r->{status}, 429, 'the sixth change in a minute: 429');
like($r->{json}{error}{message}, qr/more than 5 route changes/, 'saying why');
$j = lua_add(method => 'GET', pattern => '/demo2', handler => 'hello');
ok($j->{ok}, 'another tenant has its own rate');

my ($plain) = grep { $_->{name} eq 'plain' } @{ status_json()->{tenants} };
is($plain->{lua}{route_changes}, 5, 'route changes are counted per tenant');

# ---- listing and reloads --------------------------------------------------------------------
my ($code, $out) = $t->ctl('-c', "$dir/keystone.yaml", 'routes');
like($out, qr{^plain\s+d3\s+dynamic\s+GET\s+/r3\s+upstream app$}m, 'keystonectl routes lists runtime routes');
like($out, qr{^demo\s+d1\s+dynamic\s+GET\s+/dyn/\{name\}\s+handler hello$}m, 'with their target');

my $mark = $t->log_mark;
$t->signal('HUP');
ok($t->wait_log(qr/reload applied/, from => $mark), 'a reload');
is($t->request($port, GET => '/dyn/eve')->{body}, 'hello eve', 'keeps the runtime routes');
is($t->request($port, GET => '/r3', host => 'plain.test')->{json}{target}, '/r3', 'all of them');

# a reload that removes plain's v2 upstream drops the route naming it
is($t->request($port, GET => '/keep-v2', host => 'plain.test')->{json}{name}, 'v2', 'd5 goes to v2');
$t->write_config(config(no_v2 => 1));
$mark = $t->log_mark;
$t->signal('HUP');
ok($t->wait_log(qr/reload applied/, from => $mark), 'a reload without plain\'s v2');
ok($t->wait_log(qr/lua-route: runtime route d5 of tenant plain dropped by the reload: unknown upstream "v2"/,
                from => $mark), 'drops the route to it, and says so');
($code, $out) = $t->ctl('-c', "$dir/keystone.yaml", 'routes', '-j');
my @dyn = map { $_->{id} } grep { $_->{source} eq 'dynamic' } @{ decode_json($out)->{routes} };
is_deeply([ sort @dyn ], [ qw(d1 d3 d4 d6) ], 'routes whose tenant and upstream remain survive');

is($t->stop >> 8, 0, 'clean stop');
done_testing;
