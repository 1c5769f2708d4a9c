#!/usr/bin/perl
# The proxy across reloads: a request that arrives on an idle keep-alive
# connection after a reload is served under the new table, also when the
# new limits make the worker's buffers grow under that connection (with
# a request pipelined behind it); pooled upstream connections survive a
# reload that keeps their upstream and are closed when it goes away.
use strict;
use warnings;
use Test::More;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $one = $t->backend(name => 'one');
my $two = $t->backend(name => 'two');

sub config {
    my (%o) = @_;
    my $up = $o{up} // $one;
    return <<"EOF";
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 1
  idle_timeout: 30s
  access_log: "off"
limits:
  max_header_bytes: $o{mhb}
  max_headers: $o{mh}
health_defaults:
  interval: 1h
tenants:
  - name: demo
    upstreams:
      - { name: $o{name}, url: "http://@{[ $up->addr ]}" }
EOF
}

sub reload {
    my (%o) = @_;
    $t->write_config(config(%o));
    my $mark = $t->log_mark;
    $t->signal('HUP');
    return $t->wait_log(qr/reload applied/, from => $mark);
}

$t->write_config(config(mhb => '16KB', mh => 100, name => 'app'));
my $master = $t->start;
my ($worker) = $t->processes_of($master);

my $c = $t->conn($port);
my $r = $c->request(GET => '/first');
is($r->{json}{name}, 'one', 'served before the reload');
my $pooled = $r->{json}{conn_id};

# ---- the buffers grow under an open connection ------------------------------------
ok(reload(mhb => '8MB', mh => 5000, name => 'app'), 'reload: max_header_bytes 8MB, max_headers 5000');
my $big = 'v' x 20000;     # over the old 16KB, so only the new limit lets it in
$c->send(Keystone::Test::build_request(GET => '/second', keepalive => 1, headers => [ 'X-Big' => $big ])
       . Keystone::Test::build_request(GET => '/third', keepalive => 1));
$r = $c->response;
is($r->{json}{target}, '/second', 'the next request on that connection is served');
is((grep { $_->[0] eq 'X-Big' } @{ $r->{json}{headers} })[0][1], $big, 'with its header intact under the new limit');
is($r->{json}{conn_id}, $pooled, 'over the pooled connection of the unchanged upstream');
$r = $c->response;
is($r->{json}{target}, '/third', 'and the request pipelined behind it too');
is(($t->processes_of($master))[0], $worker, 'by the same worker');

# ---- an upstream replaced: its pooled connection is closed ---------------------------
# (the backend counts a closed connection out a moment later: poll)
my $stats;
ok($t->wait_for(sub { ($stats = $one->stats)->{open} == 2 }),
   'the first backend has our pooled connection (and the stats one)') or diag explain $stats;
ok(reload(mhb => '8MB', mh => 5000, name => 'app', up => $two), 'reload: the upstream moves to another backend');
$r = $c->request(GET => '/fourth');
is($r->{json}{name}, 'two', 'the same client connection now reaches the new upstream');
ok($t->wait_for(sub { $one->stats->{open} == 1 }), 'and the connection to the old one was closed');
$c->close;

done_testing;
