#!/usr/bin/perl
# Forwarding (RFC 9110/9112): the request head the upstream sees (request
# line, hop-by-hop fields removed, Host, X-Forwarded-*, Forwarded,
# X-Request-ID) and the response head the client sees.
use strict;
use warnings;
use Test::More;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');
my $other = $t->backend(name => 'other');

$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  access_log: "off"
tenants:
  - name: plain
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
  - name: rewritten
    domains: [b.test]
    preserve_host: false
    forwarded: true
    upstreams:
      - { name: other, url: "http://@{[ $other->addr ]}" }
EOF
$t->start;

sub seen {
    my ($r) = @_;
    return $r->{json}{headers};
}

# ---- the request head upstream --------------------------------------------------
my $r = $t->request($port, GET => '/p?q=1', host => 'Front.Example:8080',
    headers => [ 'X-One' => 'a', Connection => 'keep-alive, X-Hop', 'X-Hop' => 'secret',
                 'Keep-Alive' => 'timeout=5', 'Proxy-Connection' => 'keep-alive', TE => 'trailers',
                 Trailer => 'X-T', Upgrade => 'h2c', 'X-Two' => 'b  ' ]);
is($r->{status}, 200, 'proxied');
is($r->{json}{method}, 'GET', 'method as sent');
is($r->{json}{target}, '/p?q=1', 'target as sent');
is($r->{json}{version}, 'HTTP/1.1', 'HTTP/1.1 upstream');
my $id = $r->{headers}{'x-request-id'};
like($id, qr/^[0-9a-f]{32}$/, 'a request id is generated');
my ($via) = map { $_->[1] } grep { $_->[0] eq 'Via' } @{ seen($r) };
like($via, qr/^1\.1 keystoned-[0-9a-f]{8}$/, 'Via names the gateway');
is_deeply(seen($r), [
    [ Host => 'Front.Example:8080' ], [ 'X-One' => 'a' ], [ 'X-Two' => 'b' ],
    [ 'X-Forwarded-For' => '127.0.0.1' ], [ 'X-Forwarded-Host' => 'Front.Example:8080' ],
    [ 'X-Forwarded-Proto' => 'http' ], [ 'X-Request-ID' => $id ], [ Via => $via ],
], 'hop-by-hop fields (and those Connection names) removed, Host preserved, X-Forwarded-* added')
    or diag explain seen($r);

$r = $t->request($port, GET => '/', headers => [
    'X-Forwarded-For' => '10.0.0.1', 'X-Forwarded-For' => '10.0.0.2, 10.0.0.3',
    'X-Forwarded-Host' => 'spoofed', 'X-Forwarded-Proto' => 'https', 'X-Request-ID' => 'client-id.42',
    Via => '1.0 fred, 1.1 example.com (Apache/1.1)' ]);
is_deeply(seen($r), [
    [ Host => 'localhost' ], [ Via => '1.0 fred, 1.1 example.com (Apache/1.1)' ],
    [ 'X-Forwarded-For' => '10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1' ],
    [ 'X-Forwarded-Host' => 'localhost' ], [ 'X-Forwarded-Proto' => 'http' ],
    [ 'X-Request-ID' => 'client-id.42' ], [ Via => $via ],
], 'X-Forwarded-For appended to, X-Forwarded-Host/-Proto replaced, a sane X-Request-ID kept, Via added to')
    or diag explain seen($r);
is($r->{headers}{'x-request-id'}, 'client-id.42', 'and returned to the client');

$r = $t->request($port, GET => '/', headers => [ 'X-Request-ID' => 'not sane!' ]);
like($r->{headers}{'x-request-id'}, qr/^[0-9a-f]{32}$/, 'an insane X-Request-ID is replaced');
is((grep { $_->[0] eq 'X-Request-ID' } @{ seen($r) })[0][1], $r->{headers}{'x-request-id'},
   'the upstream gets the same id');
$r = $t->request($port, GET => '/', headers => [ 'X-Request-ID' => 'x' x 65 ]);
like($r->{headers}{'x-request-id'}, qr/^[0-9a-f]{32}$/, 'so is one longer than 64 characters');

# ---- preserve_host: false, forwarded: true ----------------------------------------
$r = $t->request($port, GET => '/f', host => 'b.test', headers => [ Forwarded => 'for=192.0.2.1' ]);
is($r->{json}{name}, 'other', 'second tenant');
my %h = map { $_->[0] => $_->[1] } @{ seen($r) };
is($h{Host}, $other->addr, 'preserve_host: false sends the upstream host:port');
is($h{'X-Forwarded-Host'}, 'b.test', 'X-Forwarded-Host keeps the client Host');
is($h{Forwarded}, 'for=192.0.2.1, for=127.0.0.1;host="b.test";proto=http', 'Forwarded appended (RFC 7239)');
$r = $t->request($port, GET => '/f', host => 'b.test',
                 headers => [ Forwarded => 'for="x', Forwarded => 'for="[2001:db8::1]:4711";by="\\"q"' ]);
