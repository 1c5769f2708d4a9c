#!/usr/bin/perl
# A worker told to finish closes its listeners at once and finishes the
# request in flight: after a graceful stop, a kill -9 of the master, or a
# reload that moves public_addr, the old address stops listening while a
# slow request is still being served (connect is refused, a new keystoned
# can bind it at once), and that request is still answered in full.
use strict;
use warnings;
use Test::More;
use Errno qw(ECONNREFUSED);
use IO::Socket::IP;
use Time::HiRes qw(time);
use Keystone::Test;
use Keystone::Load;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $moved = $t->free_port;
my $app = $t->backend(name => 'app');
my $DELAY = 3000;      # ms the slow request waits for its upstream

sub config {
    my ($p) = @_;
    return <<"EOF";
server:
  public_addr: 127.0.0.1:$p
  workers: 2
  min_spare: 1
  max_spare: 4
  shutdown_timeout: 20s
  access_log: "off"
health_defaults:
  interval: 1h
tenants:
  - name: app
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
}

# nothing listens on 127.0.0.1:$p any more
sub refused {
    my ($p) = @_;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $p, Proto => 'tcp', Timeout => 1);
    return 0 if $s;
    return $! == ECONNREFUSED;
}

# a request that keeps one worker busy for $DELAY ms; returns the
# connection and when it was sent, once the scoreboard shows it proxying
sub slow_request {
    my ($p) = @_;
    my $c = $t->conn($p);
    $c->send("GET /slow?delay=$DELAY HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    my $sent = time;
    ok($t->wait_for(sub {
        my $s = Keystone::Load::status($t) or return 0;
        return grep { $_->{state} eq 'proxying' } @{ $s->{workers}{list} };
    }), "port $p: a worker is busy on the slow request");
    return ($c, $sent);
}

# a second, unrelated keystoned (its own directory and files) on $p
sub other_keystoned {
    my ($p, $what) = @_;
    my $t2 = Keystone::Test->new;
    $t2->write_config(config($p));
    my $pid = eval { $t2->start(port => $p) };
    ok($pid, "$what: a new keystoned starts on the same address at once") or diag($@);
    is($t2->request($p, GET => '/admin/health')->{status}, 200, "$what: and serves there");
    is($t2->stop >> 8, 0, "$what: (the new one stopped)");
}

sub completes {
    my ($c, $what) = @_;
    my $r = $c->response(timeout => 15);
    is($r->{status}, 200, "$what: the request in flight is answered in full");
    is($r->{json}{target}, "/slow?delay=$DELAY", "$what: with its upstream's answer");
}

# ---- graceful stop ------------------------------------------------------------
$t->write_config(config($port));
my $master = $t->start;
my ($c, $sent) = slow_request($port);
$t->signal('TERM');
ok($t->wait_for(sub { refused($port) }, timeout => 2), 'graceful stop: the port is closed');
ok(time - $sent < $DELAY / 1000, 'graceful stop: while the request is still in flight');
other_keystoned($port, 'graceful stop');
completes($c, 'graceful stop');
my $st = $t->reap($master, timeout => 10);
is($st, 0, 'graceful stop: the master exits 0 once the worker is done');

# ---- kill -9 of the master -------------------------------------------------------
$master = $t->start;
my @workers = $t->processes_of($master);
($c, $sent) = slow_request($port);
kill 'KILL', $master;
ok($t->wait_for(sub { refused($port) }, timeout => 2), 'master killed: the port is closed');
ok(time - $sent < $DELAY / 1000, 'master killed: while the request is still in flight');
other_keystoned($port, 'master killed');
completes($c, 'master killed');
ok($t->wait_for(sub { !grep { $t->alive($_) } @workers }, timeout => 5),
   'master killed: the orphaned workers exit once done');

# ---- a reload moves public_addr, and back while the old worker is busy --------------
$master = $t->start;
($c, $sent) = slow_request($port);
$t->write_config(config($moved));
my ($code, $out, $err) = $t->ctl('-c', $t->dir . '/keystone.yaml', 'reload');
is($code, 0, 'reload to a new port applied') or diag($err);
ok($t->wait_for(sub { refused($port) }, timeout => 2), 'reload: the old port is closed');
is($t->request($moved, GET => '/admin/health')->{status}, 200, 'reload: the new one serves');
$t->write_config(config($port));
($code, $out, $err) = $t->ctl('-c', $t->dir . '/keystone.yaml', 'reload');
is($code, 0, 'reload back to the old port applied at once') or diag($err);
ok(time - $sent < $DELAY / 1000, 'reload: all that while the request is in flight');
is($t->request($port, GET => '/admin/health')->{status}, 200, 'reload: the old port serves again');
completes($c, 'reload');
is($t->stop >> 8, 0, 'clean stop');

done_testing;
