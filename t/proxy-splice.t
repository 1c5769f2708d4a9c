#!/usr/bin/perl
# Large bodies go from socket to socket with splice(2) (worker/conn.c):
# responses from the upstream to the client (ks_conn_splice_from), and
# uploads from the client to the upstream (ks_body_splice_to).  Byte for
# byte, with keep-alive on both sides afterwards, and with the deadlines
# and failures of the copying path: an upstream that goes quiet is cut at
# its idle_timeout, one that closes in the middle cuts the client short,
# a client that stops reading is dropped at send_timeout, one that stops
# sending at read_body_timeout, and the worker serves on.
use strict;
use warnings;
use JSON::PP qw(decode_json);
use Socket qw(:DEFAULT SOL_SOCKET SO_RCVBUF);
use Test::More;
use Time::HiRes qw(time);
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');
# an upstream that accepts and never reads: the kernel completes the
# handshake, and a receive buffer made small before listen() fills at once
socket(my $sink, PF_INET, SOCK_STREAM, 0) or die "sink: $!";
setsockopt($sink, SOL_SOCKET, SO_RCVBUF, 4096) or die "sink: $!";
bind($sink, pack_sockaddr_in(0, inet_aton('127.0.0.1'))) or die "sink: $!";
listen($sink, 8) or die "sink: $!";
my $sink_port = (unpack_sockaddr_in(getsockname($sink)))[0];

$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 1
  send_timeout: 1s
  read_body_timeout: 1s
  access_log: @{[ $t->dir ]}/access.log
limits:
  max_body_bytes: 16MB
tenants:
  - name: demo
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}", idle_timeout: 1s, keepalive: 4 }
  - name: sink
    base_path: /sink
    upstreams:
      - { name: sink, url: "http://127.0.0.1:$sink_port", idle_timeout: 1s, response_timeout: 1s }
EOF
my $master = $t->start;
my ($worker) = $t->processes_of($master);

sub pattern { Keystone::Test::backend_body(@_) }
sub access_log {
    open my $fh, '<', $t->dir . '/access.log' or return ();
    return map { decode_json($_) } <$fh>;
}
sub pipes { scalar grep { (readlink($_) // '') =~ /^pipe:/ } glob("/proc/$worker/fd/*") }

# ---- uploads: through, and keep-alive after them ----------------------------------------------
my $pipes = pipes();
my $c = $t->conn($port);
my $upload = pattern(2 * 1024 * 1024);
my $r = $c->request(POST => '/up', body => $upload, timeout => 30);
is($r->{status}, 200, '2MB upload: 200');
is($r->{json}{body_len}, length($upload), 'the upstream got all of it');
ok(($r->{json}{body} // '') eq $upload, 'byte for byte');
is(pipes(), $pipes + 2, 'through a pipe the worker made for it');
$r = $c->request(GET => '/after-upload');
is($r->{json}{conn_requests}, 2, 'the next request goes over the same upstream connection');

# Expect: 100-continue: the head goes upstream, the client gets its 100
# from keystoned before the body is spliced
$c->send("POST /up100 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: "
         . length($upload) . "\r\n\r\n");
ok($c->read_until(qr{^HTTP/1\.1 100 Continue\r\n\r\n}), 'Expect: 100-continue: the client gets its 100');
$c->send($upload);
$r = $c->response(timeout => 30);
ok($r->{status} == 200 && ($r->{json}{body} // '') eq $upload, 'then the body goes through intact');
$c->close;

# a client that stops sending in the middle is cut at read_body_timeout
my $t0 = time;
my ($raw, $how) = $t->raw($port, "POST /stall HTTP/1.1\r\nHost: x\r\nContent-Length: " . length($upload)
                                  . "\r\n\r\n" . substr($upload, 0, 300 * 1024), timeout => 10);
my $took = time - $t0;
like($raw, qr{^HTTP/1\.1 408 }, 'a client that stops sending an upload: 408');
ok($took >= 0.9 && $took < 5, sprintf('at read_body_timeout (%.2fs)', $took));
$r = $t->request($port, GET => '/after-stall');
is($r->{status}, 200, 'the worker serves on');

# an upstream that stops reading in the middle: the write gives up at its
# idle_timeout, the wait for an early answer at its response_timeout (more
# than the sender's 4 MB socket buffer, so that the write does stall)
my $big_upload = pattern(12 * 1024 * 1024);
$t0 = time;
($raw, $how) = $t->raw($port, "POST /sink/up HTTP/1.1\r\nHost: x\r\nContent-Length: " . length($big_upload)
                                  . "\r\n\r\n" . $big_upload, timeout => 15);
$took = time - $t0;
like($raw, qr{^HTTP/1\.1 504 }, 'an upstream that stops reading an upload: 504');
ok($took >= 1.9 && $took < 8, sprintf('after its idle_timeout and response_timeout (%.2fs)', $took));
$r = $t->request($port, GET => '/after-sink');
is($r->{status}, 200, 'the worker serves on');

# ---- downloads: through, and keep-alive on both sides after it -----------------------------------
my $size = 4 * 1024 * 1024;
$c = $t->conn($port);
my $before = $c->request(GET => '/before-download')->{json};
$r = $c->request(GET => '/big?size=' . $size, keepalive => 1, timeout => 30);
is($r->{status}, 200, '4MB download: 200');
is(length($r->{body}), $size, 'all of it');
ok($r->{body} eq pattern($size), 'byte for byte');
is(pipes(), $pipes + 2, 'through the same pipe');
$r = $c->request(GET => '/next', keepalive => 1);
is($r->{status}, 200, 'the client connection serves the next request');
ok($r->{json}{conn_id} == $before->{conn_id} && $r->{json}{conn_requests} == $before->{conn_requests} + 2,
   'over the same upstream connection, pooled after the body');
$r = $c->request(GET => '/small?size=70000', keepalive => 1);
ok($r->{status} == 200 && $r->{body} eq pattern(70000), 'a body just over one buffer: spliced too, intact');
$c->close;

# ---- an upstream that goes quiet, one that closes -----------------------------------------------
$t0 = time;
($raw, $how) = $t->raw($port, "GET /h?hang=1&size=1000000 HTTP/1.1\r\nHost: x\r\n\r\n", timeout => 10);
$took = time - $t0;
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
is($line->{error}, 'client did not read the response within send_timeout', 'logged as a client that did not read in time');
ok($line->{bytes_out} > 0 && $line->{bytes_out} < 64 * 1024 * 1024,
   "after part of the body ($line->{bytes_out} bytes)");

my (undef, $out) = $t->ctl('-s', $state, 'status', '-j');
my ($up) = @{ decode_json($out)->{tenants}[0]{upstreams} };
is($up->{failures}, 2, 'the quiet and the closing upstream count as failures, the clients that left or '
                       . 'stalled do not');
my ($sink_up) = @{ decode_json($out)->{tenants}[1]{upstreams} };
is($sink_up->{failures}, 1, 'the upstream that stopped reading counts as a failure');

done_testing;
