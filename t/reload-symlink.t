#!/usr/bin/perl
# A configuration file reached through symbolic links is read through
# them again on every reload, as nginx and HAProxy do: a deploy that
# swaps a link to a new file (keystone.yaml -> v2.yaml), or a Kubernetes
# ConfigMap volume (keystone.yaml -> ..data/keystone.yaml, ..data ->
# a timestamped directory that is swapped and whose old one is deleted),
# is applied by the next SIGHUP.  Resolving the links once at start
# reloaded the old file for good, or failed once it was deleted.
use strict;
use warnings;
use File::Path qw(remove_tree);
use Test::More;
use Keystone::Test;

my $t = Keystone::Test->new;
my $dir = $t->dir;
my $port = $t->free_port;
my $app1 = $t->backend(name => 'app-1');
my $app2 = $t->backend(name => 'app-2');

sub config {
    my ($app) = @_;
    return <<"EOF";
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 1
  max_spare: 2
  access_log: "off"
health_defaults:
  interval: 1h
tenants:
  - name: demo
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
}

# replace link $name by one to $target, atomically (rename over it)
sub relink {
    my ($target, $name) = @_;
    unlink "$name.new";
    symlink($target, "$name.new") or die "symlink: $!";
    rename("$name.new", $name) or die "rename: $!";
}

sub served_by { $t->request($port, GET => '/x')->{json}{name} // '' }

sub reload_applied {
    my ($gen, $what) = @_;
    my $mark = $t->log_mark;
    $t->signal('HUP');
    ok($t->wait_log(qr/reload: reload (applied: generation $gen\b|FAILED.*)/, from => $mark) =~ /applied/,
       "$what: the reload is applied") or diag($t->error_log($mark));
}

# ---- a link to a file, swapped ------------------------------------------------
$t->write_file('v1.yaml', config($app1));
$t->write_file('v2.yaml', config($app2));
relink('v1.yaml', "$dir/keystone.yaml");
$t->start(config => "$dir/keystone.yaml");
is(served_by(), 'app-1', 'v1 serves');
relink('v2.yaml', "$dir/keystone.yaml");
reload_applied(2, 'link swapped to v2');
is(served_by(), 'app-2', 'v2 serves');
my ($code, $out) = $t->ctl('-s', "$dir/keystoned.state", 'status');
like($out, qr/^config \Q$dir\E\/keystone\.yaml$/m, 'status names the file as it was given');
is($t->stop >> 8, 0, 'stopped');

# ---- a ConfigMap volume: a directory link swapped, the old one deleted ---------
mkdir "$dir/$_" or die for qw(cm ..ts1 ..ts2);
$t->write_file('..ts1/keystone.yaml', config($app1));
$t->write_file('..ts2/keystone.yaml', config($app2));
relink("$dir/..ts1", "$dir/cm/..data");
relink('..data/keystone.yaml', "$dir/cm/keystone.yaml");
my $cm = "$dir/cm/keystone.yaml";
$t->start(config => $cm);
is(served_by(), 'app-1', 'the first ConfigMap version serves');
relink("$dir/..ts2", "$dir/cm/..data");
remove_tree("$dir/..ts1");     # what kubelet does with the old version
ok(!-e "$dir/..ts1", 'the old version is gone');
reload_applied(2, 'the ConfigMap updated');
is(served_by(), 'app-2', 'the new version serves');
is($t->stop >> 8, 0, 'stopped');

done_testing;
