#!/usr/bin/perl
# A full disk or an unwritable access log, under load: requests are still
# served, the error log says so once (not per worker, not per request),
# the lost lines are counted (keystonectl status), and once the problem
# is fixed logging resumes after USR1, which is said once too.
#
# How the troubles are made without privileges: "full" is /dev/full
# (every write fails with ENOSPC, as on a full file system; a small tmpfs
# would need root), reached through a symlink at the access log's path,
# and fixed by replacing the symlink with nothing (the reopen creates a
# file).  "Unwritable" is a directory, then a file, without write
# permission.  Permissions do not stop root (CAP_DAC_OVERRIDE), so when
# the test runs as root keystoned drops to the user nobody
# (server.user), as it would in production.
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
my $as_root = $> == 0;
my $user = '';
if ($as_root) {
    my $uid = getpwnam('nobody');
    plan skip_all => 'running as root and there is no user nobody to drop to' unless defined $uid;
    $user = "  user: nobody\n";
    chmod 0777, $dir;   # nobody removes its state file and socket at the stop
}

sub config {
    my ($log) = @_;
    return <<"EOF";
server:
  public_addr: 127.0.0.1:$port
  workers: 3
  min_spare: 1
  max_spare: 4
$user  state_file: $dir/keystoned.state
  pid_file: $dir/keystoned.pid
  control_socket: $dir/keystoned.sock
  access_log: $log
health_defaults:
  interval: 1h
tenants:
  - name: app
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
}

sub status { Keystone::Load::status($t) }

sub lines_of {
    my ($path) = @_;
    open my $fh, '<', $path or return 0;
    my @l = <$fh>;
    return scalar @l;
}

# a line is written just after its answer: wait for the count, then make
# sure no more come
sub lines_are {
    my ($path, $n) = @_;
    $t->wait_for(sub { lines_of($path) >= $n }, timeout => 3);
    sleep 0.1;
    return lines_of($path);
}

# USR1, then wait until the master said it reopened and every worker had
# the time to follow (they are woken by the signal)
sub usr1 {
    my $mark = $t->log_mark;
    $t->signal('USR1');
    $t->wait_log(qr/reopen: log files reopened/, from => $mark);
    sleep 0.3;
}

sub load_ok {
    my ($what) = @_;
    my $r = Keystone::Load->start($t, port => $port, conns => 4, duration => 1, specs => ['GET /x'])
        ->result;
    is(Keystone::Load::failed($r), 0, "$what: no request failed");
    is_deeply([ keys %{ $r->{statuses} } ], ['200'], "$what: all answered 200");
    return $r->{responses};
}

sub count_log {
    my ($re, $mark) = @_;
    my @m = $t->error_log($mark) =~ /$re/g;
    return scalar @m;
}

# ---- a full disk ---------------------------------------------------------------------
mkdir "$dir/logs";
chmod 0777, "$dir/logs";
my $access = "$dir/logs/access.log";
symlink '/dev/full', $access or die "symlink: $!";
$t->write_config(config($access));
$t->start;
my $mark = $t->log_mark;
my $n = load_ok('disk full');
my $full = qr/\[error\] \d+ access-log: cannot write the access log \Q$access\E: No space left on device; requests are served without it/;
is(count_log($full, 0), 1, 'the error log says so once, for three workers and all those requests');
my $s = status();
ok($s->{access_log}{failing}, 'keystonectl status: the access log is failing');
cmp_ok($s->{access_log}{lost}, '>=', $n, "and $s->{access_log}{lost} lines were lost");
my ($code, $text) = $t->ctl('-s', "$dir/keystoned.state", 'status');
like($text, qr/^access log: \d+ lines lost, failing now$/m, 'the text status says it too');

unlink $access;     # the disk has room again
usr1();
$mark = $t->log_mark;
is($t->request($port, GET => "/after$_")->{status}, 200, "request $_ after the fix") for 1 .. 10;
is(lines_are($access, 10), 10, 'after USR1 every request is logged again');
is(count_log(qr/access-log: the access log \Q$access\E is written again \(\d+ lines lost since the start\)/, $mark), 1,
   'the error log says so once');
ok(!status()->{access_log}{failing}, 'status: no longer failing');
$t->stop;

# ---- a directory without write permission -----------------------------------------------
mkdir "$dir/ro";
chmod 0555, "$dir/ro";
$access = "$dir/ro/access.log";
$t->write_config(config($access));
$t->start;
load_ok('directory not writable');
my $denied = qr/access-log: cannot open the access log \Q$access\E: Permission denied/;
is(count_log($denied, 0), 1, 'the error log says so once');
cmp_ok(status()->{access_log}{lost}, '>', 0, 'the lines are counted as lost');
ok(!-e $access, 'no file could be made');

usr1();      # not fixed yet: said once more
is(count_log($denied, 0), 2, 'a USR1 that does not fix it: said once more');

chmod 0777, "$dir/ro";
usr1();
$mark = $t->log_mark;
is($t->request($port, GET => "/dir$_")->{status}, 200, "request $_ after chmod") for 1 .. 5;
is(lines_are($access, 5), 5, 'the access log is created and written after USR1');
is(count_log(qr/access-log: the access log \Q$access\E is written again/, $mark), 1, 'said once');

# ---- a file without write permission ------------------------------------------------
chmod 0444, $access;
usr1();
$mark = $t->log_mark;
load_ok('file not writable');
is(count_log($denied, $mark), 0, 'nothing more said during the load ...');
is(count_log($denied, 0), 3, '... than once at the reopen');
is(lines_are($access, 5), 5, 'nothing written to the read-only file');
chmod 0644, $access;
usr1();
is($t->request($port, GET => '/last')->{status}, 200, 'a request after chmod');
is(lines_are($access, 6), 6, 'logged again');
is($t->stop, 0, 'clean stop');

done_testing;
