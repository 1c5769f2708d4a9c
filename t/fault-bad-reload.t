#!/usr/bin/perl
# A broken configuration, then a fixed one, reloaded under load: each
# broken one (bad YAML values, a Lua script that does not compile) is
# rejected with its errors and the traffic does not notice; the fixed one
# is applied and what it adds answers from then on.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use Keystone::Test;
use Keystone::Load;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');
my $state = $t->dir . '/keystoned.state';
my $dir = $t->dir;

$t->write_file('new.lua', <<'LUA');
router:add_route("GET", "/new", {handler = function(req, res) res:write("new") end})
LUA
$t->write_file('broken.lua', <<'LUA');
router:add_route("GET", "/new", {handler = function(req, res) res:write("new" end})
LUA
my $base = <<"EOF";
server:
  public_addr: 127.0.0.1:$port
  workers: 3
  min_spare: 1
  max_spare: 4
  access_log: "off"
health_defaults:
  interval: 1h
tenants:
  - name: app
    domains: [app.test]
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
$t->write_config($base);
$t->start;
my $gen = Keystone::Load::status($t)->{generation};

my $load = Keystone::Load->start($t, port => $port, conns => 4, duration => 4, timeout => 5000,
    events => 1, specs => [ '3*GET /a app.test', '1*GET /new new.test' ]);
sleep 0.7;

# 1: values of the wrong kind, an unknown key
$t->write_config($base . <<"EOF");
  - name: new
    domains: [new.test]
    retries: many
    upstreams:
      - { name: x, url: "ftp://nowhere", wieght: 3 }
EOF
my ($code, $out, $err) = $t->ctl('-s', $state, 'reload');
is($code, 4, 'a broken configuration: keystonectl reload exits 4');
like($err, qr/configuration invalid \(3 errors\), old configuration kept/, 'it says so');
like($err, qr/keystone\.yaml:\d+:\d+: tenants\[1\]\.retries: .*/, 'each error with file:line:column and key');
like($err, qr/tenants\[1\]\.upstreams\[0\]\.url: .*/, 'the bad URL');
like($err, qr/tenants\[1\]\.upstreams\[0\]\.wieght: unknown key/, 'the unknown key');
my $s = Keystone::Load::status($t);
is($s->{generation}, $gen, 'the generation did not move');
is($s->{reload}{result}, 'failed', 'status: the last reload failed');
like($s->{reload}{message}, qr/^FAILED: 3 errors: /, 'with the errors');
sleep 0.5;

# 2: a script that does not compile
$t->write_config($base . <<"EOF");
  - name: new
    domains: [new.test]
    lua_script: $dir/broken.lua
EOF
($code, $out, $err) = $t->ctl('-s', $state, 'reload');
is($code, 4, 'a script with a syntax error: rejected too');
like($err, qr/broken\.lua:1:.*'\)' expected/, 'with the Lua error and its line');
is(Keystone::Load::status($t)->{generation}, $gen, 'still the same generation');
sleep 0.5;

# 3: fixed
$t->write_config($base . <<"EOF");
  - name: new
    domains: [new.test]
    lua_script: $dir/new.lua
EOF
# the reload is applied somewhere between the call and its answer (the
# script check alone takes a while under the sanitizers): requests that
# ended before the call must miss the tenant, those begun after the
# answer must reach it
my $fixing_at = time;
($code, $out, $err) = $t->ctl('-s', $state, 'reload');
my $fixed_at = time;
is($code, 0, 'the fixed configuration is applied') or diag($err);
like($out, qr/^reload applied: generation @{[ $gen + 1 ]}$/m, 'as the next generation');
my $r = $load->result;

my $app_spec = Keystone::Load::spec($r, 0);
is(Keystone::Load::failed($r), 0, 'no request failed during the three reloads');
is_deeply($app_spec->{statuses}, { 200 => $app_spec->{responses} },
          'the app tenant answered 200 throughout');
my $fixing_ms = $fixing_at * 1000 - $r->{started_ms};
my $fixed_ms = $fixed_at * 1000 - $r->{started_ms};
my @new = grep { $_->[2] == 1 } @{ $r->{events} };
my @before = grep { $_->[1] < $fixing_ms } @new;
my @after = grep { $_->[0] > $fixed_ms + 100 } @new;
cmp_ok(scalar @before, '>', 10, 'requests for the new tenant before the fix ...');
is(scalar(grep { $_->[4] ne '404' } @before), 0, '... all got 404: no such tenant, even during the broken reloads');
cmp_ok(scalar @after, '>', 10, 'and after it ...');
is(scalar(grep { $_->[4] ne '200' } @after), 0, '... all 200 from its Lua handler');
my $log = $t->error_log;
my $failed = () = $log =~ /reload FAILED, keeping generation $gen/g;
is($failed, 2, 'both failures logged, each keeping the generation');
like($log, qr/reload applied: generation @{[ $gen + 1 ]}/, 'and the fix applied');
is($t->stop, 0, 'clean stop');

done_testing;
