#!/usr/bin/perl
# Every worker busy: an idle keep-alive connection gives its worker up to
# a connection waiting in the accept queue (nginx closes idle keep-alive
# connections when it runs short of them); while a worker is free, idle
# keep-alive connections are left alone until idle_timeout.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time);
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');

$t->write_config(<<"EOF2");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 1
  max_workers: 1
  idle_timeout: 30s
  access_log: "off"
tenants:
  - name: demo
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF2
$t->start;

# one client keeps the only worker with an idle keep-alive connection
my $idle = $t->conn($port);
is($idle->request(GET => '/first', headers => [ Connection => 'keep-alive' ])->{status}, 200,
   'a keep-alive client is served');
ok(!$idle->closed_by_peer(timeout => 2.5), 'and kept while nobody else needs the worker');

# a second client arrives: it waits in the accept queue
my $t0 = time;
my $r = $t->request($port, GET => '/second', timeout => 40);
my $took = time - $t0;
is($r->{status}, 200, 'a second client is served by the same one worker');
ok($took < 10, sprintf('within seconds, not at the first one\'s idle_timeout of 30 s (%.2fs)', $took));
ok($idle->closed_by_peer(timeout => 1), 'the idle keep-alive connection was closed for it');
$idle->close;

# a client that keeps its connection busy gives way between two requests
my $busy = $t->conn($port);
my $ok = 1;
$ok &&= ($busy->request(GET => "/busy$_", headers => [ Connection => 'keep-alive' ])->{status} // 0) == 200
    for 1 .. 3;
ok($ok, 'a keep-alive client sending request after request');
my $pid = fork // die "fork: $!";
if ($pid == 0) {
    # keep the connection busy: a request every 50 ms for 10 s
    for (1 .. 200) {
        last unless ($busy->request(GET => '/loop', headers => [ Connection => 'keep-alive' ])->{status} // 0) == 200;
        Time::HiRes::sleep(0.05);
    }
    exit 0;
}
Time::HiRes::sleep(0.3);
$t0 = time;
$r = $t->request($port, GET => '/third', timeout => 30);
$took = time - $t0;
is($r->{status}, 200, 'a client arriving meanwhile is served');
ok($took < 8, sprintf('between two of the busy client\'s requests, seconds later (%.2fs)', $took));
waitpid($pid, 0);
$busy->close;

done_testing;