%h = map { $_->[0] => $_->[1] } @{ seen($r) };
is($h{Forwarded}, 'for="[2001:db8::1]:4711";by="\\"q", for=127.0.0.1;host="b.test";proto=http',
   'a client Forwarded value with an open quote is dropped, not left to swallow ours');

# ---- Date (RFC 9110 6.6.1) ------------------------------------------------------------
$r = $t->request($port, GET => '/nodate');
like($r->{headers}{date} // '', qr/^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT$/,
     'an upstream answer without Date gets ours');
$r = $t->request($port, GET => '/date?header=Date%3A%20Sun%2C%2006%20Nov%201994%2008%3A49%3A37%20GMT');
is($r->{headers}{date}, 'Sun, 06 Nov 1994 08:49:37 GMT', "the upstream's Date is kept");
is(scalar(() = $r->{raw} =~ /^Date:/mig), 1, 'and is the only one');

# ---- Max-Forwards (RFC 9110 7.6.2) ---------------------------------------------------
$r = $t->request($port, OPTIONS => '/mf', headers => [ 'Max-Forwards' => '3' ]);
%h = map { $_->[0] => $_->[1] } @{ seen($r) };
is($h{'Max-Forwards'}, '2', 'OPTIONS: Max-Forwards is decremented on the way');
my $before = scalar $app->requests;
$r = $t->request($port, OPTIONS => '/mf0', headers => [ 'Max-Forwards' => '0' ]);
is($r->{status}, 200, 'OPTIONS with Max-Forwards: 0 is answered by keystoned');
is($r->{headers}{'content-length'}, '0', 'with an empty body');
is(scalar $app->requests, $before, 'and goes no further');
$r = $t->request($port, GET => '/mf', headers => [ 'Max-Forwards' => '0' ]);
%h = map { $_->[0] => $_->[1] } @{ seen($r) };
is($h{'Max-Forwards'}, '0', 'other methods pass it on as it is');

# ---- HTTP/1.0 clients ---------------------------------------------------------------
my $raw = $t->raw($port, "GET /old HTTP/1.0\r\n\r\n");
my $res = Keystone::Test::parse_response($raw, eof => 1);
is($res->{status}, 200, 'HTTP/1.0 without Host is served');
is($res->{version}, 'HTTP/1.1', 'answered as HTTP/1.1');
%h = map { $_->[0] => $_->[1] } @{ $res->{json}{headers} };
is($h{Host}, $app->addr, 'without a Host, the upstream host:port is sent');
is($res->{json}{version}, 'HTTP/1.1', 'the upstream still gets HTTP/1.1');
ok(!exists $h{'X-Forwarded-Host'}, 'no X-Forwarded-Host without a Host');

# ---- fields with "_" in their name are not forwarded (nginx's default) ---------------------
$r = $t->request($port, GET => '/u', headers => [ 'X_Forwarded_For' => '6.6.6.6', 'My_Field' => 'x',
                                                  'My-Field' => 'y' ]);
is($r->{status}, 200, 'a request with underscored fields is served');
my @names = map { $_->[0] } @{ $r->{json}{headers} };
ok(!grep({ /_/ } @names), 'no field with "_" reached the upstream') or diag("@names");
%h = map { $_->[0] => $_->[1] } @{ $r->{json}{headers} };
is($h{'My-Field'}, 'y', 'its dashed neighbour did');
is($h{'X-Forwarded-For'}, '127.0.0.1', 'and X-Forwarded-For is ours alone');

# ---- a later HTTP/1 minor version is served as HTTP/1.1 (RFC 9112, 2.3) -----------------
my $c12 = $t->conn($port);
$c12->send("GET /v12 HTTP/1.2\r\nHost: localhost\r\n\r\n");
$res = $c12->response;
is($res->{status}, 200, 'HTTP/1.2 is served');
is($res->{version}, 'HTTP/1.1', 'answered as HTTP/1.1');
is($res->{json}{version}, 'HTTP/1.1', 'and forwarded as HTTP/1.1');
is($c12->request(GET => '/v12b')->{status}, 200, 'with HTTP/1.1 keep-alive: the connection stays open');
$c12->close;

# ---- the response head ---------------------------------------------------------
$r = $t->request($port, GET => '/resp?header=X-A:1&header=Keep-Alive:timeout%3D9'
                              . '&header=X-Request-ID:up&header=Connection:X-Gone&header=X-Gone:1'
                              . '&header=Proxy-Connection:x', headers => [ 'X-Request-ID' => 'mine' ]);
is_deeply([ map { $_->[0] } @{ $r->{header_list} } ],
          [ 'Content-Type', 'X-Backend', 'X-A', 'Date', 'X-Request-ID', 'Content-Length', 'Connection' ],
          'response: hop-by-hop fields and those Connection names removed, Date, framing our own')
    or diag explain $r->{header_list};
is($r->{headers}{'x-request-id'}, 'mine', "the upstream's X-Request-ID is replaced by ours");
is($r->{headers}{connection}, 'close', 'Connection as the client asked');

$r = $t->request($port, GET => '/s?status=404');
is($r->{status}, 404, 'upstream status passed through');
is($r->{reason}, 'Not Found', 'with its reason phrase');
is($r->{json}{name}, 'app', 'and its body');

done_testing;
