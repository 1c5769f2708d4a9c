#!/usr/bin/perl
# The state file truncated while every worker but the spare holds a quiet
# keep-alive connection.  Their scoreboard slots are zeroed and they
# cannot take them again until their clients speak; meanwhile the master
# must not count them idle: if it did, it would see more idle workers
# than max_spare, retire the one real spare, start no other, and a new
# client would wait in the backlog behind the held connections.
use strict;
use warnings;
use Test::More;
use Keystone::Test;
use Keystone::Load;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');
my $dir = $t->dir;
my $state = "$dir/keystoned.state";

$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 2
  min_spare: 1
  max_spare: 2
  max_workers: 6
  idle_timeout: 60s
  state_file: $state
  access_log: "off"
health_defaults:
  interval: 1h
tenants:
  - name: app
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
$t->start;

# three workers held by quiet keep-alive connections, and one spare
my @held;
for my $i (1 .. 3) {
    my $c = $t->conn($port);
    $c->send(Keystone::Test::build_request(GET => "/held$i", keepalive => 1));
    my $r = $c->response(timeout => 5);
    is($r->{status}, 200, "held connection $i answered");
    push @held, $c;
}
sub states {
    my $s = Keystone::Load::status($t) or return ();
    return map { $_->{state} } grep { $_->{state} ne 'free' } @{ $s->{workers}{list} };
}
ok($t->wait_for(sub { my @s = states(); @s == 4 && 1 == grep { $_ eq 'idle' } @s }),
   'three workers hold the connections, one spare is idle')
    or diag(explain([ states() ]));
my @workers = Keystone::Load::worker_pids($t);

my $mark = $t->log_mark;
open my $fh, '>', $state or die "$state: $!";    # what `: > file` does
close $fh;
ok($t->wait_log(qr/state-file: the state file \Q$state\E was overwritten: its header is restored/,
                from => $mark, timeout => 3), 'the truncated state file is repaired');
# the spare takes its slot again within a second (its idle wait wakes
# every second); the master's spare count runs once a second
ok($t->wait_for(sub { grep { $_ eq 'idle' } states() }, timeout => 3), 'the spare is back in its slot');
ok(!$t->wait_log(qr/worker-retire/, from => $mark, timeout => 3),
   'no worker is retired: the held ones are not counted idle');
is(scalar(grep { $t->alive($_) } @workers), 4, 'all four workers are still there');
my $r = $t->request($port, GET => '/new', timeout => 3);
is($r->{status}, 200, 'a new client is answered at once, the held connections still open');

for my $i (0 .. 2) {
    $held[$i]->send(Keystone::Test::build_request(GET => '/again', keepalive => 1));
    is($held[$i]->response(timeout => 5)->{status}, 200, 'a held connection goes on: ' . ($i + 1));
    $held[$i]->close;
}
is($t->stop, 0, 'clean stop');

done_testing;
