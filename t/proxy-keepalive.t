#!/usr/bin/perl
# Keep-alive on both sides: the per-worker upstream pool (reuse,
# keepalive: 0, pool_idle_timeout, "Connection: close" from the upstream,
# a pooled connection found dead), and the client rules (HTTP/1.0,
# Connection: close, max_keepalive_requests, idle_timeout, early answers
# draining or closing).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep);
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');
my $once = $t->backend(name => 'once');
my $brief = $t->backend(name => 'brief');

$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 1
  max_keepalive_requests: 3
  idle_timeout: 1s
  access_log: "off"
tenants:
  - name: demo
    domains: [localhost]
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
  - name: nokeep
    domains: [nokeep.test]
    upstreams:
      - { name: once, url: "http://@{[ $once->addr ]}", keepalive: 0 }
  - name: brief
    domains: [brief.test]
    upstreams:
      - { name: brief, url: "http://@{[ $brief->addr ]}", pool_idle_timeout: 500ms }
EOF
$t->start;

# conn_id and conn_requests of the upstream connection that served each
# request, every request on a new client connection
sub upstream_conns {
    my ($n, %o) = @_;
    return map {
        my $r = $t->request($port, $o{method} // 'GET', "/k$_", host => $o{host} // 'localhost',
                            $o{method} ? (body => 'data') : ());
        $r->{status} == 200 ? "$r->{json}{conn_id}/$r->{json}{conn_requests}" : "status $r->{status}";
    } 1 .. $n;
}

# ---- the upstream pool -------------------------------------------------------------
my @u = upstream_conns(5);
my ($id) = $u[0] =~ m{^(\d+)/};
is_deeply(\@u, [ map { "$id/$_" } 1 .. 5 ], 'five requests from five clients share one upstream connection');
# The backend counts a closed connection out a moment later: poll.
my $stats;
ok($t->wait_for(sub { ($stats = $app->stats)->{open} == 2 }),
   'the backend has that one open (and the stats request)')
    or diag explain { stats => $stats, requests => [ $app->requests ] };

@u = upstream_conns(3, host => 'nokeep.test');
is(scalar(grep { m{/1$} } @u), 3, 'keepalive: 0: a new upstream connection each time');
my %distinct = map { (split m{/})[0] => 1 } @u;
is(scalar keys %distinct, 3, 'three of them');
my $r = $t->request($port, GET => '/h', host => 'nokeep.test');
is((grep { $_->[0] eq 'Connection' } @{ $r->{json}{headers} })[0][1], 'close',
   'and the upstream is told Connection: close');

@u = upstream_conns(2, host => 'brief.test');
like($u[1], qr{/2$}, 'pooled within pool_idle_timeout');
sleep 1;
@u = (@u, upstream_conns(1, host => 'brief.test'));
like($u[2], qr{/1$}, 'after pool_idle_timeout a new connection');

$r = $t->request($port, GET => '/c?close=1');
my ($closed_id) = $r->{json}{conn_id};
@u = upstream_conns(1);
my ($next_id) = $u[0] =~ m{^(\d+)/};
isnt($next_id, $closed_id, 'an upstream answer with Connection: close is not reused');

# ---- a pooled connection the upstream closed -------------------------------------------
@u = upstream_conns(1);
like($u[0], qr{/\d+$}, 'a pooled connection exists');
my $app_port = $app->port;
$app->stop;
$app = $t->backend(name => 'app', port => $app_port);
@u = upstream_conns(1);
is($u[0], "1/1", 'GET after the upstream restarted: retried on a fresh connection, no error');
$app->stop;
$app = $t->backend(name => 'app', port => $app_port);
@u = upstream_conns(1, method => 'POST');
is($u[0], "1/1", 'POST after the upstream restarted: the dead connection is noticed before sending');

# ---- client keep-alive ---------------------------------------------------------------------
my $c = $t->conn($port);
my @s = map { $c->request(GET => "/ka$_")->{headers}{connection} // 'none' } 1 .. 3;
is_deeply(\@s, [ 'none', 'none', 'close' ], 'max_keepalive_requests: 3: the third says Connection: close');
ok($c->closed_by_peer(timeout => 2), 'and the connection is closed after it');
$c->close;

$c = $t->conn($port);
$c->send("GET /v10 HTTP/1.0\r\n\r\n");
$r = $c->response;
is($r->{headers}{connection}, 'close', 'HTTP/1.0: Connection: close');
ok($c->closed_by_peer(timeout => 2), 'HTTP/1.0: closed');
$c->close;

$c = $t->conn($port);
$c->send("GET /v10ka HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n");
$r = $c->response;
is($r->{headers}{connection}, 'keep-alive', 'HTTP/1.0 with keep-alive: Connection: keep-alive');
$c->send("GET /v10ka2 HTTP/1.0\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n");
is($c->response->{json}{target}, '/v10ka2', 'and a second request on it');
$c->close;

$c = $t->conn($port);
$r = $c->request(GET => '/close', headers => [ Connection => 'close' ]);
is($r->{headers}{connection}, 'close', 'Connection: close answered with close');
ok($c->closed_by_peer(timeout => 2), 'and closed');
$c->close;

$c = $t->conn($port);
$c->request(GET => '/idle');
ok(!$c->closed_by_peer(timeout => 0.3), 'an idle keep-alive connection stays open ...');
ok($c->closed_by_peer(timeout => 3), '... until idle_timeout');
$c->close;

# ---- early answers and left-over bodies ------------------------------------------------------
$c = $t->conn($port);
$c->send("POST /x HTTP/1.1\r\nHost: nobody.test.example\r\nContent-Length: 10\r\n\r\n0123456789");
$r = $c->response;
is($r->{status}, 404, 'a 404 before the body was read');
ok(!exists $r->{headers}{connection} || $r->{headers}{connection} ne 'close', 'keeps a connection with a small body');
$c->send("GET /next HTTP/1.1\r\nHost: localhost\r\n\r\n");
is($c->response->{json}{target}, '/next', 'whose body was drained: the next request is read right');
$c->close;

$c = $t->conn($port);
$c->send("POST /x HTTP/1.1\r\nHost: nobody.test.example\r\nContent-Length: 1000000\r\n\r\n0123");
$r = $c->response;
is($r->{status}, 404, 'a 404 with a large body unread');
is($r->{headers}{connection}, 'close', 'says Connection: close');
ok($c->closed_by_peer(timeout => 2), 'and closes');
$c->close;

$c = $t->conn($port);
$c->send("POST /x HTTP/1.1\r\nHost: nobody.test.example\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
$r = $c->response;
is($r->{headers}{connection}, 'close', 'a chunked body left unread closes the connection');
$c->close;

done_testing;
