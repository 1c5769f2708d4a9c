#!/usr/bin/perl
# The admin API's runtime routes, as an operator and an attacker see them:
# the admin token never in the state file (which the status group reads),
# and a reload that changes it applies to the running workers.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $admin = $t->free_port;
my $dir = $t->dir;
my $state = "$dir/keystoned.state";
my $app = $t->backend(name => 'app');
my $lua_script = <<'LUA';
router:add_route("POST", "/add", {handler = function(req, res)
    res:json(router:add_route("GET", req:body(), {upstream = "app"}))
end})
router:add_route("GET", "/list", {handler = function(req, res) res:json(router:list_routes()) end})
LUA
$t->write_file('lua.lua', $lua_script);

sub config {
    my (%o) = @_;
    my $token = $o{token} // 'FIRST-admin-TOKEN-7f3a';
    my $token_line = $o{no_token} ? '' : "  admin_token: $token\n";
    my $rate = $o{rate} // 100;
    my $limits = $o{table} ? "limits:\n  route_table_size: $o{table}\n" : '';
    return <<"EOF";
server:
  public_addr: 127.0.0.1:$port
  admin_addr: 127.0.0.1:$admin
$token_line  workers: 2
  min_spare: 0
  max_spare: 2
  max_workers: 2
  access_log: "off"
${limits}dynamic_routing:
  max_changes_per_minute: $rate
tenants:
  - name: shop
    domains: [shop.test]
    dynamic_routing_enabled: true
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
  - name: lua
    domains: [lua.test]
    lua_script: lua.lua
    dynamic_routing_enabled: true
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
}
$t->write_config(config());
$t->start;

sub admin_req {
    my ($method, $path, %o) = @_;
    my @h = defined $o{token} ? (Authorization => "Bearer $o{token}") : ();
    push @h, @{ $o{headers} } if $o{headers};
    return $t->request($o{port} // $admin, $method => $path, headers => [ @h ],
                       exists $o{body} ? (body => $o{body}) : ());
}
sub state_bytes {
    open my $fh, '<:raw', $state or return '';
    local $/;
    return <$fh>;
}

# ---- the admin token is not in the state file -------------------------------------------------
my $bytes = state_bytes();
cmp_ok(length $bytes, '>', 0, 'the state file is readable');
ok(index($bytes, 'FIRST-admin-TOKEN-7f3a') < 0, 'the state file does not hold the admin token');
is(admin_req(GET => '/routes')->{status}, 401, 'GET /routes without the token: 401');
is(admin_req(GET => '/routes', token => 'wrong')->{status}, 401, 'a wrong token: 401');
is(admin_req(GET => '/routes', token => 'FIRST-admin-TOKEN-7f3')->{status}, 401, 'a prefix of the token: 401');
is(admin_req(GET => '/routes', token => 'FIRST-admin-TOKEN-7f3a')->{status}, 200, 'the token: 200');

# a reload that changes the token applies to the workers already running
my @workers = $t->processes_of($t->master_pid);
is(scalar @workers, 2, 'two workers');
$t->write_config(config(token => 'SECOND-admin-TOKEN-91c2'));
my $mark = $t->log_mark;
$t->signal('HUP');
ok($t->wait_log(qr/reload applied/, from => $mark), 'a reload with a new token');
is_deeply([ $t->processes_of($t->master_pid) ], \@workers, 'keeps the same workers');
for my $i (1 .. 4) {    # more requests than workers: each one has seen the new table
    is(admin_req(GET => '/routes', token => 'FIRST-admin-TOKEN-7f3a')->{status}, 401, "the old token is refused ($i)");
    is(admin_req(GET => '/routes', token => 'SECOND-admin-TOKEN-91c2')->{status}, 200, "the new one is taken ($i)");
}
$bytes = state_bytes();
ok(index($bytes, 'SECOND-admin-TOKEN-91c2') < 0, 'the new token is not in the state file either');
ok(index($bytes, 'FIRST-admin-TOKEN-7f3a') < 0, 'nor the old one');
my $r = admin_req(POST => '/tenants/shop/routes', token => 'SECOND-admin-TOKEN-91c2',
                  body => '{"method":"GET","pattern":"/t1","upstream":"app"}');
