#!/usr/bin/perl
# The shipped examples: etc/keystone.yaml as the quick start uses it
# answers GET /hello with "Hello World" through etc/scripts/hello.lua even
# though its upstream is down, and etc/scripts/auth-middleware.lua and
# headers.lua do what their comments say.
use strict;
use warnings;
use Test::More;
use Keystone::Test;

my $t = Keystone::Test->new;
my $src = $t->srcdir;
my $dir = $t->dir;
sub slurp { my ($f) = @_; open my $fh, '<', $f or die "$f: $!"; local $/; <$fh> }

# ---- the quick start: etc/keystone.yaml, only its ports and run-time files moved -------------
# The upstream moves too, to a free port nothing listens on: the quick
# start invites a server on its port (3001), and here it must be absent
# whatever runs on this machine.
my $port = $t->free_port;
my $admin = $t->free_port;
my $absent = $t->free_port;
my $yaml = slurp("$src/etc/keystone.yaml");
like($yaml, qr{^\s*lua_script: scripts/hello\.lua}m, 'the demo tenant uses hello.lua');
$yaml =~ s/127\.0\.0\.1:8080/127.0.0.1:$port/ or die 'no public_addr in etc/keystone.yaml';
$yaml =~ s/127\.0\.0\.1:9000/127.0.0.1:$admin/ or die 'no admin_addr in etc/keystone.yaml';
$yaml =~ s{url: http://127\.0\.0\.1:\d+}{url: http://127.0.0.1:$absent} or die 'no upstream url in etc/keystone.yaml';
$yaml =~ s/^(\s*)access_log: stderr/$1access_log: "off"/m;
$t->write_config($yaml);
$t->write_file("scripts/$_", slurp("$src/etc/scripts/$_")) for qw(hello.lua auth-middleware.lua headers.lua);
$t->start(port => $port);
my $r = $t->request($port, GET => '/hello');
is($r->{status}, 200, 'curl localhost:8080/hello');
is($r->{body}, 'Hello World', 'answers Hello World');
$r = $t->request($port, GET => '/elsewhere');
cmp_ok($r->{status}, '>=', 502, 'other paths go to the (absent) upstream');
$t->stop;

# ---- auth-middleware.lua and headers.lua, in front of a real upstream ---------------------------
my $t2 = Keystone::Test->new;
$port = $t2->free_port;
my $app = $t2->backend(name => 'app');
$t2->write_file("scripts/$_", slurp("$src/etc/scripts/$_")) for qw(auth-middleware.lua headers.lua);
$t2->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  access_log: "off"
tenants:
  - name: api
    domains: [api.test]
    lua_script: scripts/auth-middleware.lua
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
  - name: web
    lua_script: scripts/headers.lua
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
$t2->start;

$r = $t2->request($port, GET => '/api/items', host => 'api.test');
is($r->{status}, 401, 'auth-middleware: no credential, 401');
is($r->{headers}{'www-authenticate'}, 'Bearer realm="api"', 'with WWW-Authenticate');
is($r->{json}{error}, 'unauthorized', 'and a JSON reason');
is($app->requests, 0, 'nothing reached the upstream');
# an escaped slash is a slash, for the routes as for an upstream that decodes it
$r = $t2->request($port, GET => '/api%2Fitems', host => 'api.test');
is($r->{status}, 401, 'auth-middleware: /api%2Fitems is under /api too, 401');
is($app->requests, 0, 'and nothing reached the upstream');
$r = $t2->request($port, GET => '/api/whoami', host => 'api.test', headers => [ Authorization => 'Bearer demo-token' ]);
is($r->{status}, 200, 'a bearer token');
is_deeply($r->{json}, { user => 'alice', tenant => 'api' }, 'whoami is answered in Lua');
$r = $t2->request($port, POST => '/api/items?x=1', host => 'api.test', headers => [ 'X-Api-Key' => 'demo-api-key' ],
                  body => 'payload');
is($r->{json}{target}, '/api/items?x=1', 'an API key: proxied');
is($r->{json}{body}, 'payload', 'with the body');
my %up = map { lc($_->[0]) => $_->[1] } @{ $r->{json}{headers} };
is($up{'x-user'}, 'bob', 'the upstream learns who called');
ok(!exists $up{'x-api-key'} && !exists $up{authorization}, 'and never sees the credential');
$r = $t2->request($port, GET => '/public', host => 'api.test');
is($r->{json}{target}, '/public', 'outside /api: no check');

$r = $t2->request($port, GET => '/page');
is($r->{status}, 200, 'headers.lua: proxied');
is($r->{headers}{'x-served-by'}, 'keystoned', 'the response hook adds headers');
is($r->{headers}{'strict-transport-security'}, 'max-age=31536000', 'HSTS');
is($r->{headers}{'x-frame-options'}, 'DENY', 'the middleware\'s res:header reaches the proxied response');
%up = map { lc($_->[0]) => $_->[1] } @{ $r->{json}{headers} };
like($up{'x-request-start'}, qr/^\d+\.\d{3}$/, 'and its request header the upstream');
$r = $t2->request($port, GET => '/page?header=Server%3Aupstream-1.0&header=X-Kept%3Ak');
ok(!grep({ lc $_->[0] eq 'server' && $_->[1] eq 'upstream-1.0' } @{ $r->{header_list} }),
   'res:header(name, nil) in the hook removes the upstream\'s header') or diag explain $r->{header_list};
is($r->{headers}{'x-kept'}, 'k', 'and leaves the others');
$r = $t2->request($port, GET => '/x?status=503');
is($r->{headers}{'cache-control'}, 'no-store', 'a 5xx from the upstream gets Cache-Control: no-store');

done_testing;
