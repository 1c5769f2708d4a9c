#!/usr/bin/perl
# keystonectl: status (text and -j), health, configtest, stop, and clear
# answers when no daemon runs or the state file is garbage.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $conf = "$t->{dir}/keystone.yaml";
my $state = "$t->{dir}/keystoned.state";
$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 2
  min_spare: 1
  max_spare: 4
  access_log: "off"
tenants:
  - name: shop
    base_path: /shop
    upstreams:
      - { name: a, url: "http://127.0.0.1:9" }
      - { name: b, url: "http://127.0.0.1:10", weight: 50 }
  - name: blog
    domains: [blog.example.com]
EOF

# ---- not running --------------------------------------------------------------------------
my ($code, $out, $err) = $t->ctl('-c', $conf, 'status');
is($code, 1, 'status without a daemon exits 1');
like($err, qr/keystoned is not running \(no state file \Q$state\E\)/, 'and says so');
($code, $out, $err) = $t->ctl('-c', $conf, 'reload');
is($code, 1, 'reload without a daemon exits 1');
like($err, qr/not running/, 'and says so');

# a -c config that cannot be read or parsed names no state file: said,
# with where, instead of looking for the default one
my $bad = $t->write_file('bad.yaml', "server:\n  public_addr: [1\n");
my $missing = $t->dir . '/missing.yaml';
for my $cmd (qw(status health routes stop reload)) {
    my $want = $cmd eq 'reload' ? 4 : 1;
    ($code, $out, $err) = $t->ctl('-c', $bad, $cmd);
    is($code, $want, "$cmd -c with a YAML syntax error: exit $want");
    like($err, qr/^keystonectl: configuration \Q$bad\E:3:1: invalid YAML/, "$cmd: says where the config is broken");
    unlike($err, qr/state file/, "$cmd: and no word of a default state file");
    ($code, $out, $err) = $t->ctl('-c', $missing, $cmd);
    is($code, $want, "$cmd -c with a missing config: exit $want");
    like($err, qr/^keystonectl: configuration \Q$missing\E: cannot open .*No such file/, "$cmd: says it cannot be read");
}
($code, $out, $err) = $t->ctl('-c', '/nonexistent-dir/k.yaml', 'status');
is($code, 1, 'a config in a missing directory: exit 1');
like($err, qr{configuration /nonexistent-dir/k\.yaml: cannot read it: No such file}, 'and says so');

# garbage in the state file is reported, never crashes the reader
$t->write_file('keystoned.state', "x" x 100000);
($code, $out, $err) = $t->ctl('-s', $state, 'status');
is($code, 1, 'garbage state file: exit 1');
like($err, qr/not running or its state file is unusable: not a keystoned state file/, 'and a clear message');
unlink $state;

# ---- configtest ---------------------------------------------------------------------------------
($code, $out) = $t->ctl('-c', $conf, 'configtest');
is($code, 0, 'configtest of a valid file exits 0');
like($out, qr/^configuration OK$/m, 'and says OK');

# ---- status -----------------------------------------------------------------------------------------
my $master = $t->start;
my $json;
ok($t->wait_for(sub {
    ($code, $out) = $t->ctl('-c', $conf, 'status', '-j');
    $json = eval { decode_json($out) };
    $json && $json->{workers}{total} == 2 && $json->{workers}{idle} == 2;
}), 'status -j: two idle workers');
is($json->{master_pid}, $master, 'status -j: master pid');
is($json->{generation}, 1, 'status -j: generation');
like($json->{version}, qr/^\d+\.\d+\.\d+$/, 'status -j: version');
is($json->{config}, $conf, 'status -j: config path');
is($json->{reload}{result}, 'none', 'status -j: no reload yet');
my @pids = sort { $a <=> $b } map { $_->{pid} } @{ $json->{workers}{list} };
is_deeply(\@pids, [ $t->processes_of($master) ], "status -j: worker pids are the master's children");
is_deeply([ map { $_->{name} } @{ $json->{tenants} } ], [qw(shop blog)], 'status -j: tenants in order');
is($json->{tenants}[0]{base_path}, '/shop', 'status -j: base path');
is_deeply([ map { $_->{name} } @{ $json->{tenants}[0]{upstreams} } ], [qw(a b)], 'status -j: upstreams');
is($json->{tenants}[0]{upstreams}[1]{weight}, 50, 'status -j: weight');
is($json->{tenants}[0]{upstreams}[0]{url}, 'http://127.0.0.1:9', 'status -j: url');

# a busy worker shows its state, client and request line
my $c = $t->conn($port);
$c->send("GET /admin/health HTTP/1.1\r\nHost: x\r\n");
ok($t->wait_for(sub {
    ($code, $out) = $t->ctl('-s', $state, 'status');
    $out =~ /\breading\b/;
}), 'status: a worker reading a head');
like($out, qr/^workers: 1 busy, 1 idle, 2 total$/m, 'status: busy/idle/total');
like($out, qr/^keystoned \S+, master pid $master, up \d+s$/m, 'status: header line');
like($out, qr/^generation 1, last reload: none$/m, 'status: generation and last reload');
like($out, qr/^\s+\d+\s+\d+\s+1\s+reading\s+\d+s\s+\d+\s+127\.0\.0\.1:\d+\s+-$/m,
     'status: the reading worker, for how long, and its client');