is($r->{status}, 201, 'a change with the new token: 201');

my $tok = 'SECOND-admin-TOKEN-91c2';
sub dyn_ids {
    my $r = admin_req(GET => '/routes', token => $tok);
    return [ sort map { "$_->{id} $_->{pattern}" } grep { $_->{source} eq 'dynamic' } @{ $r->{json}{routes} } ];
}

# ---- a change nobody waits for any more is not applied --------------------------------------
# with the master stopped, the worker gives up after 2 s; the master,
# resumed, reads the change after its requester's deadline and drops it
$mark = $t->log_mark;
kill 'STOP', $t->master_pid;
$r = admin_req(POST => '/tenants/shop/routes', token => $tok,
               body => '{"method":"GET","pattern":"/late","upstream":"app"}');
kill 'CONT', $t->master_pid;
is($r->{status}, 503, 'a change the stopped master does not answer: 503');
like($r->{json}{error}{message}, qr/no answer from keystoned within 2000 ms; the change may still be applied: check GET/,
     'saying the outcome is unknown');
ok($t->wait_log(qr{lua-route: tenant shop: runtime route add not applied: read \d+ ms after its requester's deadline},
                from => $mark),
   'the resumed master drops it, and says so');
is_deeply(dyn_ids(), [ 'd1 /t1' ], 'the late route is not live');
$r = admin_req(POST => '/tenants/shop/routes', token => $tok,
               body => '{"method":"GET","pattern":"/late","upstream":"app"}');
is($r->{status}, 201, 'the same change, answered in time: 201');
is_deeply(dyn_ids(), [ 'd1 /t1', 'd2 /late' ], 'and live');

# the same from Lua: router:add_route at request time
$mark = $t->log_mark;
kill 'STOP', $t->master_pid;
$r = $t->request($port, POST => '/add', host => 'lua.test', body => '/lua-late');
kill 'CONT', $t->master_pid;
ok(!$r->{json}{ok}, 'router:add_route the stopped master does not answer: not ok');
like($r->{json}{error}, qr/no answer from keystoned within 2000 ms; the change may still be applied/,
     'saying the outcome is unknown');
ok($t->wait_log(qr{lua-route: tenant lua: runtime route add not applied}, from => $mark),
   'the resumed master drops it');
$r = $t->request($port, GET => '/list', host => 'lua.test');
is(scalar(grep { $_->{source} eq 'dynamic' } @{ $r->{json} }), 0, 'the late route is not live');

# ---- a route's JSON: every key known, none twice, no middleware ------------------------------
for my $c ([ '{"method":"GET","pattern":"/shop/u17","upstream":"app","middleware":["a"]}',
             qr/"middleware": a runtime route has no middleware/, 'middleware' ],
           [ '{"method":"GET","pattern":"/shop/u17","middleware":[]}', qr/"middleware": a runtime route has no middleware/,
             'an empty middleware list' ],
           [ '{"method":"GET","pattern":"/shop/u17","bogus":1}', qr/unknown key "bogus"/, 'an unknown key' ],
           [ '{"method":"GET","pattern":"/shop/u17","Upstream":"app"}', qr/unknown key "Upstream"/, 'a key in another case' ],
           [ '{"method":"GET","pattern":"/shop/u17","method":"POST"}', qr/duplicate key "method"/, 'a duplicate key' ],
           [ '{"method":"GET","pattern":"/shop/u17","\\u006dethod":"POST"}', qr/duplicate key "method"/,
             'a duplicate key spelled with an escape' ],
           [ '{"method":"GET","pattern":"/shop/u17","headers":{"X-A":"1"},"headers":{"X-B":"2"}}',
             qr/duplicate key "headers"/, 'a duplicate object key' ]) {
    my ($body, $re, $what) = @$c;
    $r = admin_req(POST => '/tenants/shop/routes', token => $tok, body => $body);
    is($r->{status}, 400, "$what: 400");
    like($r->{json}{error}{message}, $re, "$what: naming the key");
}
$r = admin_req(POST => '/tenants/shop/routes', token => $tok,
               body => '{"method":"GET","pattern":"/nested","upstream":"app","headers":{"method":"x","X-Y":"a,\\"b"}}');
is($r->{status}, 201, 'keys inside headers are header names, not route keys: 201');
is_deeply(dyn_ids(), [ 'd1 /t1', 'd2 /late', 'd3 /nested' ], 'no refused route went live');

# ---- route header values are shown only to a request with the token ------------------------------
$r = admin_req(POST => '/tenants/shop/routes', token => $tok,
               body => '{"method":"GET","pattern":"/secret","upstream":"app","headers":{"Authorization":"Bearer UPSTREAM-SECRET"}}');
is($r->{status}, 201, 'a route with an Authorization header for its upstream');
sub secret_route {
    my ($r) = @_;
    my ($s) = grep { $_->{pattern} eq '/secret' } @{ $r->{json}{routes} // [] };
    return $s;
}
$r = admin_req(GET => '/routes', token => $tok);
is_deeply(secret_route($r)->{headers}, { Authorization => 'Bearer UPSTREAM-SECRET' },
          'GET /routes with the token shows the header value');
$r = admin_req(GET => '/admin/routes', token => $tok, port => $port);
is_deeply(secret_route($r)->{headers}, { Authorization => 'Bearer UPSTREAM-SECRET' },
          'so does GET /admin/routes on the public listener with the token');
my ($code, $out) = $t->ctl('-c', "$dir/keystone.yaml", 'routes', '-j');
like($out, qr/UPSTREAM-SECRET/, 'keystonectl routes -j (state file read access) shows it');
is($t->request($port, GET => '/secret', host => 'shop.test')->{status}, 200, 'the route serves');

$t->write_config(config(no_token => 1));
$mark = $t->log_mark;
$t->signal('HUP');
ok($t->wait_log(qr/reload applied/, from => $mark), 'a reload without an admin token');
for my $c ([ $port, '/admin/routes', 'the public listener' ], [ $admin, '/routes', 'the admin listener' ]) {
    my ($p, $path, $where) = @$c;
    $r = admin_req(GET => $path, port => $p);
    is($r->{status}, 200, "GET routes on $where without a token: 200");
    unlike($r->{body}, qr/UPSTREAM-SECRET/, "$where: the header value is not shown");
    is_deeply(secret_route($r)->{headers}, { Authorization => '***' }, "$where: masked, the name kept");
    $r = admin_req(GET => $path, port => $p, token => $tok);
    unlike($r->{body}, qr/UPSTREAM-SECRET/, "$where: a token that is no longer the admin token shows nothing");
}

# ---- 429 says when to come back ------------------------------------------------------------------
$t->write_config(config(token => $tok, rate => 2));
$mark = $t->log_mark;
$t->signal('HUP');
ok($t->wait_log(qr/reload applied/, from => $mark), 'a reload to 2 changes a minute');
for my $p ('/rate1', '/rate2') {
    is(admin_req(POST => '/tenants/shop/routes', token => $tok,
                 body => qq({"method":"GET","pattern":"$p","upstream":"app"}))->{status}, 201, "change $p: 201");
}
$r = admin_req(POST => '/tenants/shop/routes', token => $tok, body => '{"method":"GET","pattern":"/rate3","upstream":"app"}');
is($r->{status}, 429, 'the third change: 429');
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, 'with Retry-After in seconds');
# two tokens a minute, both just spent: the next is about 30 s away
cmp_ok($r->{headers}{'retry-after'} // 0, '>=', 25, 'the time to the next token (at least)');
cmp_ok($r->{headers}{'retry-after'} // 99, '<=', 30, 'the time to the next token (at most)');
like($r->{json}{error}{message}, qr/^tenant shop made more than 2 route changes/, 'the message without the wire prefix');
$r = admin_req(DELETE => '/tenants/shop/routes/d1', token => $tok);
is($r->{status}, 429, 'a delete too: 429');
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, 'with Retry-After');

# ---- a change the full table cannot take is undone, and the log says so --------------------------
# pad the script (its source is in the table) so the table fills 64KB
# but for about 600 bytes, then add a route with 1000 bytes of headers
sub table_bytes {
    my @sizes = $t->error_log =~ /route table published: generation \d+, (\d+) bytes/g;
    return $sizes[-1];
}
my $size = table_bytes();
my $pad = 65536 - 600 - $size;
cmp_ok($pad, '>', 0, "the table ($size bytes) has room for padding");
$t->write_file('lua.lua', $lua_script . '-- ' . ('x' x $pad) . "\n");
$t->write_config(config(token => $tok, rate => 2, table => 65536));
$mark = $t->log_mark;
$t->signal('HUP');
ok($t->wait_log(qr/reload applied/, from => $mark), 'a reload to a 64KB table, nearly full');
ok($t->wait_for(sub { my $b = table_bytes(); $b > 65536 - 1000 && $b < 65536 }), 'the table nearly fills it');
$mark = $t->log_mark;
my $big = encode_json({ method => 'GET', pattern => '/big', upstream => 'app', headers => { 'X-Pad' => 'p' x 1000 } });
$r = admin_req(POST => '/tenants/lua/routes', token => $tok, body => $big);
is($r->{status}, 507, 'a route the table has no room for: 507');
like($r->{json}{error}{message}, qr/needs more than limits.route_table_size/, 'saying why');
ok($t->wait_log(qr{lua-route: tenant lua: runtime route d\d+ added: GET /big: undone, not published: the route table needs more},
                from => $mark), 'the log says the add was undone');
unlike($t->error_log($mark), qr{runtime route d\d+ added: GET /big$}m, 'and never that it was added');
$r = admin_req(POST => '/tenants/lua/routes', token => $tok, body => '{"method":"GET","pattern":"/small","upstream":"app"}');
is($r->{status}, 201, 'a small route still fits: 201 (the undone add cost no token)');
ok($t->wait_log(qr{lua-route: tenant lua: runtime route (d\d+) added: GET /small$}m, from => $mark),
   'logged as added once published');

# ---- two Authorization headers: 400 ---------------------------------------------------------------
for my $c ([ GET => '/routes' ], [ POST => '/tenants/lua/routes' ], [ DELETE => '/tenants/lua/routes/d1' ]) {
    my ($m, $path) = @$c;
    $r = admin_req($m => $path, token => $tok, headers => [ Authorization => "Bearer $tok" ],
                   $m eq 'POST' ? (body => '{"method":"GET","pattern":"/twice","upstream":"app"}') : ());
    is($r->{status}, 400, "$m with two Authorization headers: 400");
    like($r->{json}{error}{message}, qr/more than one Authorization header/, "$m: saying why");
}
$r = admin_req(GET => '/routes', headers => [ Authorization => "Bearer wrong", Authorization => "Bearer $tok" ]);
is($r->{status}, 400, 'a wrong token then the right one: 400, the second is not tried');
ok(!grep({ $_ eq '/twice' } map { $_->{pattern} } @{ admin_req(GET => '/routes', token => $tok)->{json}{routes} }),
   'the refused POST added nothing');

# ---- max_changes_per_minute: 0 switches changes off: 403 (not 429: waiting does not help) --------
$t->write_config(config(token => $tok, rate => 0, table => 65536));
$mark = $t->log_mark;
$t->signal('HUP');
ok($t->wait_log(qr/reload applied/, from => $mark), 'a reload to max_changes_per_minute: 0');
$r = admin_req(POST => '/tenants/lua/routes', token => $tok, body => '{"method":"GET","pattern":"/off","upstream":"app"}');
is($r->{status}, 403, 'a change with changes off: 403');
like($r->{json}{error}{message}, qr/runtime route changes are off \(dynamic_routing.max_changes_per_minute is 0\)/,
     'saying why');
ok(!defined $r->{headers}{'retry-after'}, 'and no Retry-After');

is($t->stop >> 8, 0, 'clean stop');
done_testing;
