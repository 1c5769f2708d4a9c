#!/usr/bin/perl
# The prefork pool: min_spare growth, max_spare retirement, recycling
# after max_requests_per_worker, the max_workers cap.
use strict;
use warnings;
use Test::More;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;

sub config {
    my (%o) = @_;
    return <<"EOF";
server:
  public_addr: 127.0.0.1:$port
  workers: $o{workers}
  min_spare: $o{min_spare}
  max_spare: $o{max_spare}
  max_workers: $o{max_workers}
  max_requests_per_worker: @{[ $o{recycle} // 0 ]}
  access_log: "off"
tenants: []
EOF
}

# ---- too few idle workers: the pool grows to min_spare ------------------------------------
$t->write_config(config(workers => 1, min_spare => 3, max_spare => 5, max_workers => 8));
my $master = $t->start;
ok($t->wait_for(sub { $t->processes_of($master) == 3 }, timeout => 6),
   'one worker at start grows to min_spare (3)');
ok(!$t->wait_for(sub { $t->processes_of($master) > 3 }, timeout => 2.5), 'and no further');
$t->stop;

# ---- too many idle workers: retired one per tick down to max_spare ------------------------
$t->write_config(config(workers => 5, min_spare => 1, max_spare => 2, max_workers => 8));
$master = $t->start;
ok($t->wait_for(sub { $t->processes_of($master) == 5 }), 'five workers at start');
ok($t->wait_for(sub { $t->processes_of($master) == 2 }, timeout => 8),
   'idle workers retired down to max_spare (2)');
ok($t->wait_log(qr/retiring idle worker \d+ \(pid \d+\): \d+ idle > max_spare 2/), 'retirement logged');
ok($t->wait_log(qr/worker \d+ exited: pid \d+, gen 1, status exit 0/), 'retired workers exit 0');
$t->stop;

# ---- recycling after max_requests_per_worker ------------------------------------------------
$t->write_config(config(workers => 1, min_spare => 1, max_spare => 1, max_workers => 2, recycle => 3));
$master = $t->start;    # start polls /admin/health: request 1 of the first worker
my ($first) = $t->processes_of($master);
my $c = $t->conn($port);
my @r = map { $c->request(GET => '/admin/health', headers => [Connection => 'keep-alive']) } 1 .. 2;
is($r[0]{headers}{connection}, 'keep-alive', 'request 2 keeps the connection');
is($r[1]{headers}{connection}, 'close', 'request 3, the last of this worker, closes it');
ok($c->closed_by_peer(timeout => 3), 'the worker closes the connection');
ok($t->wait_log(qr/worker \d+ exited: pid $first, gen 1, status exit 0/), 'the recycled worker exits 0');
ok($t->wait_for(sub { my @w = $t->processes_of($master); @w == 1 && $w[0] != $first }, timeout => 5),
   'and is replaced');
is($t->request($port, GET => '/admin/health')->{status}, 200, 'service goes on');
$t->stop;

# even when the spare policy would not ask for it (min_spare 0)
$t->write_config(config(workers => 1, min_spare => 0, max_spare => 1, max_workers => 1, recycle => 2));
$master = $t->start;    # request 1
($first) = $t->processes_of($master);
is($t->request($port, GET => '/admin/health')->{status}, 200, 'request 2, the last of this worker');
ok($t->wait_for(sub { my @w = $t->processes_of($master); @w == 1 && $w[0] != $first }, timeout => 2),
   'with min_spare 0 the recycled worker is replaced at once too');
is($t->request($port, GET => '/admin/health')->{status}, 200, 'service goes on');
$t->stop;

# ---- max_workers caps the pool, and saying so happens once ------------------------------------
# Two workers, both wanted idle: once one is busy with a slow client the
# master would fork a third, but max_workers says no.
$t->write_config(config(workers => 2, min_spare => 2, max_spare => 2, max_workers => 2));
$master = $t->start;
my $busy = $t->conn($port);
$busy->send("GET /admin/health HTTP/1.1\r\nHost: loc");    # half a head: that worker is busy
ok($t->wait_log(qr/max_workers \(2\) reached/, timeout => 5), 'reaching max_workers is logged');
ok(!$t->wait_for(sub { $t->processes_of($master) > 2 }, timeout => 2.5), 'never more than max_workers');
my @lines = grep { /max_workers \(2\) reached/ } split /\n/, $t->error_log;
is(scalar @lines, 1, 'logged once, not every tick');
$busy->close;
$t->stop;

done_testing;
