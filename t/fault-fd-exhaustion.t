#!/usr/bin/perl
# File descriptor exhaustion.
#
# A prefork worker holds one client connection at a time, so 200
# connections against keystoned under `ulimit -n 64` do not exhaust
# anything by themselves: the ones no worker has taken wait in the listen
# backlog.  What a worker accumulates is its pool of idle upstream
# connections; with 60 upstreams it would need more than 64 descriptors.
# Part 1: 200 keep-alive connections round-robin over 60 upstreams under
# ulimit -n 64: every request is answered 200 (a worker short of
# descriptors closes its idle upstream connections, which are only a
# cache, instead of failing a request or blaming an upstream), and that
# is logged at most once a second per worker.
# Part 2: a worker whose descriptor limit is lowered below what it holds
# (prlimit) cannot accept: the failure is logged once a second, not per
# attempt, the worker does not spin, and as soon as descriptors are
# available again (the limit raised) it accepts and serves.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use POSIX ();
use Keystone::Test;
use Keystone::Load;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');
my $real = $t->bin('keystoned');
my $wrapper = $t->write_file('keystoned-ulimit', "#!/bin/sh\nulimit -n 64 || exit 1\nexec $real \"\$@\"\n");
chmod 0755, $wrapper;
local $ENV{KEYSTONED} = $wrapper;
my $duration = Keystone::Load::soak() ? 15 : 3;

my $ups = join '', map { "      - { name: u$_, url: \"http://@{[ $app->addr ]}\" }\n" } 1 .. 60;
$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 2
  min_spare: 0
  max_spare: 2
  max_workers: 2
  max_keepalive_requests: 20
  max_requests_per_worker: 0
  access_log: "off"
health_defaults:
  interval: 1h
tenants:
  - name: many
    upstreams:
$ups
EOF
my $master = $t->start;
$t->wait_for(sub { Keystone::Load::worker_pids($t) == 2 });
my @w = Keystone::Load::worker_pids($t);
open my $lim, '<', "/proc/$w[0]/limits" or die;
my ($soft) = grep { /Max open files/ } <$lim>;
like($soft, qr/Max open files\s+64\s+64/, 'the workers run with 64 descriptors');

my $load = Keystone::Load->start($t, port => $port, conns => 200, duration => $duration,
    timeout => 8000, specs => ['GET /x']);
my $peak = 0;
while ($t->alive($load->pid)) {
    for (@w) { my $n = Keystone::Load::fd_count($_) // 0; $peak = $n if $n > $peak }
    sleep 0.05;
}
my $r = $load->result;
diag(sprintf "%d requests on %d connections, %d failed, %d retried; a worker held up to ~%d descriptors (a /proc listing is not atomic)",
     $r->{requests}, $r->{connections}, Keystone::Load::failed($r), $r->{retries}, $peak);
cmp_ok($r->{connections}, '>=', 200, 'all 200 clients were served (and came back after each close)');
is(Keystone::Load::failed($r), 0, 'no request failed');
is_deeply([ keys %{ $r->{statuses} } ], ['200'], 'every answer was a 200');
cmp_ok($peak, '>=', 60, "the workers did run into their limit (peak $peak of 64)");
my @lines = $t->error_log =~ /^(\S+) \[error\] (\d+) descriptors: worker \d+: (?:accept|upstream socket): Too many open files; \d+ idle upstream connections? closed$/mg;
cmp_ok(scalar @lines, '>', 0, 'running out was logged');
my %per;
while (my ($when, $pid) = splice @lines, 0, 2) {
    my ($h, $m, $s) = $when =~ /T(\d+):(\d+):([\d.]+)Z/;
    push @{ $per{$pid} }, $h * 3600 + $m * 60 + $s;
}
my $dense = 0;
for my $times (values %per) {
    # (the line's time is the wall clock, the worker's pacing the
    # monotonic one, each rounded to the millisecond: allow 10 ms)
    for my $i (1 .. $#$times) { $dense++ if $times->[$i] - $times->[$i - 1] < 0.99 }
}
is($dense, 0, 'at most once a second per worker');
my $s = Keystone::Load::status($t);
my @failures = grep { $_->{failures} } @{ $s->{tenants}[0]{upstreams} };
is(scalar @failures, 0, 'no upstream was blamed for it');
is_deeply([ Keystone::Load::worker_pids($t) ], \@w, 'no worker died');
is($t->stop, 0, 'clean stop');

# ---- part 2: a worker that cannot accept ---------------------------------------
$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 1
  max_workers: 1
  access_log: "off"
health_defaults:
  interval: 1h
tenants:
  - name: one
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
$master = $t->start;
my ($w) = Keystone::Load::worker_pids($t);
# the limit is on descriptor numbers: below the lowest free one, all are
# taken.  Read them once the worker sits idle with a set that holds still
# (the readiness probe's connection may still be closing).
sub fds_of {
    opendir my $fdd, "/proc/$w/fd" or die;
    my @fds = sort { $a <=> $b } grep { /^\d+$/ } readdir $fdd;
    closedir $fdd;
    return "@fds";
}
my $set;
$t->wait_for(sub {
    my $st = Keystone::Load::status($t) or return 0;
    return 0 unless grep { $_->{pid} == $w && $_->{state} eq 'idle' } @{ $st->{workers}{list} };
    my $a = fds_of();
    sleep 0.2;
    $set = fds_of();
    return $a eq $set;
});
my %open = map { $_ => 1 } split ' ', $set;
my $held = 0;
$held++ while $open{$held};
my ($code, $out, $err) = $t->run([ 'prlimit', "--pid=$w", "--nofile=$held:64" ]);
is($code, 0, "the worker's limit lowered to the $held descriptors it holds") or diag($err);
my $mark = $t->log_mark;
my $cpu0 = cpu_seconds($w);
my $c = $t->conn($port);
$c->send("GET /x HTTP/1.1\r\nHost: localhost\r\n\r\n");
my $waiting = $c->response(timeout => 2.5);
is($waiting->{error}, 'timeout', 'a new connection is not served while the worker has no descriptor');
my $cpu = cpu_seconds($w) - $cpu0;
my @acc = $t->error_log($mark) =~ /descriptors: worker 0: accept: Too many open files; 0 idle upstream connections closed/g;
cmp_ok(scalar @acc, '>=', 2, 'the accept failure is logged ...');
cmp_ok(scalar @acc, '<=', 4, '... once a second, not once per attempt (' . scalar(@acc) . ' lines in 2.5 s)');
cmp_ok($cpu, '<', 0.5, sprintf 'the worker does not spin meanwhile (%.2f s of CPU in 2.5 s)', $cpu);
($code, $out, $err) = $t->run([ 'prlimit', "--pid=$w", '--nofile=64:64' ]);
is($code, 0, 'the limit raised again: descriptors are free') or diag($err);
my $t0 = time;
my $got = $c->response(timeout => 3);
is($got->{status}, 200, 'the waiting request is served then');
cmp_ok(time - $t0, '<', 1 * Keystone::Load::slow(), 'at once');
$c->close;     # the only worker's connection
is($t->request($port, GET => '/y')->{status}, 200, 'and the next ones too');
is(Keystone::Load::worker_pids($t), 1, 'by the same worker');
is($t->stop, 0, 'clean stop');

sub cpu_seconds {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my @f = split ' ', (<$fh> =~ /\)\s+(.*)/)[0];
    return ($f[11] + $f[12]) / POSIX::sysconf(POSIX::_SC_CLK_TCK());
}

done_testing;
