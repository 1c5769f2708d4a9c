#!/usr/bin/perl
# SIGHUP 20 times a second under load (2 s in make check, 10 s with
# KS_SOAK=1).  The configurations alternate so that every other reload
# moves the admin listener (all workers replaced while the public
# listener keeps its socket) and the others only swap a tenant's Lua
# script (the workers stay and rebuild their tables and Lua states
# between two requests of a kept-alive connection).  Expected: no failed request; the generation ends at
# the number of successful reloads ("reload applied" lines: HUPs that
# arrive together merge); no pile-up (never more processes than
# scoreboard slots, and once the storm is over only the last
# generation's workers remain, within shutdown_timeout).  Then an old
# worker stuck in a request that never ends is killed shutdown_timeout
# after the reload that replaced it.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep time);
use Keystone::Test;
use Keystone::Load;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my @admin = ($t->free_port, $t->free_port);
my $app = $t->backend(name => 'app');
my $storm = Keystone::Load::soak() ? 10 : 2;

for my $script ('hello.lua', 'hello2.lua') {
    $t->write_file($script, <<'LUA');
router:add_route("GET", "/hello", {handler = function(req, res) res:write("hello") end})
LUA
}
sub config {
    my ($i) = @_;
    my $dir = $t->dir;
    my $script = $i % 2 ? 'hello2.lua' : 'hello.lua';
    my $a = $admin[ int($i / 2) % 2 ];
    return <<"EOF";
server:
  public_addr: 127.0.0.1:$port
  admin_addr: 127.0.0.1:$a
  workers: 3
  min_spare: 1
  max_spare: 4
  max_workers: 6
  shutdown_timeout: 1s
  access_log: "off"
health_defaults:
  interval: 1h
tenants:
  - name: app
    domains: [app.test]
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
  - name: lua
    domains: [lua.test]
    lua_script: $dir/$script
EOF
}
$t->write_config(config(0));
my $master = $t->start;
my $gen0 = Keystone::Load::status($t)->{generation};

my $load = Keystone::Load->start($t, port => $port, conns => 4, duration => $storm + 1.5,
    timeout => 5000, specs => [ 'GET /p app.test', 'GET /hello lua.test' ]);
sleep 0.5;
# the file is replaced by a rename, as careful tools do, so that the
# master never reads it half-written
sub put_config {
    my ($yaml) = @_;
    my $tmp = $t->write_file('keystone.yaml.new', $yaml);
    rename $tmp, $t->dir . '/keystone.yaml' or die "rename: $!";
}
my ($hups, $max_procs, $i) = (0, 0, 0);
my $begin = time;
while (time < $begin + $storm) {
    put_config(config(++$i));
    $hups++ if kill 'HUP', $master;
    if ($i % 3 == 0) {
        my $n = $t->processes_of($master);
        $max_procs = $n if $n > $max_procs;
    }
    my $next = $begin + $i * 0.05;
    sleep $next - time if $next > time;
}
my $storm_end = time;
my $r = $load->result;
diag(sprintf "%d HUPs; %d requests, %d retried, %d failed; p99 %d us; at most %d processes",
     $hups, $r->{requests}, $r->{retries}, Keystone::Load::failed($r), $r->{latency_us}{p99},
     $max_procs);

# paced at 20 a second; a machine busy with other work may lag a little
cmp_ok($hups, '>=', 12 * $storm, "HUP sent about 20 times a second ($hups in $storm s)");
is(Keystone::Load::failed($r), 0, 'no request failed during the storm')
    or diag(explain($r->{errors}));
is_deeply([ keys %{ $r->{statuses} } ], ['200'], 'every answer was a 200');
is(Keystone::Load::spec($r, 1)->{statuses}{200}, Keystone::Load::spec($r, 1)->{responses},
   'the Lua tenant answered throughout');
cmp_ok($max_procs, '<=', 12, 'never more worker processes than scoreboard slots');

# the generation counts the reloads that happened
ok($t->wait_for(sub {
    my $s = Keystone::Load::status($t);
    $s && $s->{reload}{ok} + $s->{reload}{failed} > 0 &&
        $t->error_log =~ /reload applied: generation (\d+)[^\n]*\n(?!.*reload applied)/s &&
        $1 == $s->{generation};
}), 'the reloads settled');
my $log = $t->error_log;
my $applied = () = $log =~ /reload: reload applied: generation \d+/g;
my $failed = () = $log =~ /reload FAILED/g;
my $s = Keystone::Load::status($t);
is($failed, 0, 'no reload failed');
# how many merge depends on how fast the master reloads (much slower under
# the sanitizers); what matters is that they keep coming and are counted
cmp_ok($applied, '>=', 2 * $storm, "reloads kept being applied ($applied of $hups HUPs; the rest merged)");
cmp_ok($applied, '<=', $hups, 'never more reloads than HUPs');
is($s->{generation}, $gen0 + $applied, 'the generation is the start one plus the applied reloads');
is($s->{reload}{ok}, $applied, 'keystonectl counts them too');

# only the last generation's workers remain, within shutdown_timeout
my $last;
my $drained = $t->wait_for(sub {
    my $st = Keystone::Load::status($t) or return 0;
    my @w = @{ $st->{workers}{list} };
    my @kids = $t->processes_of($master);
    $last = $st;
    # (not necessarily 3 of them: a worker recycled after
    # max_requests_per_worker is replaced only when spares run short)
    return @w == @kids && @w >= 1 && !grep { $_->{generation} != $st->{generation} } @w;
}, timeout => 1.5 * Keystone::Load::slow());
ok($drained, sprintf 'within shutdown_timeout only workers of the last generation remain (%.1f s)',
   time - $storm_end) or diag(explain($last->{workers}));
unlike($log, qr/still busy \d+ ms after it was told to finish/, 'none had to be killed');
my $where = int($i / 2) % 2;
my $answer = $t->request($admin[$where], GET => '/admin/health');
is($answer->{status}, 200, 'the admin listener is where the last configuration put it');
is($t->request($admin[1 - $where], GET => '/admin/health')->{error}, 'connect',
   'and no longer where the one before put it');

# a request that outlives the reload which replaced its worker: killed
# after shutdown_timeout
my $c = $t->conn($port);
$c->send("GET /?hang_head=1 HTTP/1.1\r\nHost: app.test\r\n\r\n");
my $busy;
ok($t->wait_for(sub {
    my $st = Keystone::Load::status($t) or return 0;
    ($busy) = grep { $_->{state} eq 'proxying' } @{ $st->{workers}{list} };
    return $busy;
}), 'a worker is stuck waiting for a hanging upstream');
my $mark = $t->log_mark;
$i += 2 - $i % 2;      # the next admin address: workers replaced
put_config(config($i));
kill 'HUP', $master;
my $t0 = time;
ok($t->wait_log(qr/worker-retire: worker \d+ \(pid $busy->{pid}\) still busy 1000 ms after it was told to finish \(shutdown_timeout\): killed/,
                from => $mark, timeout => 3 * Keystone::Load::slow()), 'the stuck old worker is killed');
my $took = time - $t0;
cmp_ok($took, '<', 1 + 0.5 * Keystone::Load::slow(), sprintf 'shutdown_timeout (1 s) after the reload (%.2f s)', $took);
ok($c->closed_by_peer(timeout => 2), 'its connection is closed');
ok($t->wait_for(sub { !$t->alive($busy->{pid}) && !kill 0, $busy->{pid} }), 'the process is gone');
is($t->request($port, GET => '/p', host => 'app.test')->{status}, 200, 'the new workers serve');
is($t->stop, 0, 'clean stop');

done_testing;
