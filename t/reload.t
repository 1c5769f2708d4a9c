#!/usr/bin/perl
# Reload: HUP and keystonectl reload, applied on open keep-alive
# connections, broken configs keeping the old one, restart-required
# changes, new listeners replacing workers, no failed request meanwhile.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $conf = "$t->{dir}/keystone.yaml";

sub config {
    my (%o) = @_;
    my $listen = $o{port} // $port;
    my $base = $o{base} // '/admin';
    my $extra = $o{extra} // '';
    return <<"EOF";
server:
  public_addr: 127.0.0.1:$listen
  admin_base_path: "$base"
  workers: 2
  min_spare: 1
  max_spare: 4
  max_workers: 8
  idle_timeout: 30s
  access_log: "off"
$extra
tenants:
  - name: demo
    domains: [demo.example]     # other hosts have no tenant: 404
    upstreams:
      - name: app
        url: http://127.0.0.1:9
EOF
}

my $state = "$t->{dir}/keystoned.state";

sub status_json {
    my ($code, $out, $err) = $t->ctl('-s', $state, 'status', '-j');
    return $code == 0 ? decode_json($out) : undef;
}

sub generation { my $s = status_json(); $s ? $s->{generation} : -1 }

$t->write_config(config());
my $master = $t->start;
is(generation(), 1, 'starts at generation 1');

# ---- HUP with a changed config, seen on an already open keep-alive connection ----
my $c = $t->conn($port);
my $r = $c->request(GET => '/admin/health', headers => [Connection => 'keep-alive']);
is($r->{status}, 200, 'health under /admin');
is($r->{json}{generation}, 1, 'health reports generation 1');

$t->write_config(config(base => '/ops'));
$t->signal('HUP');
ok($t->wait_for(sub { generation() == 2 }), 'HUP publishes generation 2');
ok($t->wait_log(qr/reload applied: generation 2/), 'reload logged');
$r = $c->request(GET => '/ops/health', headers => [Connection => 'keep-alive']);
is($r->{status}, 200, 'the same connection sees the new admin_base_path');
is($r->{json}{generation}, 2, 'and the new generation');
$r = $c->request(GET => '/admin/health', headers => [Connection => 'keep-alive']);
is($r->{status}, 404, 'the old path is gone on that connection');
$c->close;

# idle workers follow the generation too (they wake at least once a second)
ok($t->wait_for(sub {
    my $s = status_json() or return 0;
    my @w = @{ $s->{workers}{list} };
    @w && !grep { $_->{generation} != 2 } @w;
}, timeout => 5), 'every worker reports generation 2');

# ---- a broken config: old one kept, status says why ---------------------------------
$t->write_config(config(base => '/ops') . "bogus_key: 1\n");
my $mark = $t->log_mark;
$t->signal('HUP');
ok($t->wait_log(qr/reload FAILED, keeping generation 2/, from => $mark), 'failed reload logged');
ok($t->wait_log(qr/keystone\.yaml:\d+:1: bogus_key: unknown key/, from => $mark),
   'the error names file, line, column and key');
my $s = status_json();
is($s->{generation}, 2, 'generation unchanged');
is($s->{reload}{result}, 'failed', 'status -j: last reload failed');
like($s->{reload}{message}, qr/keystone\.yaml:\d+:1: bogus_key: unknown key/, 'status -j: with the error');
my ($code, $out) = $t->ctl('-c', $conf, 'status');
like($out, qr/^generation 2, last reload: failed at \S+: 1 error: \S*keystone\.yaml:\d+:1: bogus_key: unknown key$/m,
     'status (text) shows the failure and why, on one line');
is($t->request($port, GET => '/ops/health')->{status}, 200, 'the old config keeps serving');

# ---- keystonectl reload: exit codes and messages --------------------------------------
($code, $out, my $err) = $t->ctl('-c', $conf, 'reload');
is($code, 4, 'reload of an invalid config exits 4');
like($err, qr/configuration invalid \(1 error\), old configuration kept/, 'and says so');
like($err, qr/bogus_key: unknown key/, 'with the errors');

