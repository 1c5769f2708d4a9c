#!/usr/bin/perl
# 1000 clients opening and closing connections as fast as they can (2 s
# in make check, 10 s with KS_SOAK=1): 500 connect and close at once
# (every other one with an RST), 500 send one request with
# "Connection: close" and close (every other one with an RST, some
# before reading all of the answer).  Expected: no worker crashes, every
# answer that arrives is a 200 (no half answer), and afterwards the
# descriptors of the master and of every worker (ls /proc/PID/fd) are
# back to what they were before.
use strict;
use warnings;
use Test::More;
use Keystone::Test;
use Keystone::Load;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');
my $duration = Keystone::Load::soak() ? 10 : 2;

$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 4
  min_spare: 1
  max_spare: 4
  max_workers: 4
  max_requests_per_worker: 0
  access_log: "off"
health_defaults:
  interval: 1h
tenants:
  - name: app
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}", keepalive: 0 }
EOF
my $master = $t->start;
ok($t->wait_for(sub { Keystone::Load::worker_pids($t) == 4 }), 'four workers');
my @workers = Keystone::Load::worker_pids($t);
# the workers' descriptors once each has served (its listener, logs,
# lifeline, epoll ...); no upstream connection is kept (keepalive: 0)
for (1 .. 20) { $t->request($port, GET => '/warm') }
# counted once every worker is idle again: a worker that has just sent
# the last answer may still hold its client and upstream connections
sub all_idle {
    my $s = Keystone::Load::status($t) or return 0;
    return !grep { $_->{state} ne 'idle' } @{ $s->{workers}{list} };
}
ok($t->wait_for(\&all_idle), 'the workers are idle after warming up');
my %before = map { $_ => Keystone::Load::fd_count($_) } $master, @workers;

my $connect = Keystone::Load->start($t, port => $port, conns => 500, duration => $duration,
    mode => 'connect', timeout => 4000, specs => ['GET /']);
my $churn = Keystone::Load->start($t, port => $port, conns => 500, duration => $duration,
    mode => 'churn', timeout => 4000, specs => ['GET /?size=20000']);
my ($c, $r) = ($connect->result, $churn->result);
diag(sprintf "connect and close: %d connections, errors %s; one request each: %d answers, errors %s, p99 %d us",
     $c->{connects}, join(',', map { "$_=$c->{errors}{$_}" } grep { $c->{errors}{$_} } sort keys %{ $c->{errors} }),
     $r->{responses}, join(',', map { "$_=$r->{errors}{$_}" } grep { $r->{errors}{$_} } sort keys %{ $r->{errors} }),
     $r->{latency_us}{p99});
# (how many depends on the machine: 1000 clients overflow the listen
# backlog, server.backlog, 511 by default, and a dropped SYN is sent
# again after 1 s)
cmp_ok($c->{connects}, '>', 100, 'connections were opened and closed at once');
cmp_ok($r->{responses}, '>', 100, 'connections were opened for one request');
is_deeply([ keys %{ $r->{statuses} } ], ['200'], 'every answer was a 200');
is($r->{errors}{closed_mid_response} + $r->{errors}{malformed}, 0, 'no answer was cut or garbled');

is_deeply([ Keystone::Load::worker_pids($t) ], \@workers, 'no worker died');
unlike($t->error_log, qr/worker-exit/, 'no worker exit was logged');
my %after;
ok($t->wait_for(sub {
    %after = map { $_ => Keystone::Load::fd_count($_) } $master, @workers;
    !grep { $after{$_} != $before{$_} } keys %before;
}, timeout => 6), 'the descriptors of the master and of each worker are back to what they were')
    or diag(explain({ before => \%before, after => \%after }));
ok(all_idle(), 'all workers idle again');
is($t->request($port, GET => '/after')->{status}, 200, 'and serving');
is($t->stop, 0, 'clean stop');

done_testing;
