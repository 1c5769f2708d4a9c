#!/usr/bin/perl
# Upstreams that misbehave, under load, next to one that does not: one
# dies in the middle of its response, one resets, one hangs after the
# head, one answers garbage, one sends an oversized header, one answers
# after response_timeout.  Each client gets 502/504, or, for a response
# already half sent, a clean close; the workers live on and serve the
# next request (the good tenant never notices); each upstream's passive
# health counts every failure (GET /admin/tenants/NAME/health).
use strict;
use warnings;
use Test::More;
use JSON::PP;
use Keystone::Test;
use Keystone::Load;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');
my $duration = Keystone::Load::soak() ? 20 : 3;

# name => [query, expected outcome, upstream settings]; the timeouts
# are generous enough for a busy machine
my @faults = (
    [ mid       => 'close_mid=1&size=200000', 'closed_mid_response' ],
    [ reset     => 'reset=1',                 502 ],
    [ hang      => 'hang=1&size=10',          'closed_mid_response', 'idle_timeout: 1s' ],
    [ malformed => 'malformed=1',             502 ],
    [ bighead   => 'bigheader=20000',         502 ],
    [ slow      => 'delay=2500',              504, 'response_timeout: 1s' ],
);
my $tenants = join '', map { <<"EOF" } @faults;
  - name: $_->[0]
    domains: [$_->[0].test]
    retries: 0
    upstreams:
      - { name: up, url: "http://@{[ $app->addr ]}"@{[ $_->[3] ? ", $_->[3]" : '' ]} }
EOF
$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 9
  min_spare: 1
  max_spare: 10
  max_workers: 12
  max_requests_per_worker: 0
  access_log: "off"
limits:
  max_response_header_bytes: 8KB
health_defaults:
  interval: 1h
  max_fails: 0
tenants:
  - name: good
    domains: [good.test]
    upstreams:
      - { name: up, url: "http://@{[ $app->addr ]}" }
$tenants
EOF
$t->start;
$t->wait_for(sub { Keystone::Load::worker_pids($t) == 9 }, timeout => 5);
my @workers = Keystone::Load::worker_pids($t);

my $load = Keystone::Load->start($t, port => $port, duration => $duration, timeout => 5000,
    specs => [ '2*GET /ok?size=1000 good.test',
               map { "1*GET /f?$_->[1] $_->[0].test" } @faults ]);
my $r = $load->result;
diag(join ', ', map { my $s = Keystone::Load::spec($r, $_); "$s->{spec}: " .
         join('/', map({ "$_=$s->{statuses}{$_}" } sort keys %{ $s->{statuses} }),
                   map({ "$_=$s->{errors}{$_}" } grep { $s->{errors}{$_} } sort keys %{ $s->{errors} })) }
     0 .. $#faults + 1);

my $good = Keystone::Load::spec($r, 0);
cmp_ok($good->{responses}, '>', 100, 'the good tenant was busy');
is_deeply($good->{statuses}, { 200 => $good->{responses} }, 'and got 200 every time');
is(Keystone::Load::failed({ errors => $good->{errors} }), 0, 'without a single failure');

for my $i (0 .. $#faults) {
    my ($name, $query, $want) = @{ $faults[$i] };
    my $s = Keystone::Load::spec($r, $i + 1);
    my $n = $s->{responses};
    $n += $_ for values %{ $s->{errors} };
    cmp_ok($n, '>=', 2, "$name: requests were made ($n)");
    if ($want =~ /^\d+$/) {
        is_deeply($s->{statuses}, { $want => $n }, "$name: every one answered $want");
    } else {
        is($s->{errors}{$want}, $n, "$name: every one got the head and then a clean close");
        is($s->{errors}{reset}, 0, "$name: never a reset");
    }
    my $h = $t->request($port, GET => "/admin/tenants/$name/health");
    my ($u) = @{ $h->{json}{upstreams} // [] };
    is($u->{requests}, $n, "$name: the upstream's passive health saw each request");
    is($u->{failures}, $n, "$name: and counted each as a failure");
    is($u->{active}, 0, "$name: none left in flight");
}
my $h = $t->request($port, GET => '/admin/tenants/good/health');
is($h->{json}{upstreams}[0]{failures}, 0, 'the good upstream has no failure');

is_deeply([ Keystone::Load::worker_pids($t) ], \@workers, 'the same workers: none died');
unlike($t->error_log, qr/worker-exit/, 'no worker exit was logged');
my $c = $t->conn($port);
for my $fault (@faults) {
    my $r1 = $c->request(GET => "/f?$fault->[1]", host => "$fault->[0].test");
    $c = $t->conn($port) unless defined $r1->{status} && ($r1->{headers}{connection} // '') ne 'close';
    my $r2 = $c->request(GET => '/next', host => 'good.test');
    is($r2->{status}, 200, "after a $fault->[0] answer the next request is served");
    $c = $t->conn($port) if ($r2->{headers}{connection} // '') eq 'close';
}
is($t->stop, 0, 'clean stop');

done_testing;
