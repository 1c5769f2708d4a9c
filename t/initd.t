#!/usr/bin/perl
# etc/init.d/keystoned believes the pid file only when its pid runs
# keystoned: a stale pid file naming an unrelated live process makes
# neither `start` say "already running" nor `stop` signal that process.
# The script runs as installed, with its paths pointed at the build tree
# and this test's directory.
use strict;
use warnings;
use Test::More;
use Keystone::Test;

my $t = Keystone::Test->new;
my $dir = $t->dir;
my $port = $t->free_port;
my $pidfile = "$dir/keystoned.pid";

open my $in, '<', $t->srcdir . '/etc/init.d/keystoned' or die "init script: $!";
my $script = do { local $/; <$in> };
close $in;
my %set = (DAEMON => $t->bin('keystoned'), CTL => $t->bin('keystonectl'),
           CONFIG => "$dir/keystone.yaml", PIDFILE => $pidfile, STOP_TIMEOUT => 20);
for my $k (keys %set) {
    $script =~ s/^$k=.*$/$k=$set{$k}/m or die "no $k= in the init script";
}
$script =~ s{^\[ -r /etc/default/keystoned \].*$}{}m or die 'no /etc/default line';
my $initd = $t->write_file('init.d-keystoned', $script);
chmod 0755, $initd;

$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 2
  pid_file: $pidfile
  error_log: $dir/daemon.log
  access_log: "off"
tenants:
  - name: demo
    upstreams:
      - { name: app, url: "http://127.0.0.1:9" }
EOF

sub initd { $t->run(['sh', $initd, @_], timeout => 30) }

# a stale pid file whose pid is now an unrelated live process
my $other = $t->spawn(['sleep', '300']);
$t->write_file('keystoned.pid', "$other\n");

my ($code, $out) = initd('status');
is($code, 3, 'status: the unrelated process is not taken for keystoned');
like($out, qr/keystoned is not running/, 'status says so');
($code, $out) = initd('stop');
is($code, 0, 'stop exits 0');
like($out, qr/keystoned is not running/, 'stop: says keystoned is not running');
ok($t->alive($other), 'and the unrelated process was not signalled');

($code, $out) = initd('start');
is($code, 0, 'start: starts keystoned in spite of the stale pid file') or diag($out);
unlike($out, qr/already running/, 'and does not say it is already running');
chomp(my $pid = do { open my $fh, '<', $pidfile; <$fh> } // '');
ok($pid && $pid != $other && $t->alive($pid), 'the pid file names the new master');
$t->track_pid($pid) if $pid;
is($t->request($port, GET => '/admin/health')->{status}, 200, 'keystoned serves');
($code, $out) = initd('start');
like($out, qr/already running \(pid $pid\)/, 'a second start says it is already running');
($code, $out) = initd('stop');
is($code, 0, 'stop exits 0');
ok($t->wait_for(sub { !$t->alive($pid) }), 'and keystoned is gone');
ok($t->alive($other), 'the unrelated process still lives');
$t->terminate($other);

done_testing;
