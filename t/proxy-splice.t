#!/usr/bin/perl
# Large response bodies go from the upstream to the client with splice(2)
# (ks_conn_splice_from in worker/conn.c): byte for byte, with keep-alive
# on both sides afterwards, and with the deadlines and failures of the
# copying path: an upstream that goes quiet is cut at its idle_timeout,
# one that closes in the middle cuts the client short, a client that
# stops reading is dropped at send_timeout, and the worker serves on.
use strict;
use warnings;
use JSON::PP qw(decode_json);
use Socket qw(SOL_SOCKET SO_RCVBUF);
use Test::More;
use Time::HiRes qw(time);
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');

$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 1
  send_timeout: 1s
  access_log: @{[ $t->dir ]}/access.log
tenants:
  - name: demo
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}", idle_timeout: 1s, keepalive: 4 }
EOF
my $master = $t->start;
my ($worker) = $t->processes_of($master);

sub pattern { Keystone::Test::backend_body(@_) }
sub access_log {
    open my $fh, '<', $t->dir . '/access.log' or return ();
    return map { decode_json($_) } <$fh>;
}
sub pipes { scalar grep { (readlink($_) // '') =~ /^pipe:/ } glob("/proc/$worker/fd/*") }

# ---- through, and keep-alive on both sides after it -------------------------------------------
my $pipes = pipes();
my $size = 4 * 1024 * 1024;
my $c = $t->conn($port);
my $r = $c->request(GET => '/big?size=' . $size, keepalive => 1, timeout => 30);
is($r->{status}, 200, '4MB download: 200');
is(length($r->{body}), $size, 'all of it');
ok($r->{body} eq pattern($size), 'byte for byte');
is(pipes(), $pipes + 2, 'through a pipe the worker made for it');
$r = $c->request(GET => '/next', keepalive => 1);
is($r->{status}, 200, 'the client connection serves the next request');
is($r->{json}{conn_requests}, 2, 'over the same upstream connection, pooled after the body');
$r = $c->request(GET => '/small?size=70000', keepalive => 1);
ok($r->{status} == 200 && $r->{body} eq pattern(70000), 'a body just over one buffer: spliced too, intact');
$c->close;

# ---- an upstream that goes quiet, one that closes -----------------------------------------------
my $t0 = time;
my ($raw, $how) = $t->raw($port, "GET /h?hang=1&size=1000000 HTTP/1.1\r\nHost: x\r\n\r\n", timeout => 10);
my $took = time - $t0;
my ($head, $body) = split /\r\n\r\n/, $raw, 2;
like($head, qr{^HTTP/1\.1 200 .*Content-Length: 1000000$}ms, 'upstream silent after its head: the head went out');
is($how, 'eof', 'then the client connection is closed');
ok($took >= 0.9 && $took < 5, sprintf('at the upstream idle_timeout (%.2fs)', $took));

($raw, $how) = $t->raw($port, "GET /m?close_mid=1&size=1000000 HTTP/1.1\r\nHost: x\r\n\r\n", timeout => 10);
($head, $body) = split /\r\n\r\n/, $raw, 2;
is(length($body), 500000, 'upstream closing in the middle: what it sent is passed on');
is($how, 'eof', 'then the client connection is closed');

# ---- a client that stops reading ----------------------------------------------------------------
my $state = $t->dir . '/keystoned.state';
sub worker_state {
    my (undef, $out) = $t->ctl('-s', $state, 'status', '-j');
    my ($w) = @{ decode_json($out)->{workers}{list} };
    return $w;
}
my $slow = $t->conn($port);
setsockopt($slow->sock, SOL_SOCKET, SO_RCVBUF, 4096);
$slow->send("GET /huge?size=" . (64 * 1024 * 1024) . " HTTP/1.1\r\nHost: x\r\n\r\n");
$t0 = time;
ok($t->wait_for(sub { worker_state()->{state} eq 'writing' }), 'a client that stops reading: the worker waits on it');
ok($t->wait_for(sub { worker_state()->{state} ne 'writing' }, timeout => 10), 'and gives up');
$took = time - $t0;
ok($took >= 0.9 && $took < 8, sprintf('at send_timeout (%.2fs)', $took));
$slow->close;
$r = $t->request($port, GET => '/after');
is($r->{status}, 200, 'the worker serves on');
is_deeply([ $t->processes_of($master) ], [$worker], 'the same worker');
# (the worker logs a request before it serves the next)
my ($line) = grep { $_->{path} eq '/huge' } access_log();
is($line->{error}, 'client gone', 'logged as the client gone');
ok($line->{bytes_out} > 0 && $line->{bytes_out} < 64 * 1024 * 1024,
   "after part of the body ($line->{bytes_out} bytes)");

my (undef, $out) = $t->ctl('-s', $state, 'status', '-j');
my ($up) = @{ decode_json($out)->{tenants}[0]{upstreams} };
is($up->{failures}, 2, 'the quiet and the closing upstream count as failures, the client that left does not');

done_testing;
