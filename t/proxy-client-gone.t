#!/usr/bin/perl
# A client that leaves while a response body is relayed from a stalled
# upstream (a long poll, server-sent events): the worker sees it within
# about a second, closes the upstream connection and serves others; the
# upstream is not blamed (no failure, no open breaker); a large body
# moved by splice(2) too.  While it waits
# for the upstream, the worker shows as proxying.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');

$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 4
  min_spare: 0
  max_spare: 4
  max_workers: 4
  access_log: "off"
health_defaults:
  interval: 1h
  max_fails: 2
  fail_window: 1m
  fail_timeout: 1m
tenants:
  - name: stream
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}", idle_timeout: 1m }
EOF
$t->start;

sub status_json {
    my ($code, $out) = $t->ctl('-c', "$t->{dir}/keystone.yaml", 'status', '-j');
    return $code == 0 ? decode_json($out) : undef;
}
sub states { map { $_->{state} } @{ (status_json() // { workers => { list => [] } })->{workers}{list} } }
sub upstream {
    my ($tn) = grep { $_->{name} eq 'stream' } @{ $t->request($port, GET => '/admin/tenants')->{json}{tenants} };
    return $tn->{upstreams}[0];
}

# a small body is read into the worker; one of 64 KB or more is spliced
for my $size (10, 1_000_000) {
    my @conns;
    for my $i (1 .. 3) {
        my $c = $t->conn($port);
        $c->send("GET /events?hang=1&size=$size HTTP/1.1\r\nHost: localhost\r\n\r\n");
        like($c->read_until(qr/\r\n\r\n/, timeout => 5) // '', qr{^HTTP/1\.1 200 },
             "size $size, stream $i: the head is relayed");
        push @conns, $c;
    }
    ok($t->wait_for(sub { (grep { $_ eq 'proxying' } states()) == 3 }, timeout => 5),
       "size $size: the workers waiting for the upstream show as proxying") or diag join ' ', states();
    $_->close for @conns;
    ok($t->wait_for(sub { !grep { $_ eq 'proxying' || $_ eq 'writing' } states() }, timeout => 5),
       "size $size: once the clients have left the workers are free, long before the upstream idle_timeout")
        or diag join ' ', states();
    is($t->request($port, GET => '/next')->{status}, 200, "size $size: and serve");
}
my $u = upstream();
is($u->{failures}, 0, 'the upstream is not blamed');
is($u->{state}, 'up', 'and stays up');
unlike($t->error_log, qr/breaker:/, 'no breaker opened');
is($t->stop >> 8, 0, 'clean stop');
done_testing;
