#!/usr/bin/perl
# The process model: N workers + master, worker respawn, master death,
# graceful TERM with a request in flight, QUIT, pid file, daemonizing (also
# with the standard descriptors closed).
use strict;
use warnings;
use Test::More;
use Keystone::Test;

sub getsid0 { (split ' ', do { local (@ARGV, $/) = "/proc/$$/stat"; <> })[5] }

sub config {
    my ($t, $port, %o) = @_;
    my $workers = $o{workers} // 3;
    my $extra = $o{extra} // '';
    return <<"EOF";
server:
  public_addr: 127.0.0.1:$port
  workers: $workers
  min_spare: 1
  max_spare: 8
  max_workers: 16
  shutdown_timeout: 10s
  error_log: @{[ $o{error_log} // 'stderr' ]}
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

my $t = Keystone::Test->new;
my $port = $t->free_port;
$t->write_config(config($t, $port, workers => 3));
my $master = $t->start;

# ---- N workers and one master ----------------------------------------------
my @workers;
ok($t->wait_for(sub { @workers = $t->processes_of($master); @workers == 3 }),
   'three workers forked by the master') or diag("children: @workers");
for my $w (@workers) {
    ok($t->wait_log(qr/worker \d+ started: pid $w, gen 1\b/), "start of worker $w logged with pid and gen");
}

# ---- a malformed request: 400, connection closed, the worker lives on --------
my ($raw, $how) = $t->raw($port, "GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n");
like($raw, qr{^HTTP/1\.1 400 }, 'malformed header line answered 400');
like($raw, qr/\r\nConnection: close\r\n/, '400 says Connection: close');
is($how, 'eof', 'and the connection is closed');
my $r = $t->request($port, GET => '/admin/health');
is($r->{status}, 200, 'the next request is served');
is(scalar($t->processes_of($master)), 3, 'no worker died');

# ---- the JSON error envelope ------------------------------------------------------
$r = $t->request($port, GET => '/nowhere', host => 'nobody.example');
is($r->{status}, 404, 'no tenant: 404');
is($r->{json}{error}{code}, 404, 'envelope code');
like($r->{json}{error}{message}, qr/no tenant/, 'envelope message');
is($r->{json}{error}{request_id}, $r->{headers}{'x-request-id'}, 'envelope request_id is X-Request-ID');
like($r->{headers}{'x-request-id'}, qr/^[0-9a-f]{32}$/, 'request id is 32 hex digits');

# ---- kill -9 of a worker is followed by a respawn ---------------------------------
my $victim = $workers[1];
my $mark = $t->log_mark;
kill 'KILL', $victim;
ok($t->wait_log(qr/worker (\d+) exited: pid $victim, gen 1, status killed by signal 9/, from => $mark),
   'the killed worker is reaped and its death logged');
my ($line) = $t->wait_log(qr/worker \d+ started: pid (\d+)/, from => $mark);
ok($line, 'a replacement worker started');
ok($t->wait_for(sub { my @w = $t->processes_of($master); @w == 3 && !grep { $_ == $victim } @w }),
   'back to three workers, without the victim');
is($t->request($port, GET => '/admin/health')->{status}, 200, 'serving after the respawn');

# ---- TERM while a client has sent half of its head: the request completes ------------
my $c = $t->conn($port);
$c->send("GET /admin/health HTTP/1.1\r\nHo");
# the request is in a worker's hands once the scoreboard shows it reading
ok($t->wait_for(sub {
    my ($code, $out) = $t->ctl('-c', "$t->{dir}/keystone.yaml", 'status', '-j');
    $code == 0 && $out =~ /"state":"reading"/;
}), 'a worker is reading the half-sent head');
$t->signal('TERM');
ok($t->wait_log(qr/graceful stop/), 'graceful stop begins');
# a reload asked for meanwhile (logrotate, a deploy) is refused in words
$t->signal('HUP');
ok($t->wait_log(qr/\[warn\] $master reload: SIGHUP ignored: keystoned is stopping/),
   'HUP during the stop: logged as ignored');
$c->send("st: localhost\r\n\r\n");
$r = $c->response(timeout => 5);
is($r->{status}, 200, 'the in-flight request completed after TERM');
is($r->{headers}{connection}, 'close', 'and was told the connection closes');
ok($c->closed_by_peer(timeout => 5), 'then the worker closed the connection');
my $status = $t->stop(timeout => 15);
is($status >> 8, 0, 'master exited 0');
ok(!-e "$t->{dir}/keystoned.pid", 'pid file removed');
ok(!-e "$t->{dir}/keystoned.state", 'state file removed');
ok(!-e "$t->{dir}/keystoned.sock", 'control socket removed');
ok(!grep({ $t->alive($_) } $t->processes_of($master)), 'no worker left behind');

# ---- killing the master makes every worker exit; a new master starts at once ----------
$master = $t->start;
ok($t->wait_for(sub { $t->processes_of($master) == 3 }), 'restarted with three workers');
@workers = $t->processes_of($master);
kill 'KILL', $master;
ok($t->wait_for(sub { !grep { $t->alive($_) } @workers }, timeout => 3),
   'all workers exit after the master is killed');
$t->stop;    # reaps the killed master
$master = $t->start;
is($t->request($port, GET => '/admin/health')->{status}, 200,
   'a new master serves on the same port right away (stale state file replaced)');

# ---- a second instance on the same pid file refuses -----------------------------------
my ($code, $out, $err) = $t->run([$t->bin('keystoned'), '-f', '-c', "$t->{dir}/keystone.yaml"]);
is($code, 1, 'second instance exits 1');
like($err, qr/already running \(pid $master, pid file \S+keystoned\.pid\)/, 'and says why, with the pid');
is($t->request($port, GET => '/admin/health')->{status}, 200, 'the first one still serves');

# ---- QUIT: immediate stop -----------------------------------------------------------------
@workers = $t->processes_of($master);
$t->signal('QUIT');
ok($t->wait_for(sub { !$t->alive($master) || !grep { $t->alive($_) } @workers }, timeout => 3),
   'QUIT stops the workers at once');
$t->stop;

# ---- daemonizing: the parent reports the start-up verdict ------------------------------
my $port2 = $t->free_port;
$t->write_file('daemon.yaml', config($t, $port2, workers => 2, error_log => 'daemon.log'));
($code, $out, $err) = $t->run([$t->bin('keystoned'), '-c', "$t->{dir}/daemon.yaml"]);
is($code, 0, 'daemonizing start returns 0 once serving') or diag($err);
my $pid = do { local (@ARGV, $/) = "$t->{dir}/keystoned.pid"; <> } // '';
chomp $pid;
like($pid, qr/^\d+$/, 'pid file written');
$t->track_pid($pid) if $pid =~ /^\d+$/;
is($t->request($port2, GET => '/admin/health')->{status}, 200, 'the daemon serves');
my @stat = split ' ', (do { local (@ARGV, $/) = "/proc/$pid/stat"; <> } // '');
isnt($stat[3], $$, 'the daemon is not a child of the shell that started it');
isnt($stat[5], getsid0(), 'it has its own session');
ok(-s "$t->{dir}/daemon.log", 'it logs to its error_log file');
($code) = $t->ctl('-c', "$t->{dir}/daemon.yaml", 'stop');
is($code, 0, 'keystonectl stop');
ok($t->wait_for(sub { !$t->alive($pid) }), 'the daemon exits');
ok(!-e "$t->{dir}/keystoned.pid", 'and removes its pid file');

# the port is taken: the daemonizing parent says so and exits 1
my $blocker = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port2", Listen => 5, ReuseAddr => 1)
    or die "cannot listen: $!";
($code, $out, $err) = $t->run([$t->bin('keystoned'), '-c', "$t->{dir}/daemon.yaml"]);
is($code, 1, 'start fails when the port is in use');
like($err, qr/cannot listen on 127\.0\.0\.1:$port2: Address already in use/, 'and says so on the terminal');
close $blocker;

# ---- started with standard input, output and error closed (some init
# systems, cron jobs, "keystoned <&- >&- 2>&-"): the files and sockets it
# opens must not take descriptors 0 to 2, which daemonizing points at
# /dev/null (a listener, the locked pid file or the error log lost)
my $admin2 = $t->free_port;
$t->write_file('closed.yaml', config($t, $port2, workers => 2, error_log => 'closed.log',
                                     extra => "  admin_addr: 127.0.0.1:$admin2"));
my $starter = fork // die "fork: $!";
if ($starter == 0) {
    close STDIN;
    close STDOUT;
    close STDERR;
    exec { $t->bin('keystoned') } 'keystoned', '-c', "$t->{dir}/closed.yaml";
    POSIX::_exit(127);
}
$t->track_pid($starter);
$t->reap($starter);
ok($t->wait_for(sub { -s "$t->{dir}/keystoned.pid" }), 'stdio closed: the pid file is written');
$pid = do { local (@ARGV, $/) = "$t->{dir}/keystoned.pid"; <> } // '';
chomp $pid;
like($pid, qr/^\d+$/, 'with the pid');
if ($pid !~ /^\d+$/) {     # so that a failure leaves no daemon behind
    my (undef, $json) = $t->ctl('-c', "$t->{dir}/closed.yaml", 'status', '-j');
    ($pid) = ($json // '') =~ /"master_pid":(\d+)/;
    $pid //= 0;
}
$t->track_pid($pid) if $pid;
is($t->request($port2, GET => '/admin/health')->{status}, 200, 'the public listener serves');
is($t->request($admin2, GET => '/admin/health')->{status}, 200, 'the admin listener serves');
like(do { local (@ARGV, $/) = "$t->{dir}/closed.log"; <> } // '', qr/ start: keystoned .* started: pid $pid\b/,
     'the error log has the start-up line');
($code, $out, $err) = $t->run([$t->bin('keystoned'), '-c', "$t->{dir}/closed.yaml"]);
is($code, 1, 'a second start is refused: the pid file is still locked');
like($err, qr/keystoned is already running \(pid $pid,/, 'naming the first');
($code) = $t->ctl('-c', "$t->{dir}/closed.yaml", 'stop');
is($code, 0, 'keystonectl stop');
ok($t->wait_for(sub { !$t->alive($pid) }), 'the daemon exits');

# ---- -v -------------------------------------------------------------------------------
($code, $out) = $t->run([$t->bin('keystoned'), '-v']);
is($code, 0, '-v exits 0');
like($out, qr/^keystoned \d+\.\d+\.\d+$/m, '-v prints the version');
($code, $out, $err) = $t->run([$t->bin('keystoned'), '-x']);
is($code, 1, 'unknown flag exits 1');
like($err, qr/usage: keystoned \[-dfhtv\] \[-c file\]/, 'and prints the usage');
($code, $out, $err) = $t->run([$t->bin('keystoned'), '-h']);
is($code, 0, '-h exits 0');
like($out, qr/^usage: keystoned /, '-h prints the usage on stdout');
like($out, qr/^  -$_ /m, "and says what -$_ does") for qw(c d f h t v);
is($err, '', 'nothing on stderr');

done_testing;
