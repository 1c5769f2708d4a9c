#!/usr/bin/perl
# Request loops: the gateway adds a Via naming itself to what it sends
# upstream and to a script's http.request; a request that comes back
# through it a fourth time is answered 508 Loop Detected, so an upstream
# or a script pointing at the gateway itself costs a few workers for a
# moment instead of all of them until the timeouts.
use strict;
use warnings;
use Test::More;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');

$t->write_file('self.lua', <<"LUA");
router:add_route("GET", "/self", {handler = function(req, res)
    -- calls this very route on its own gateway, for ever if let
    local r, err = http.request{url = "http://127.0.0.1:$port/self", timeout = "5s"}
    if not r then error(err) end
    res:write(r.status == 200 and "+" .. r.body or tostring(r.status))
end})
router:add_route("GET", "/other", {handler = function(req, res)
    -- another tenant of the same gateway: two passes, allowed
    local r = http.request{url = "http://127.0.0.1:$port/app/x"}
    res:write(tostring(r.status) .. " " .. json.decode(r.body).target)
end})
LUA
$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 4
  min_spare: 1
  max_spare: 8
  max_workers: 8
  access_log: "off"
health_defaults:
  interval: 1h
  max_fails: 0
tenants:
  - name: loop
    base_path: /loop
    upstreams:
      - { name: itself, url: "http://127.0.0.1:$port" }
  - name: app
    base_path: /app
    strip_base_path: true
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
  - name: scripted
    lua_script: self.lua
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
$t->start;

my $mark = $t->log_mark;
my $r = $t->request($port, GET => '/loop/a');
is($r->{status}, 508, 'an upstream that is the gateway itself: 508');
like($r->{json}{error}{message}, qr/request loop/, 'which says why');
ok($t->wait_log(qr/\[warn\] \d+ loop: GET localhost\/loop\/a \(request \S+\) came back through this gateway 3 times: .*answered 508/,
                from => $mark), 'and logged as a warning')
    or diag $t->error_log;

$r = $t->request($port, GET => '/self');
is($r->{status}, 200, 'a script calling itself through the gateway: answered');
is($r->{body}, '++508', 'after two more passes, the third call gets 508');

$r = $t->request($port, GET => '/other');
is($r->{body}, '200 /x', 'a script calling another tenant of its gateway is served');

$r = $t->request($port, GET => '/app/y', headers => [ Via => '1.1 a, 1.1 b, 1.1 c, 1.1 d' ]);
is($r->{status}, 200, 'Via fields of other proxies do not count');

unlike($t->error_log, qr/worker-exit: .*status (?:killed by signal|exit [1-9])/, 'no worker died');
is($t->stop >> 8, 0, 'clean stop');
done_testing;
