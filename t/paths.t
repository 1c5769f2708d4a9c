#!/usr/bin/perl
# What keystoned finds at the paths of its state file and control socket:
# an operator's file is never replaced nor removed, a second instance
# (another pid file, the same state file or socket) is refused instead of
# fighting the first, a control socket removed while keystoned runs is
# made again, and two run-time files (or one and the configuration) at
# one path are a configuration error.
use strict;
use warnings;
use Test::More;
use Keystone::Test;

my $t = Keystone::Test->new;
my $dir = $t->dir;
my $port = $t->free_port;

sub config {
    my (%o) = @_;
    my $p = $o{port} // $port;
    return <<"EOF";
server:
  public_addr: 127.0.0.1:$p
  workers: 1
  min_spare: 0
  max_spare: 2
  pid_file: @{[ $o{pid} // 'keystoned.pid' ]}
  state_file: @{[ $o{state} // 'keystoned.state' ]}
  control_socket: @{[ $o{socket} // 'keystoned.sock' ]}
  access_log: "off"
tenants:
  - name: demo
    upstreams:
      - { name: app, url: "http://127.0.0.1:9" }
EOF
}

sub slurp { open my $fh, '<', $_[0] or return undef; local $/; <$fh> }

# keystoned -f with this config must refuse to start: exit 1, at once
sub refused {
    my ($name, $yaml, $re, $what) = @_;
    my $cfg = $t->write_file($name, $yaml);
    my ($code, $out, $err) = $t->run([$t->bin('keystoned'), '-f', '-c', $cfg], timeout => 10);
    is($code, 1, "$what: keystoned exits 1");
    like($err, $re, "$what: and says why") or diag($err);
}

# ---- an operator's files at the paths ------------------------------------------
my $data = "precious user data\n" x 10;
$t->write_file('important.txt', $data);
refused('a.yaml', config(state => 'important.txt', pid => 'a.pid'),
        qr/server\.state_file \Q$dir\E\/important\.txt exists and is not a keystoned state file/,
        'state_file is a regular file');
is(slurp("$dir/important.txt"), $data, 'the file is left as it was');
ok(!-e "$dir/a.pid", 'no pid file left behind');

$t->write_file('some-file', $data);
refused('b.yaml', config(socket => 'some-file', pid => 'b.pid', state => 'b.state'),
        qr/server\.control_socket \Q$dir\E\/some-file exists and is not a socket/,
        'control_socket is a regular file');
is(slurp("$dir/some-file"), $data, 'the file is left as it was');
ok(!-e "$dir/b.state", 'no state file made');

mkdir "$dir/adir" or die;
refused('c.yaml', config(state => 'adir', pid => 'c.pid'),
        qr/server\.state_file \Q$dir\E\/adir exists and is not a keystoned state file/,
        'state_file is a directory');
ok(-d "$dir/adir", 'the directory is still there');

# ---- a symbolic link at the pid file's path is not written through -----------------
# (the pid file is opened as root, in a directory the shipped service
# makes server.user's: a link there to any file had root truncate it)
$t->write_file('victim.txt', $data);
symlink("$dir/victim.txt", "$dir/linked.pid") or die "symlink: $!";
refused('l.yaml', config(pid => 'linked.pid', state => 'l.state', socket => 'l.sock'),
        qr/cannot open pid file \Q$dir\E\/linked\.pid: it is a symbolic link/,
        'pid_file is a symbolic link');
is(slurp("$dir/victim.txt"), $data, 'the file it points at is left as it was');
ok(-l "$dir/linked.pid", 'and the link too');

# ---- a second instance on the same state file or socket ---------------------------
$t->write_config(config());
my $master = $t->start;
my $other = $t->free_port;
refused('d.yaml', config(port => $other, pid => 'd.pid'),
        qr/server\.state_file \Q$dir\E\/keystoned\.state is already in use by keystoned pid $master\b/,
        'second instance, same state_file');
refused('e.yaml', config(port => $other, pid => 'e.pid', state => 'e.state'),
        qr/server\.control_socket \Q$dir\E\/keystoned\.sock is in use/,
        'second instance, same control_socket');
ok(!-e "$dir/e.state" && !-e "$dir/d.pid" && !-e "$dir/e.pid", 'the refused ones left no files');
my ($code, $out) = $t->ctl('-c', "$dir/keystone.yaml", 'status', '-j');
is($code, 0, 'the first instance is still reachable');
like($out, qr/"master_pid":$master\b/, 'and its state file is its own');
($code, $out) = $t->ctl('-c', "$dir/keystone.yaml", 'reload');
is($code, 0, 'reload reaches it') or diag($out);

# ---- the control socket removed: made again ---------------------------------------
my $mark = $t->log_mark;
unlink "$dir/keystoned.sock" or die "unlink: $!";
ok($t->wait_log(qr/the control socket \Q$dir\E\/keystoned\.sock was removed or replaced: made again/,
                from => $mark), 'the master notices the socket is gone and makes it again');
ok(-S "$dir/keystoned.sock", 'a socket is there again');
($code, $out) = $t->ctl('-c', "$dir/keystone.yaml", 'reload');
is($code, 0, 'keystonectl reaches the master through it') or diag($out);

# replaced by a regular file: not overwritten, said once
$mark = $t->log_mark;
unlink "$dir/keystoned.sock";
$t->write_file('keystoned.sock', $data);
ok($t->wait_log(qr/the control socket \Q$dir\E\/keystoned\.sock was removed or replaced and cannot be made again: .*not a socket/,
                from => $mark), 'a file put in its place is not replaced, and that is logged');
$mark = $t->log_mark;
unlink "$dir/keystoned.sock";
ok($t->wait_log(qr/keystoned\.sock was removed or replaced: made again/, from => $mark),
   'made again once the file is gone');

is($t->stop >> 8, 0, 'stops cleanly');
ok(!-e "$dir/keystoned.state" && !-e "$dir/keystoned.sock" && !-e "$dir/keystoned.pid",
   'and removes its files');

# ---- two run-time files at one path, or one at the configuration file -----------
# Found nowhere until it was too late: the access log appended to the
# mapped state file, the pid written over the configuration.  -t says so
# (with the line of each key), a reload too, and nothing is touched.
sub clash_config {
    my ($lines) = @_;
    $lines .= qq{\n  access_log: "off"} unless $lines =~ /access_log/;
    return <<"EOF";
server:
  public_addr: 127.0.0.1:$port
$lines
tenants:
  - name: demo
    upstreams:
      - { name: app, url: "http://127.0.0.1:9" }
EOF
}
sub clash {
    my ($name, $lines, $re, $what) = @_;
    my $cfg = $t->write_file($name, clash_config($lines));
    my $before = slurp($cfg);
    my ($code, $out, $err) = $t->run([$t->bin('keystoned'), '-t', '-c', $cfg]);
    is($code, 1, "$what: -t exits 1");
    like($err, $re, "$what: and names both keys") or diag($err);
    ($code, $out, $err) = $t->run([$t->bin('keystoned'), '-f', '-c', $cfg], timeout => 10);
    is($code, 1, "$what: keystoned refuses to start");
    is(slurp($cfg), $before, "$what: the configuration file is untouched");
}
clash('f.yaml', "  state_file: same\n  pid_file: f.pid\n  access_log: same",
      qr/^\Q$dir\E\/f\.yaml:5:15: server\.access_log: \Q$dir\E\/same is also server\.state_file \(line 3\); each needs a file of its own$/m,
      'access_log at the state file');
clash('g.yaml', "  pid_file: g.yaml",
      qr/^\Q$dir\E\/g\.yaml:3:13: server\.pid_file: \Q$dir\E\/g\.yaml is the configuration file itself$/m,
      'pid_file at the configuration file');
clash('h.yaml', "  pid_file: h.pid\n  state_file: h.state\n  access_log: ./h.yaml",
      qr/server\.access_log: \Q$dir\E\/h\.yaml is the configuration file itself/,
      'access_log at the configuration file, spelt another way');
clash('i.yaml', "  pid_file: i.pid\n  state_file: i.state\n  error_log: i.state",
      qr/server\.error_log: \Q$dir\E\/i\.state is also server\.state_file \(line 4\)/,
      'error_log at the state file');
clash('j.yaml', "  pid_file: j.pid\n  control_socket: adir/../j.pid",
      qr/server\.control_socket: \Q$dir\E\/adir\/\.\.\/j\.pid is also server\.pid_file \(line 3\)/,
      'control_socket at the pid file, through ..');
# the two logs may share a file, as both go to stderr by default
my $both = $t->write_file('k.yaml', clash_config("  pid_file: k.pid\n  state_file: k.state\n"
                                                 . "  error_log: both.log\n  access_log: both.log"));
($code) = $t->run([$t->bin('keystoned'), '-t', '-c', $both]);
is($code, 0, 'error_log and access_log may share a file');

# a reload to such a file is refused, and the old configuration serves on
$t->write_config(config());
$t->start;
$t->write_config(config() =~ s/access_log: "off"/access_log: keystoned.state/r);
($code, $out, my $err) = $t->ctl('-c', "$dir/keystone.yaml", 'reload');
is($code, 4, 'reload with access_log at the state file: refused');
like($err, qr/server\.access_log: \Q$dir\E\/keystoned\.state is also server\.state_file/, 'and says why');
is($t->request($port, GET => '/admin/health')->{status}, 200, 'the old configuration serves on');
($code, $out) = $t->ctl('-c', "$dir/keystone.yaml", 'status');
is($code, 0, 'the state file is still one') or diag($out);
is($t->stop >> 8, 0, 'stops cleanly');

# ---- privileges dropped: what cannot be removed at the stop is logged -----------
SKIP: {
    skip 'needs root and a user nobody to drop to', 5 unless $> == 0 && defined getpwnam('nobody');
    # valgrind's log of a worker forked as nobody cannot be made in the
    # build tree: that worker would die at its fork
    skip 'not under KS_WRAPPER', 5 if $ENV{KS_WRAPPER};
    # the directory stays root's (0755): nobody can make no file in it,
    # and remove none
    chmod 0755, $dir;
    my $run = "$dir/run";
    mkdir $run or die;
    chmod 0755, $run;
    my $yaml = config(pid => "$run/k.pid", state => "$run/k.state", socket => "$run/k.sock");
    $yaml =~ s/^server:\n/server:\n  user: nobody\n/;
    $t->write_config($yaml);
    chmod 0644, "$dir/keystone.yaml";
    $t->start;
    $mark = $t->log_mark;
    is($t->stop >> 8, 0, 'as user nobody: stops');
    for (['pid file', 'k.pid'], ['state file', 'k.state'], ['control socket', 'k.sock']) {
        my ($what, $file) = @$_;
        like(substr($t->error_log, $mark),
             qr/\[warn\] \d+ cleanup: cannot remove the \Q$what $run\/$file\E: Permission denied \(its directory must be writable/,
             "the $what it could not remove is named, and why");
    }
    unlink "$run/k.pid", "$run/k.state", "$run/k.sock";
    ok(!-e "$run/k.state", 'cleaned up by the test');
}

done_testing;
