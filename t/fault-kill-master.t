#!/usr/bin/perl
# kill -9 of the master under load: every request in flight at that
# moment is answered in full, the workers then exit within 1 s (the
# lifeline), and a new master starts on the same ports at once (stale
# state file, pid file and control socket replaced) and serves.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use Keystone::Test;
use Keystone::Load;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $admin = $t->free_port;
my $app = $t->backend(name => 'app');
my $state = $t->dir . '/keystoned.state';
my $pidfile = $t->dir . '/keystoned.pid';

$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  admin_addr: 127.0.0.1:$admin
  workers: 4
  min_spare: 1
  max_spare: 4
  pid_file: $pidfile
  state_file: $state
  control_socket: @{[ $t->dir ]}/keystoned.sock
  access_log: "off"
health_defaults:
  interval: 1h
tenants:
  - name: app
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF

my $rounds = Keystone::Load::soak() ? 10 : 2;
for my $round (1 .. $rounds) {
    my $master = $t->start;
    $t->wait_for(sub { Keystone::Load::worker_pids($t) == 4 }, timeout => 5);
    my @workers = Keystone::Load::worker_pids($t);

    # four connections, one per worker, each always waiting 500 ms for
    # its upstream; the master dies while the scoreboard shows them
    # waiting
    my $load = Keystone::Load->start($t, port => $port, conns => 4, duration => 3,
        timeout => 5000, events => 1, specs => ['GET /slow?delay=500']);
    sleep 0.6 + rand 0.3;
    $t->wait_for(sub {
        my $s = Keystone::Load::status($t) or return 0;
        return 3 <= grep { $_->{state} eq 'proxying' } @{ $s->{workers}{list} };
    });
    kill 'KILL', $master;
    my $killed = time;
    my $gone = $t->wait_for(sub { !grep { $t->alive($_) } @workers }, timeout => 5);
    my $all_gone = time;
    ok($gone, "round $round: every worker exited after the master was killed");
    my $r = $load->result;
    my $t0 = $r->{started_ms} / 1000;

    # the requests in flight when the master died
    my $kill_ms = ($killed - $t0) * 1000;
    my @inflight = grep { $_->[0] < $kill_ms - 5 && $_->[1] > $kill_ms + 5 } @{ $r->{events} };
    my @ok = grep { $_->[4] eq '200' } @inflight;
    cmp_ok(scalar @inflight, '>=', 2, "round $round: requests were in flight at the kill (" .
           scalar(@inflight) . ')');
    is(scalar @ok, scalar @inflight, "round $round: each of them was answered 200")
        or diag(explain(\@inflight));
    my ($last_end) = sort { $b <=> $a } map { $_->[1] } @ok;
    my $after = $all_gone - $t0 - ($last_end // 0) / 1000;
    my $slow = Keystone::Load::slow();
    cmp_ok($after, '<', 1 * $slow, sprintf "round $round: the workers were gone %.0f ms after their last answer",
           $after * 1000);
    cmp_ok($all_gone - $killed, '<', (0.5 + 1 + 0.2) * $slow,
           'and within the request time plus 1 s of the kill');

    # a new master on the same ports at once: the old one's state file,
    # pid file and control socket are still there
    ok($t->wait_for(sub { !$t->alive($master) }), 'the master is reaped (as init would)');
    ok(-e $state && -e $pidfile, 'the dead master left its state and pid files');
    my ($code, undef, $err) = $t->ctl('-s', $state, 'status');
    is($code, 1, 'keystonectl: not running');
    like($err, qr/keystoned is not running \(stale state file .*master pid $master is gone\)/,
         'and says the state file is stale');
    my $start = time;
    my $new = eval { $t->start };
    ok($new, "round $round: a new master started at once") or diag($@);
    cmp_ok(time - $start, '<', 2, 'without waiting for anything');
    is($t->request($port, GET => '/x')->{status}, 200, 'it serves on the public port');
    is($t->request($admin, GET => '/admin/health')->{status}, 200, 'and on the admin port');
    my $s = Keystone::Load::status($t);
    is($s->{master_pid}, $new, 'keystonectl sees the new master');
    is($t->stop, 0, 'clean stop');
}

done_testing;
