#!/usr/bin/perl
# kill -9 of a random worker every 200 ms under load: only the requests in
# flight on the killed workers fail (at most one per kill: a worker serves
# one connection at a time), nobody gets a 5xx, the pool refills, the
# scoreboard holds exactly the live workers afterwards (keystonectl
# status -j) and no upstream is left with requests "in flight" that died
# with their worker.  make check: 3 s of kills; make check-soak: 30 s.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use Keystone::Test;
use Keystone::Load;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');
my $storm = Keystone::Load::soak() ? 30 : 3;

$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 4
  min_spare: 1
  max_spare: 8
  max_workers: 8
  max_keepalive_requests: 50
  access_log: "off"
health_defaults:
  interval: 1h
  max_fails: 0
tenants:
  - name: app
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
$t->start;
$t->wait_for(sub { Keystone::Load::worker_pids($t) == 4 }, timeout => 5);

# requests that take a while, so that kills find some in flight
my $load = Keystone::Load->start($t, port => $port, conns => 6, duration => $storm + 2,
    timeout => 5000, specs => [ 'GET /fast', 'GET /slow?delay=30' ]);
sleep 1;
my ($kills, %victims) = (0);
my $begin = time;
for (my $k = 1; time < $begin + $storm; $k++) {
    my @w = Keystone::Load::worker_pids($t);
    if (@w) {
        my $pid = $w[ int rand @w ];
        $kills++ if kill 'KILL', $pid;
        $victims{$pid} = 1;
    }
    my $next = $begin + $k * 0.2;
    sleep $next - time if $next > time;
}
my $r = $load->result;
diag(sprintf "%d kills; %d requests, %d failed (%s); latency p99 %d us",
     $kills, $r->{requests}, Keystone::Load::failed($r),
     join(',', map { "$_=$r->{errors}{$_}" } grep { $r->{errors}{$_} } sort keys %{ $r->{errors} }),
     $r->{latency_us}{p99});

# paced at 5 a second; a machine busy with other work may lag a little
ok($kills >= 4 * $storm, "a worker was killed every 200 ms ($kills kills in $storm s)");
# (a victim still tearing down can be picked again: count processes)
my $victims = keys %victims;
cmp_ok($r->{responses}, '>', 100, 'traffic went on during the kills');
is_deeply([ sort keys %{ $r->{statuses} } ], ['200'], 'every answer was a 200: no 5xx');
cmp_ok(Keystone::Load::failed($r), '<=', scalar(keys %victims), 'at most one failed request per kill');
is($r->{errors}{timeout} + $r->{errors}{connect} + $r->{errors}{malformed}, 0,
   'and those were cut connections (no timeout, no refused connect, nothing malformed)');

# the pool refills and the scoreboard has exactly the live workers
my $settled = $t->wait_for(sub {
    my @w = Keystone::Load::worker_pids($t);
    my $s = Keystone::Load::status($t) or return 0;
    my @slots = sort { $a <=> $b } map { $_->{pid} } @{ $s->{workers}{list} };
    return @w >= 4 && "@slots" eq "@w";
}, timeout => 10);
ok($settled, 'the pool refilled and the scoreboard lists exactly the live workers');
my @w = Keystone::Load::worker_pids($t);
is(scalar(grep { $victims{$_} } @w), 0, 'no victim is still there');
my $s = Keystone::Load::status($t);
is($s->{workers}{total}, scalar @w, 'no scoreboard slot leaked: one per live worker')
    or diag(explain($s->{workers}));
my ($u) = @{ $s->{tenants}[0]{upstreams} };
is($u->{active}, 0, 'no request counted in flight at the upstream after the load')
    or diag(explain($u));

# every victim's death was seen and logged; the master never gave up
my $log = $t->error_log;
my $exits = () = $log =~ /worker-exit: worker \d+ exited: pid \d+, gen \d+, status killed by signal 9/g;
is($exits, $victims, "every victim was reaped and logged ($victims)");
unlike($log, qr/worker-fatal/, 'no generation was declared unstartable');
my $after = $t->request($port, GET => '/after');
is($after->{status}, 200, 'serving after the storm');
is($t->stop, 0, 'clean stop');

# The respawn delay is for crash loops only: a worker killed before it
# served anything doubles its slot's delay, one that served starts it over.
$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 1
  access_log: "off"
tenants:
  - name: app
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
$t->start;
my @delays;
for my $round (1 .. 4) {
    my $served = $round == 4;
    my ($w) = Keystone::Load::worker_pids($t);
    # a fresh worker: wait until it sits in its slot (idle), then kill it
    # with or without a request served
    $t->wait_for(sub {
        my $s = Keystone::Load::status($t) or return 0;
        return grep { $_->{pid} == $w && $_->{state} eq 'idle' } @{ $s->{workers}{list} };
    });
    is($t->request($port, GET => '/x')->{status}, 200, "round $round: a request served") if $served;
    my $mark = $t->log_mark;
    kill 'KILL', $w;
    my $line = $t->wait_log(qr/worker-respawn: worker \d+ will be respawned in \d+ ms/, from => $mark);
    push @delays, $line =~ /in (\d+) ms/ ? $1 : undef;
    $t->wait_for(sub { my ($n) = Keystone::Load::worker_pids($t); $n && $n != $w });
}
is_deeply(\@delays, [ 100, 200, 400, 100 ],
          'killed before serving: 100, 200, 400 ms; killed after serving a request: 100 ms again');

done_testing;