# keystonectl -c would follow the new state_file; -s names the running one
$t->write_config(config(base => '/ops', extra => '  state_file: other.state'));
($code, $out, $err) = $t->ctl('-s', $state, 'reload');
is($code, 3, 'a change needing a restart exits 3');
like($err, qr/restart required: server\.state_file changed/, 'and names the key');
is(generation(), 2, 'still generation 2');
(undef, $out) = $t->ctl('-s', $state, 'status');
like($out, qr/^generation 2, last reload: restart required at \S+: server\.state_file changed$/m,
     'status (text): restart required, and why');

$t->write_config(config(base => '/admin'));
($code, $out, $err) = $t->ctl('-c', $conf, 'reload');
is($code, 0, 'a valid reload exits 0') or diag($err);
like($out, qr/reload applied: generation 3/, 'and names the generation');
is($t->request($port, GET => '/admin/health')->{status}, 200, 'applied');
$s = status_json();
is($s->{reload}{result}, 'applied', 'status -j: applied');
is($s->{reload}{failed}, 3, 'three failed reloads counted');
is($s->{reload}{ok}, 2, 'two applied reloads counted');

# ---- requests keep succeeding while reloads happen --------------------------------------
# Signals of one kind that arrive while one is pending merge into one, so
# ten HUPs give between one and ten reloads: every one that happened must
# have been applied, and the generation must count exactly those.
my $hup_mark = $t->log_mark;
my $pid = fork // die;
if ($pid == 0) {
    for (1 .. 10) { kill 'HUP', $master; select(undef, undef, undef, 0.05) }
    exit 0;
}
my ($ok, $bad) = (0, 0);
my $deadline = time + 2;
while (time < $deadline) {
    my $x = $t->request($port, GET => '/admin/health');
    ($x->{status} // 0) == 200 ? $ok++ : $bad++;
}
waitpid $pid, 0;
is($bad, 0, "no failed request during 10 reloads ($ok served)");
sub applied_since { my @l = $t->error_log($hup_mark) =~ /reload applied: generation \d+/g; scalar @l }
ok($t->wait_for(sub { my $n = applied_since(); $n >= 1 && generation() == 3 + $n }),
   'every reload that happened is a new generation');
my $applied = applied_since();
cmp_ok($applied, '>=', 1, "HUPs were reloaded ($applied of 10 signals; the rest merged)");
ok($applied <= 10, 'never more reloads than signals');
unlike($t->error_log($hup_mark), qr/reload FAILED/, 'none failed');

# ---- a new listener address: new workers first, old ones retire ------------------------
my @old = $t->processes_of($master);
my $port2 = $t->free_port;
$t->write_config(config(port => $port2));
($code, $out, $err) = $t->ctl('-c', $conf, 'reload');
is($code, 0, 'reload with a new public_addr applied') or diag($err);
is($t->request($port2, GET => '/admin/health')->{status}, 200, 'the new address serves');
ok($t->wait_for(sub { !grep { $t->alive($_) } @old }), 'the old workers exited');
ok($t->wait_for(sub { my @n = $t->processes_of($master); @n >= 2 }), 'new workers serve');
my (undef, $how) = $t->raw($port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
is($how, 'connect', 'the old address is closed');

# a listener that cannot be bound fails the reload and keeps everything
my $blocker = IO::Socket::INET->new(LocalAddr => '127.0.0.1:0', Listen => 5) or die;
$t->write_config(config(port => $blocker->sockport));
($code, $out, $err) = $t->ctl('-c', $conf, 'reload');
is($code, 4, 'a reload whose address is taken fails');
like($err, qr/cannot listen on 127\.0\.0\.1:\d+: Address already in use/, 'and says why');
is($t->request($port2, GET => '/admin/health')->{status}, 200, 'the current address still serves');

# ---- server.backlog: the listen queue, set again on the kept socket by a reload -------
# ss(8) shows a listening socket's queue length as its Send-Q
sub backlog_of {
    my ($p) = @_;
    my $line = `ss -ltnH 'sport = :$p' 2>/dev/null` // '';
    return $line =~ /^LISTEN\s+\d+\s+(\d+)\s/ ? $1 : undef;
}
SKIP: {
    skip 'ss(8) not installed (Debian iproute2; ./bootstrap installs it as root)', 5
        unless defined backlog_of($port2);
    is(backlog_of($port2), 511, 'the listen queue is 511 by default');
    @old = $t->processes_of($master);
    $t->write_config(config(port => $port2, extra => '  backlog: 37'));
    ($code, $out, $err) = $t->ctl('-c', $conf, 'reload');
    is($code, 0, 'a reload with a new backlog applied') or diag($err);
    is(backlog_of($port2), 37, 'the kept listener has the new queue length');
    ok((grep { $t->alive($_) } @old) == @old, 'without replacing the workers');
    is($t->request($port2, GET => '/admin/health')->{status}, 200, 'and it serves');
}

# ---- server.worker_scheduling: the workers' policy, changed in place by a reload -------
# the policy is field 41 of /proc/PID/stat (sched(7): 0 SCHED_OTHER, 3 SCHED_BATCH)
sub policy_of {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return undef;
    my $stat = <$fh> // return undef;
    $stat =~ s/^.*\)\s+//s;           # comm may hold spaces; $f[0] is field 3
    return (split ' ', $stat)[38];
}
sub policies { join ',', sort map { policy_of($_) // 'gone' } @_ }
SKIP: {
    skip 'SCHED_BATCH not permitted here (chrt -b 0 true failed)', 7
        unless system('chrt -b 0 true >/dev/null 2>&1') == 0;
    @old = $t->processes_of($master);
    ok($t->wait_for(sub { policies(@old) eq join ',', map { 3 } @old }),
       'the workers run under SCHED_BATCH by default') or diag(policies(@old));
    is(policy_of($master), 0, 'the master keeps SCHED_OTHER');
    $t->write_config(config(port => $port2, extra => '  worker_scheduling: normal'));
    ($code, $out, $err) = $t->ctl('-c', $conf, 'reload');
    is($code, 0, 'a reload to worker_scheduling: normal applied') or diag($err);
    ok($t->wait_for(sub { policies(@old) eq join ',', map { 0 } @old }),
       'every worker switched to SCHED_OTHER') or diag(policies(@old));
    ok((grep { $t->alive($_) } @old) == @old, 'without replacing the workers');
    $t->write_config(config(port => $port2, extra => '  worker_scheduling: batch'));
    ($code, $out, $err) = $t->ctl('-c', $conf, 'reload');
    is($code, 0, 'and back to batch') or diag($err);
    ok($t->wait_for(sub { policies(@old) eq join ',', map { 3 } @old }),
       'every worker switched back') or diag(policies(@old));
}

# ---- a smaller route_table_size is applied on reload ---------------------------------------
my $many = config(port => $port2, extra => "limits:\n  route_table_size: 64KB");
$many .= "  - { name: t$_, domains: [t$_.example], upstreams: [ { name: u, url: \"http://127.0.0.1:9\" } ] }\n"
    for 1 .. 250;
$t->write_config($many);
($code, $out, $err) = $t->ctl('-c', $conf, 'reload');
isnt($code, 0, 'a reload to 250 tenants in a 64KB route table (4MB at start) is refused');
like($err, qr/the route table needs more than limits\.route_table_size \(65536 bytes\)/, 'the smaller size applies');
is($t->request($port2, GET => '/admin/health')->{status}, 200, 'the old config keeps serving');

is($t->stop >> 8, 0, 'clean stop');
done_testing;
