#!/usr/bin/perl
# keystoned -d logs at level debug whatever server.log_level says: the
# master and the workers, before and after a reload.  Without -d the
# level follows server.log_level, also when a reload lowers it again
# from debug.
use strict;
use warnings;
use Test::More;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');

sub config {
    my ($level, $extra) = @_;
    $t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 1
  max_spare: 2
  access_log: "off"
  log_level: $level
  max_keepalive_requests: 1
health_defaults:
  interval: 1h
tenants:
  - name: demo$extra
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
}

# every worker that serves a request after a new generation says so at
# debug level ("table: worker N now serves generation G")
sub served_gen_logged {
    my ($gen, $mark) = @_;
    for (1 .. 3) {
        is($t->request($port, GET => '/x')->{status}, 200, "a request at generation $gen");
    }
    return $t->error_log($mark) =~ /\[debug\] \d+ table: worker \d+ now serves generation $gen\b/;
}

sub reload_to {
    my ($gen) = @_;
    my $mark = $t->log_mark;
    $t->signal('HUP');
    ok($t->wait_log(qr/reload applied: generation $gen\b/, from => $mark), "reload: generation $gen");
    return $mark;
}

# -d with log_level: info
config('info', '');
$t->start(args => ['-d']);
ok(served_gen_logged(1, 0), '-d: the workers log at debug level');
config('info', '-b');
my $mark = reload_to(2);
ok(served_gen_logged(2, $mark), '-d: and still after a reload');
is($t->stop >> 8, 0, 'stopped');

# log_level: debug, then a reload to info
my $base = $t->log_mark;
config('debug', '');
$t->start;
ok(served_gen_logged(1, $base), 'log_level: debug: the workers log at debug level');
config('info', '');
$mark = reload_to(2);
ok(!served_gen_logged(2, $mark), 'a reload to log_level: info: no more debug lines')
    or diag($t->error_log($mark));
unlike($t->error_log($mark), qr/\[debug\]/, 'none at all');
is($t->stop >> 8, 0, 'stopped');

done_testing;
