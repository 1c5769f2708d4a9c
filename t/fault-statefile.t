#!/usr/bin/perl
# The state file mistreated while keystoned runs under load, and a stale
# one at start-up.  Deleted, replaced by another file, overwritten in
# place, truncated: keystoned serves on (no failed request, no worker
# lost), makes the file good again within a second or two (a new file
# the workers follow, or the header restored), and keystonectl reports
# clearly meanwhile, never crashing on what it finds.  keystonectl is
# also run on garbage of every shape.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(sleep);
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
  workers: 3
  min_spare: 1
  max_spare: 4
  max_requests_per_worker: 0
  state_file: $state
  control_socket: $dir/keystoned.sock
  access_log: "off"
health_defaults:
  interval: 1h
tenants:
  - name: app
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF

sub ctl_status {
    my ($file) = @_;
    return $t->ctl('-s', $file // $state, 'status', '-j');
}

# keystonectl on a file: an exit code of 0 or 1, never a signal
sub ctl_survives {
    my ($file, $what) = @_;
    for my $cmd ([ 'status', '-j' ], ['status'], [ 'health', '-j' ], ['routes']) {
        my ($code, $out, $err) = $t->ctl('-s', $file, @$cmd);
        ok($code == 0 || $code == 1, "$what: keystonectl @$cmd exits $code, no crash") or diag($err);
        like($err, qr/^keystonectl: .+/, "$what: keystonectl @$cmd says why") if $code == 1;
    }
}

sub write_raw {
    my ($path, $bytes, %o) = @_;
    open my $fh, $o{inplace} ? '+<' : '>', $path or die "$path: $!";
    binmode $fh;
    seek $fh, $o{at} // 0, 0;
    print {$fh} $bytes;
    close $fh;
}

my $master = $t->start;
$t->wait_for(sub { Keystone::Load::worker_pids($t) == 3 });
my @workers = Keystone::Load::worker_pids($t);
my $load = Keystone::Load->start($t, port => $port, conns => 3, duration => 14, timeout => 5000,
    specs => ['GET /x']);
sleep 0.5;
my $gen = Keystone::Load::status($t)->{generation};
my $requests0 = Keystone::Load::status($t)->{requests};

# ---- deleted ------------------------------------------------------------------------
my $ino = (stat $state)[1];
unlink $state;
my ($code, $out, $err) = ctl_status();
is($code, 1, 'deleted: keystonectl says not running ...');
like($err, qr/keystoned is not running \(no state file \Q$state\E\)/, '... because there is no state file');
ok($t->wait_for(sub { -e $state }, timeout => 3), 'keystoned makes it again');
ok($t->wait_log(qr/state-file: the state file \Q$state\E was removed or replaced: made again/),
   'and says so');
my $s = Keystone::Load::status($t);
is($s->{master_pid}, $master, 'keystonectl sees the daemon again');
cmp_ok($s->{requests}, '>', $requests0, 'with its counters');
ok($t->wait_log(qr/state-file: worker \d+ follows the new state file/), 'the workers follow it');
ok($t->wait_for(sub {
    my $st = Keystone::Load::status($t) or return 0;
    my $before = $st->{requests};
    sleep 0.3;
    $st = Keystone::Load::status($t) or return 0;
    return $st->{requests} > $before && 3 <= grep { $_->{state} ne 'free' } @{ $st->{workers}{list} };
}), 'and the new file is the one they count in');
isnt((stat $state)[1], $ino, 'it is a new file');
is(sprintf('%o', (stat $state)[2] & 07777), '640', 'mode 0640 again');

# ---- replaced by another file ---------------------------------------------------------
write_raw("$dir/garbage", "this is not a state file\n" x 1000);
rename "$dir/garbage", $state or die;
($code, $out, $err) = ctl_status();
is($code, 1, 'replaced by garbage: keystonectl says not running ...');
like($err, qr/state file is unusable: not a keystoned state file \(bad magic\)/, '... and why');
ok($t->wait_for(sub { my ($c) = ctl_status(); $c == 0 }, timeout => 3), 'keystoned makes it again');

# ---- overwritten in place: the header --------------------------------------------------
my $size = -s $state;
write_raw($state, "\xff" x 2048, inplace => 1);
is(-s $state, $size, 'overwritten in place (the size is the same)');
ok($t->wait_log(qr/state-file: the state file \Q$state\E was overwritten: its header is restored/, timeout => 3),
   'keystoned restores the header and says so');
ok($t->wait_for(sub { my ($c) = ctl_status(); $c == 0 }), 'keystonectl reads it again');
$s = Keystone::Load::status($t);
is($s->{generation}, $gen + 1, 'the route table was published again: the next generation');
is($s->{tenants}[0]{name}, 'app', 'with the tenants');

# ---- truncated -------------------------------------------------------------------------
my $mark = $t->log_mark;
write_raw($state, "garbage\n");     # what `echo garbage > file` does
ok($t->wait_log(qr/state-file: the state file \Q$state\E was overwritten: its header is restored/,
                from => $mark, timeout => 3), 'truncated: keystoned repairs it');
ok($t->wait_for(sub { -s $state == $size }), 'at its size again');
ok($t->wait_for(sub { my ($c) = ctl_status(); $c == 0 }), 'keystonectl reads it again');
ok($t->wait_for(sub {
    my $st = Keystone::Load::status($t) or return 0;
    my %listed = map { $_->{pid} => 1 } @{ $st->{workers}{list} };
    return !grep { !$listed{$_} } @workers;
}), 'the workers took their slots again');
is(Keystone::Load::status($t)->{generation}, $gen + 2, 'and the table is published again');

my $r = $load->result;
diag(sprintf "%d requests, %d failed, %d retried", $r->{requests}, Keystone::Load::failed($r), $r->{retries});
is(Keystone::Load::failed($r), 0, 'no request failed through all of it');
is_deeply([ keys %{ $r->{statuses} } ], ['200'], 'every answer was a 200');
# (spares may come and go meanwhile: the scoreboard of a new file shows
# the workers' states of the moment it was copied until they follow)
my $log = $t->error_log;
unlike($log, qr/worker-exit: .*status (?:killed by signal|exit [12])/, 'no worker died or failed');
unlike($log, qr/Bus error|signal 7\b/, 'no SIGBUS got through');
ok($t->alive($master), 'the master lives');
is($t->stop, 0, 'clean stop');
ok(!-e $state, 'the state file is removed at the stop');

# ---- keystonectl on garbage of every shape --------------------------------------------
my $real = "$dir/real.state";
$master = $t->start;
system('cp', $state, $real) == 0 or die;
$t->stop;
my %garbage = (
    'an empty file'          => '',
    'a few bytes'            => 'garbage',
    'random bytes'           => join('', map { chr int rand 256 } 1 .. 70000),
    'zeros'                  => "\0" x 70000,
);
for my $what (sort keys %garbage) {
    write_raw("$dir/g.state", $garbage{$what});
    ctl_survives("$dir/g.state", $what);
}
open my $fh, '<', $real or die;
binmode $fh;
my $copy = do { local $/; <$fh> };
close $fh;
write_raw("$dir/g.state", substr($copy, 0, length($copy) / 2));
ctl_survives("$dir/g.state", 'a state file cut in half');
my $bad = $copy;
substr($bad, 8, 4) = pack('V', 99);
write_raw("$dir/g.state", $bad);
ctl_survives("$dir/g.state", 'another layout version');
($code, $out, $err) = ctl_status("$dir/g.state");
like($err, qr/layout version 99 is not \d+/, 'which it names');
$bad = $copy;
substr($bad, 8192, 8192) = "\xa5" x 8192;
write_raw("$dir/g.state", $bad);
ctl_survives("$dir/g.state", 'garbage in the scoreboard and the tables');
ctl_survives("$dir/nonexistent.state", 'a missing file');

# ---- a stale one at start-up: left by a master killed with -9 ----------------------
$master = $t->start;
$t->wait_for(sub { Keystone::Load::worker_pids($t) == 3 });
my @old = Keystone::Load::worker_pids($t);
kill 'KILL', $master;
ok($t->wait_for(sub { !$t->alive($master) && !grep { $t->alive($_) } @old }, timeout => 5),
   'master killed, its workers gone');
ok(-e $state, 'its state file is left behind');
($code, $out, $err) = ctl_status();
is($code, 1, 'keystonectl: not running');
like($err, qr/stale state file \Q$state\E: master pid $master is gone/, 'because the file is stale');
ctl_survives($state, 'a stale state file');
my $new = $t->start;
($code, $out) = ctl_status();
is($code, 0, 'a new master replaces it at start-up');
like($out, qr/"master_pid":$new,/, 'keystonectl sees the new one');
is($t->stop, 0, 'clean stop');

# and a file that is not a state file where the state file goes: it may
# be anyone's data, so keystoned refuses to start rather than replace it
write_raw($state, 'not a state file');
my $err2;
($code, $out, $err2) = $t->run([$t->bin('keystoned'), '-f', '-c', $t->dir . '/keystone.yaml']);
is($code, 1, 'a file that is not a state file in its place: keystoned refuses to start');
like($err2, qr/server\.state_file \Q$state\E exists and is not a keystoned state file/, 'and says why');
is(do { open my $fh, '<', $state; local $/; <$fh> }, 'not a state file', 'the file is left alone');

done_testing;
