#!/usr/bin/perl
# Tenant resolution: exact and wildcard domains, base paths on segment
# boundaries, hybrid > host-only > path-only, strip_base_path, path
# normalisation for matching only, no tenant -> 404, and routing decided
# per request on a keep-alive connection.
use strict;
use warnings;
use Test::More;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my %b = map { $_ => $t->backend(name => $_) } qw(api v2 shop shopapi wild exact v6);
sub up { my $n = shift; "      - { name: $n, url: \"http://" . $b{$n}->addr . "\" }" }

$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 2
  access_log: "off"
tenants:
  - name: pathonly
    base_path: /api
    strip_base_path: true
    upstreams:
@{[ up('api') ]}
  - name: v2
    base_path: /api/v2/
    upstreams:
@{[ up('v2') ]}
  - name: hostonly
    domains: [shop.test]
    upstreams:
@{[ up('shop') ]}
  - name: hybrid
    domains: [shop.test]
    base_path: /api
    upstreams:
@{[ up('shopapi') ]}
  - name: wild
    domains: ["*.wild.test"]
    upstreams:
@{[ up('wild') ]}
  - name: exact
    domains: [exact.wild.test]
    upstreams:
@{[ up('exact') ]}
  - name: v6
    domains: ["[2001:db8::1]"]
    upstreams:
@{[ up('v6') ]}
EOF
$t->start;

# Which backend answered, and the target it saw.
sub via {
    my ($host, $path) = @_;
    my $r = $t->request($port, GET => $path, host => $host);
    return $r->{status} == 200 ? "$r->{json}{name} $r->{json}{target}" : $r->{status};
}

# ---- hosts ------------------------------------------------------------------
is(via('shop.test', '/x'), 'shop /x', 'exact domain: host-only tenant');
is(via('SHOP.test:8080', '/x'), 'shop /x', 'Host lower-cased, port stripped');
is(via('[2001:DB8::1]:8080', '/x'), 'v6 /x', 'an IPv6 literal Host, kept whole, matches a bracketed domain');
is(via('shop.test.', '/x'), 'shop /x', 'a trailing dot is the same host');
is(via('a.wild.test', '/x'), 'wild /x', 'wildcard domain');
is(via('a.b.wild.test', '/x'), 'wild /x', 'wildcard covers deeper names');
is(via('exact.wild.test', '/x'), 'exact /x', 'an exact domain beats a wildcard');
is(via('wild.test', '/x'), 404, '*.wild.test does not match wild.test itself');
is(via('other.test', '/x'), 404, 'no tenant: 404');

my $r = $t->request($port, GET => '/nowhere', host => 'other.test');
is($r->{json}{error}{code}, 404, '404 is the JSON envelope');
is($r->{json}{error}{message}, 'no tenant for this host and path', '404 message');
is($r->{json}{error}{request_id}, $r->{headers}{'x-request-id'}, '404 carries the request id');

# ---- paths ------------------------------------------------------------------
is(via('other.test', '/api/users?q=1'), 'api /users?q=1', 'path-only tenant, base path stripped');
is(via('other.test', '/api'), 'api /', 'the bare base path becomes /');
is(via('other.test', '/api/'), 'api /', 'and so does base path + /');
is(via('other.test', '/apiary'), 404, '/api does not match /apiary');
is(via('other.test', '/api/v2/users'), 'v2 /api/v2/users', 'the longest base path wins, unstripped');
is(via('other.test', '/api/v20'), 'api /v20', 'a longer base path only on a segment boundary');
is(via('any.host', '/api/x'), 'api /x', 'a tenant without domains matches any host');

# ---- hybrid beats host-only beats path-only ----------------------------------------
is(via('shop.test', '/api/cart'), 'shopapi /api/cart', 'hybrid (host and path) wins');
is(via('shop.test', '/other'), 'shop /other', 'host-only beats path-only');
is(via('a.wild.test', '/api/x'), 'wild /api/x', 'a matching host beats a path-only tenant');
is(via('exact.wild.test', '/api/v2/x'), 'exact /api/v2/x', 'even against a longer base path');

# ---- normalisation for matching only ----------------------------------------------
is(via('other.test', '/api/./users'), 'api /users', 'dot segments: matched and stripped normalised');
is(via('other.test', '//api//users'), 'api /users', 'empty segments collapse');
is(via('other.test', '/api/v2/../x'), 'api /x', '.. leaves /api/v2 for /api');
is(via('shop.test', '/api/../x'), 'shop /api/../x', '.. leaves the hybrid tenant; the path is sent as it came');
is(via('other.test', '/%61pi/x'), 'api /x', 'escaped unreserved characters are decoded for matching');
is(via('shop.test', '/api/%2e%2e/x'), 'shop /api/%2e%2e/x', 'an escaped .. is a dot segment too');
is(via('other.test', '/api%2Fv2/x'), 'v2 /api%2Fv2/x', '%2F is a separator, as an upstream that decodes reads it');
is(via('shop.test', '/x/..%2Fapi/y'), 'shopapi /x/..%2Fapi/y', '..%2F climbs like ../');
is(via('other.test', '/api/v2/..%2F..%2Fx'), 404, 'out of its tenant too');
is(via('other.test', '/api/x%00y'), 400, '%00 refused');
is(via('other.test', '/api/x%zz'), 400, 'a malformed escape refused');
is(via('other.test', '/api/x%2'), 400, 'a truncated escape refused');

# ---- absolute-form targets ---------------------------------------------------------
$r = $t->request($port, GET => 'http://shop.test/api/abs?x=1', host => 'shop.test');
is("$r->{json}{name} $r->{json}{target}", 'shopapi /api/abs?x=1', 'absolute-form: routed by its host, origin-form upstream');
$r = $t->request($port, GET => 'http://shop.test:80/api/abs', host => 'shop.test');
is($r->{json}{target}, '/api/abs', 'absolute-form with the default port, Host without one: the same authority');
$r = $t->request($port, GET => 'http://shop.test:81/api/abs', host => 'shop.test:82');
is($r->{status}, 400, 'absolute-form whose port differs from Host\'s: 400');
like($r->{json}{error}{message} // '', qr/port of the target differs from Host/, 'saying so');
$r = $t->request($port, GET => 'http://shop.test:81/api/abs', host => 'shop.test');
is($r->{status}, 400, 'a port in the target and none in Host: 400 too');
$r = $t->request($port, OPTIONS => 'http://shop.test', host => 'shop.test');
is($r->{json}{target}, '*', 'OPTIONS with an absolute-form target without a path goes upstream as "*"');
$r = $t->request($port, GET => 'http://shop.test?x=1', host => 'shop.test');
is($r->{json}{target}, '/?x=1', 'absolute-form with a query and no path: the path is "/"');
$r = $t->request($port, OPTIONS => '*', host => 'shop.test');
is($r->{json}{target}, '*', 'as OPTIONS * does');

# ---- routing per request on one connection ------------------------------------------
my $c = $t->conn($port);
my @seen;
for my $h ([ 'shop.test', '/x' ], [ 'other.test', '/api/y' ], [ 'a.wild.test', '/z' ], [ 'nobody', '/q' ],
           [ 'shop.test', '/api/w' ]) {
    my $res = $c->request(GET => $h->[1], host => $h->[0]);
    push @seen, $res->{status} == 200 ? $res->{json}{name} : $res->{status};
}
is_deeply(\@seen, [qw(shop api wild 404 shopapi)], 'each request on a keep-alive connection is routed on its own');
ok(!$c->closed_by_peer(timeout => 0.2), 'a 404 keeps the connection');
$c->close;

done_testing;