# the time in a state grows while the worker stays in it
my $reading;
ok($t->wait_for(sub {
    (undef, my $j) = $t->ctl('-s', $state, 'status', '-j');
    ($reading) = grep { $_->{state} eq 'reading' } @{ decode_json($j)->{workers}{list} };
    $reading && $reading->{state_for_ms} >= 1000;
}), 'status -j: state_for_ms of the reading worker passes 1000') or diag(explain($reading));
(undef, $out) = $t->ctl('-s', $state, 'status');
like($out, qr/^\s+\d+\s+\d+\s+1\s+reading\s+[1-9]\d*s\s/m, 'status: and so does FOR');
# an idle worker's too: its accept loop going round (once a second) does
# not start the state again
my $idle;
ok($t->wait_for(sub {
    (undef, my $j) = $t->ctl('-s', $state, 'status', '-j');
    ($idle) = grep { $_->{state} eq 'idle' } @{ decode_json($j)->{workers}{list} };
    $idle && $idle->{state_for_ms} >= 2500;
}, timeout => 8), 'status -j: state_for_ms of the idle worker passes 2500') or diag(explain($idle));
like($out, qr/^  shop\s+base \/shop\s+2\/2 upstreams healthy/m, 'status: tenant line');
$c->send("\r\n");
is($c->response->{status}, 200, 'request completes');
ok($t->wait_for(sub {
    (undef, $out) = $t->ctl('-s', $state, 'status');
    $out =~ m{keepalive\s+\d+s\s+\d+\s+127\.0\.0\.1:\d+\s+GET /admin/health};
}), 'status: a keep-alive connection shows its last request');
$c->close;

# health shows only the upstreams
($code, $out) = $t->ctl('-s', $state, 'health');
is($code, 0, 'health exits 0');
unlike($out, qr/^workers:/m, 'health leaves out the workers');
like($out, qr{^\s+a\s+http://127\.0\.0\.1:9\s}m, 'health lists upstream a');

# ---- a user who may not read the state file: told so, not "not running" ----------------
SKIP: {
    skip 'needs root, setpriv and a user nobody', 4
        unless $> == 0 && defined getpwnam('nobody') && -x '/usr/bin/setpriv';
    # the test directory is root's 0700 and the state file 0640: nobody
    # can read neither
    my @as_nobody = ('/usr/bin/setpriv', '--reuid=nobody', '--regid=' . (getpwnam('nobody'))[3],
                     '--clear-groups');
    for my $cmd (qw(status health)) {
        ($code, $out, $err) = $t->run([@as_nobody, $t->bin('keystonectl'), '-s', $state, $cmd]);
        is($code, 1, "$cmd as a user without read access: exit 1");
        like($err, qr/^keystonectl: cannot read the state file \Q$state\E: Permission denied \(.*read access/m,
             "$cmd: says it may not read it, not that keystoned is not running") or diag($err);
    }
}

# ---- a stopped master: told so, not a minute's wait --------------------------------------------
# the command waits in the socket; the master carries it out once continued
kill 'STOP', $master;
($code, $out, $err) = $t->ctl('-s', $state, 'reload');
kill 'CONT', $master;
is($code, 1, 'reload with the master stopped: exit 1, before the 60 s control timeout');
like($err, qr/^keystonectl: keystoned's master \(pid $master\) is stopped \(SIGSTOP or a debugger\): it reads the command only when it is continued \(kill -CONT $master\)$/m,
     'says the master is stopped and how to continue it') or diag($err);
ok($t->wait_for(sub {
    (undef, my $j) = $t->ctl('-s', $state, 'status', '-j');
    decode_json($j)->{reload}{result} eq 'applied';
}), 'continued, the master carries out the reload it was sent');

# ---- stop through the control socket ------------------------------------------------------------------
($code, $out) = $t->ctl('-s', $state, 'stop');
is($code, 0, 'stop exits 0');
like($out, qr/stopping \(pid $master\)/, 'stop answers');
ok($t->wait_for(sub { !-e $state }), 'the daemon stops and removes its state file');
$t->stop;

# a stale state file left by a killed master: not running, clearly
$master = $t->start;
kill 'KILL', $master;
$t->stop;
($code, $out, $err) = $t->ctl('-s', $state, 'status');
is($code, 1, 'stale state file: exit 1');
like($err, qr/not running \(stale state file .*master pid $master is gone\)/,
     'stale state file: says the master is gone');

# ... and one whose master pid now belongs to another live process (pids
# are reused): the header's master_pid (int32 at offset 24, after magic,
# layout_version, header_size and total_size) pointed at a sleeping child
my $other = $t->spawn(['sleep', '60']);
open(my $fh, '+<:raw', $state) or die "$state: $!";
seek($fh, 24, 0) or die;
print $fh pack('l<', $other) or die;
close $fh or die;
($code, $out, $err) = $t->ctl('-s', $state, 'status');
is($code, 1, 'state file naming a reused pid: exit 1');
like($err, qr/not running \(stale state file .*master pid $other now belongs to another process\)/,
     'state file naming a reused pid: says so');
$t->terminate($other);

($code, $out, $err) = $t->ctl('frobnicate');
is($code, 2, 'unknown command: exit 2');
like($err, qr/usage: keystonectl/, 'and the usage');
($code, $out, $err) = $t->ctl('-h');
is($code, 0, '-h: exit 0');
like($out, qr/^  $_ /m, "-h says what $_ does") for qw(status health routes reload stop configtest);
done_testing;
