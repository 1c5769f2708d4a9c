#!/usr/bin/perl
# Deadlines over blocking sockets (worker/conn.c): the client's and the
# upstream's sockets block in read and write with SO_RCVTIMEO/SO_SNDTIMEO
# kept below the time left, in slices of at most a second.  These waits
# are longer than a slice, so they cross from blocking calls into the
# last stretch that poll() waits: the deadline stays absolute (a client
# trickling bytes does not renew read_header_timeout), is not overshot,
# and a stop still ends an idle keep-alive wait at once.
use strict;
use warnings;
use Test::More;
use IO::Select;
use IO::Socket::IP;
use JSON::PP ();
use Time::HiRes qw(time sleep);
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
  read_header_timeout: 2500ms
  idle_timeout: 30s
  access_log: access.log
tenants:
  - name: demo
    domains: [localhost]
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}", response_timeout: 2s }
  - name: patient
    domains: [patient.test]
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}", response_timeout: 30s }
EOF
$t->start;

# A slowloris: a field line every 300 ms, for up to 9 s, until the answer
# comes.  The head deadline is 2.5 s from the first byte, whatever
# arrives after it; a deadline renewed by each line would never come.
# (The upper bounds below leave room for a loaded machine: each is far
# from what the wrong behaviour would give.)
my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port, Timeout => 5)
    or die "connect: $!";
my $t0 = time;
syswrite($s, "GET / HTTP/1.1\r\nHost: localhost\r\n");
my $sel = IO::Select->new($s);
my $answered;
for my $i (1 .. 30) {
    if ($sel->can_read(0.3)) {
        $answered = time;
        last;
    }
    syswrite($s, "X-Drip-$i: x\r\n");
}
my $took = ($answered // time) - $t0;
my $raw = '';
while ($sel->can_read(2)) {
    last unless sysread($s, $raw, 65536, length $raw);
}
close $s;
my $r = Keystone::Test::parse_response($raw, eof => 1);
is($r->{status}, 408, 'a head trickling in for longer than read_header_timeout: 408');
ok($took >= 2.4 && $took < 5.5, sprintf('at read_header_timeout, not renewed by each line (%.2fs)', $took));

# An upstream slower than response_timeout (2 s, two slices and the rest).
$t0 = time;
$r = $t->request($port, GET => '/slow?delay=5000', timeout => 10);
$took = time - $t0;
is($r->{status}, 504, 'an upstream slower than response_timeout: 504');
ok($took >= 1.9 && $took < 4.5, sprintf('at response_timeout, long before the upstream answers at 5 s (%.2fs)', $took));

# A client waiting longer than a slice for a slow upstream gets its answer ...
$r = $t->request($port, GET => '/slowok?delay=1500', host => 'patient.test', timeout => 10);
is($r->{status}, 200, 'an answer after 1.5 s reaches the client that waited for it');
# ... but one that leaves does not hold the worker until the upstream answers
my $gone = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port, Timeout => 5)
    or die "connect: $!";
syswrite($gone, "GET /abandoned?delay=20000 HTTP/1.1\r\nHost: patient.test\r\n\r\n");
ok($t->wait_for(sub { grep { m{^GET /abandoned} } $app->requests }), 'a request to an upstream that takes 20 s');
close $gone;
$t0 = time;
$r = $t->request($port, GET => '/next', timeout => 25);
$took = time - $t0;
is($r->{status}, 200, 'the one worker serves the next client');
ok($took < 8, sprintf('soon after the first client left, not when the upstream answers (%.2fs)', $took));
my @lines = do { open my $fh, '<', $t->dir . '/access.log'; <$fh> };
my ($line) = grep { m{"path":"/abandoned"} } @lines;
like($line // '', qr/"status":499,/, 'logged as 499, as nginx does');
like($line // '', qr/"error":"client closed the connection before the upstream answered"/, 'saying why');
my ($code, $out) = $t->ctl('-s', $t->dir . '/keystoned.state', 'status', '-j');
my ($tn) = grep { $_->{name} eq 'patient' } @{ JSON::PP::decode_json($out)->{tenants} };
is($tn->{upstreams}[0]{failures}, 0, 'not counted against the upstream');

# The same connection serves on after a wait longer than a slice.
my $c = $t->conn($port);
is($c->request(GET => '/a')->{status}, 200, 'keep-alive: first request');
sleep 1.5;
is($c->request(GET => '/b')->{status}, 200, 'a second request after 1.5 s idle');

# A stop ends the idle keep-alive wait (30 s) at once.
$t0 = time;
$t->signal('TERM');
ok($c->closed_by_peer(timeout => 5), 'TERM closes the idle keep-alive connection');
$took = time - $t0;
ok($took < 10, sprintf('within a slice or so, not at idle_timeout (30 s) (%.2fs)', $took));
is($t->stop >> 8, 0, 'clean stop');

done_testing;
