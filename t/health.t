#!/usr/bin/perl
# Active health checks end to end, without proxying: real t/backend
# upstreams killed and brought back (DOWN after fall probes, UP after
# rise), every failure reason, a hanging upstream that fails by timeout
# while other probes and the master's reaping go on, health kept across a
# reload, and what keystonectl and the admin API show of it.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use Socket;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $state = "$t->{dir}/keystoned.state";

my $app1 = $t->backend(name => 'app-1');
my $app2 = $t->backend(name => 'app-2');
my $app3 = $t->backend(name => 'app-3');
my $hang = $t->backend(name => 'hang');
my $dead = $t->free_port;

# A listener whose accept queue is full (backlog 0, one connection never
# accepted): the kernel drops further SYNs, so a connect times out.
socket(my $full, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
bind($full, pack_sockaddr_in(0, inet_aton('127.0.0.1'))) or die "bind: $!";
listen($full, 0) or die "listen: $!";
my ($full_port) = unpack_sockaddr_in(getsockname($full));
my $filler = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$full_port", Timeout => 2)
    or die "cannot fill the accept queue: $@";

sub config {
    my ($extra) = @_;
    $extra //= '';
    my ($p1, $p2, $p3, $ph) = map { $_->port } $app1, $app2, $app3, $hang;
    return <<"EOF";
server:
  public_addr: 127.0.0.1:$port
  workers: 2
  access_log: "off"
tenants:
  - name: api
    base_path: /api
    health_defaults: { path: /health, interval: 500ms, timeout: 400ms, rise: 2, fall: 3 }
    upstreams:
      - { name: app-1, url: "http://127.0.0.1:$p1" }
      - { name: app-2, url: "http://127.0.0.1:$p2", weight: 50 }
$extra
  - name: slow
    base_path: /slow
    upstreams:
      - { name: hang, url: "http://127.0.0.1:$ph", health_path: "/health?hang_head=1",
          health_interval: 5s, health_timeout: 3s }
      - { name: quick, url: "http://127.0.0.1:$p3", health_path: /health,
          health_interval: 200ms, health_timeout: 150ms }
  - name: reasons
    base_path: /r
    health_defaults: { interval: 1500ms, timeout: 1s, fall: 1 }
    upstreams:
      - { name: bad-status, url: "http://127.0.0.1:$p3", health_path: "/health?status=503" }
      - { name: bad-response, url: "http://127.0.0.1:$p3", health_path: "/health?malformed=1" }
      - { name: bare-lf, url: "http://127.0.0.1:$p3",
          health_path: "/health?raw=HTTP%2F1.1%20200%20OK%0AContent-Length%3A%200%0A%0A" }
      - { name: big-head, url: "http://127.0.0.1:$p3", health_path: "/health?bigheader=70000" }
      - { name: large-head, url: "http://127.0.0.1:$p3", health_path: "/health?bigheader=40000" }
      - { name: status-099, url: "http://127.0.0.1:$p3",
          health_path: "/health?raw=HTTP%2F1.1%20099%20X%0D%0AContent-Length%3A%200%0D%0A%0D%0A" }
      - { name: reset, url: "http://127.0.0.1:$p3", health_path: "/health?reset=1" }
      - { name: refused, url: "http://127.0.0.1:$dead" }
      - { name: read-timeout, url: "http://127.0.0.1:$p3", health_path: "/health?hang_head=1" }
      - { name: connect-timeout, url: "http://127.0.0.1:$full_port" }
      - { name: expect-418, url: "http://127.0.0.1:$p3", health_path: "/health?status=418",
          health_expect: "418" }
      - { name: tcp, url: "http://127.0.0.1:$p3" }
  - name: lua-only
    base_path: /l
EOF
}

# The health of every tenant: keystonectl health -j when asked for, else the
# admin API's /tenants (the same JSON, and cheaper to poll than a process).
sub health {
    my (%o) = @_;
    if ($o{ctl}) {
        my ($code, $out, $err) = $t->ctl('-s', $state, 'health', '-j');
        return $code == 0 ? eval { decode_json($out) } : undef;
    }
    return $t->request($port, GET => '/admin/tenants')->{json};
}

sub upstream {
    my ($h, $tenant, $name) = @_;
    return undef unless $h;
    my ($tn) = grep { $_->{name} eq $tenant } @{ $h->{tenants} };
    return undef unless $tn;
    my ($u) = grep { $_->{name} eq $name } @{ $tn->{upstreams} };
    return $u;
}

sub wait_upstream {
    my ($tenant, $name, $cond, %o) = @_;
    my $u;
    $t->wait_for(sub {
        $u = upstream(health(), $tenant, $name);
        $u && $cond->($u);
    }, timeout => $o{timeout} // 10) or return undef;
    return $u;
}

sub count_log {
    my ($re) = @_;
    return scalar(() = $t->error_log =~ /$re/g);
}

$t->write_config(config());
my $master = $t->start;

# ---- first probes at start: both UP ---------------------------------------------------
ok(wait_upstream('api', 'app-1', sub { $_[0]{state} eq 'up' }), 'app-1 is up after its first probe');
ok(wait_upstream('api', 'app-2', sub { $_[0]{state} eq 'up' }), 'app-2 is up');
ok($t->wait_log(qr{health: upstream api/app-1 is UP \(1 check\)}), 'the first UP is logged');
my $u1 = upstream(health(ctl => 1), 'api', 'app-1');
is($u1->{reason}, '', 'no reason while healthy');
is($u1->{last_status}, 200, 'last status 200');
ok($u1->{checks_ok} >= 1 && $u1->{checks_failed} == 0, 'counters');
like($u1->{last_check}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'last check time');
ok(defined $u1->{latency_ms} && $u1->{latency_ms} >= 0, 'latency measured');
ok(scalar(grep { m{^GET /health HTTP/1.1} } $app1->requests) >= 1, 'the backend saw GET /health');

# ---- admin API -------------------------------------------------------------------------
my $r = $t->request($port, GET => '/admin/tenants');
is($r->{status}, 200, '/admin/tenants answers 200');
is_deeply([ map { $_->{name} } @{ $r->{json}{tenants} } ], [qw(api slow reasons lua-only)],
          '/admin/tenants lists every tenant in order');
my ($api) = grep { $_->{name} eq 'api' } @{ $r->{json}{tenants} };
is($api->{status}, 'healthy', 'api is healthy');
is($api->{healthy}, 2, 'two upstreams healthy');
is($api->{total}, 2, 'of two');
is($api->{upstreams}[1]{weight}, 50, 'weight shown');
is($api->{upstreams}[0]{state}, 'up', 'state shown');
is($api->{upstreams}[0]{breaker}, 'closed', 'breaker closed');
ok(exists $api->{upstreams}[0]{$_}, "upstream field $_")
    for qw(since last_check latency_ms reason checks_ok checks_failed requests failures usable);
is($r->{headers}{'cache-control'}, 'no-store', 'not cached');

$r = $t->request($port, GET => '/admin/tenants/api/health');
is($r->{status}, 200, '/admin/tenants/api/health: 200 while an upstream is healthy');
is($r->{json}{name}, 'api', 'the tenant itself');
is(scalar @{ $r->{json}{upstreams} }, 2, 'with its upstreams');
$r = $t->request($port, GET => '/admin/tenants/nope/health');
is($r->{status}, 404, 'unknown tenant: 404');
is($r->{json}{error}{message}, 'no such tenant', 'with the error envelope');
is($r->{headers}{'cache-control'}, 'no-store', 'the error envelope is not cached either');
$r = $t->request($port, POST => '/admin/tenants', body => '{}');
is($r->{status}, 405, 'POST /admin/tenants: 405');
is($r->{headers}{'cache-control'}, 'no-store', '405: not cached');
is($r->{headers}{allow}, 'GET, HEAD', '405: with its Allow');
$r = $t->request($port, GET => '/admin/nowhere');
is($r->{status}, 404, 'unknown admin endpoint: 404');
is($r->{headers}{'cache-control'}, 'no-store', '404: not cached');
$r = $t->request($port, GET => '/admin/tenants/lua-only/health');
is($r->{status}, 200, 'a tenant without upstreams is not down');
is($r->{json}{status}, 'healthy', 'and says healthy');
$r = $t->request($port, HEAD => '/admin/tenants');
is($r->{status}, 200, 'HEAD /admin/tenants');
is($r->{body}, '', 'without a body');

# ---- every failure reason ------------------------------------------------------------------
my %want = (
    'bad-status' => 'bad status 503', 'bad-response' => 'bad response', reset => 'reset',
    refused => 'connect refused', 'read-timeout' => 'read timeout',
    'connect-timeout' => 'connect timeout',
    # what the proxy would answer 502 for is no healthy answer either
    'bare-lf' => 'bad response', 'big-head' => 'bad response', 'status-099' => 'bad response',
);
for my $name (sort keys %want) {
    my $u = wait_upstream('reasons', $name, sub { $_[0]{state} eq 'down' });
    ok($u, "reasons/$name is down after one failed probe (fall 1)");
    is($u && $u->{reason}, $want{$name}, "reasons/$name: reason \"$want{$name}\"");
    ok($t->wait_log(qr{health: upstream reasons/\Q$name\E is DOWN: \Q$want{$name}\E \(1 check\)}),
       "reasons/$name: the change is logged with its reason");
}
my $u = wait_upstream('reasons', 'expect-418', sub { $_[0]{checks_ok} >= 1 });
is($u && $u->{state}, 'up', 'health_expect: a 418 that is expected is healthy');
$u = wait_upstream('reasons', 'large-head', sub { $_[0]{checks_ok} >= 1 });
is($u && $u->{state}, 'up', 'a 40 KB head, which the proxy takes too (max_response_header_bytes 64KB), is healthy');
$u = wait_upstream('reasons', 'tcp', sub { $_[0]{checks_ok} >= 1 });
is($u && $u->{state}, 'up', 'TCP check: up when the port accepts');
is($u && $u->{last_status}, 0, 'TCP check: no HTTP status');
my ($code, $out) = $t->ctl('-s', $state, 'health');
is($code, 0, 'keystonectl health exits 0');
like($out, qr{^reasons: 3/12 upstreams healthy$}m, 'keystonectl health: tenant line');
like($out, qr{^\s+bad-status\s+http://127\.0\.0\.1:\d+\s+down\s+since \d+s ago\s+[\d.]+ ms\s+bad status 503$}m,
     'keystonectl health: state, since, latency, reason');
like($out, qr{^\s+connect-timeout\s+\S+\s+down\s.*\bconnect timeout$}m, 'keystonectl health: connect timeout');
like($out, qr{^\s+tcp\s+\S+\s+up\s+since \d+s ago\s+[\d.]+ ms\s*$}m, 'keystonectl health: a healthy one');
like($out, qr{^lua-only: no upstreams$}m, 'keystonectl health: a tenant without upstreams');
unlike($out, qr/^workers:|^keystoned /m, 'keystonectl health shows only health');
($code, $out) = $t->ctl('-s', $state, 'status');
like($out, qr{^  reasons\s+base /r\s+3/12 upstreams healthy}m, 'keystonectl status: tenant line');
like($out, qr{^\s+refused\s+\S+\s+down\s+since \d+s ago\s+[\d.]+ ms\s+connect refused$}m,
     'keystonectl status: upstream lines');

# ---- kill app-1: DOWN after fall (3) probes ---------------------------------------------------
my $before = upstream(health(), 'api', 'app-1');
my $mark = $t->log_mark;
$app1->stop;
$u = wait_upstream('api', 'app-1', sub { $_[0]{state} eq 'down' });
ok($u, 'app-1 is DOWN after it was killed');
is($u->{reason}, 'connect refused', 'reason: connect refused');
ok($u->{checks_failed} - $before->{checks_failed} >= 3, 'not before fall (3) failed probes');
ok($t->wait_log(qr{health: upstream api/app-1 is DOWN: connect refused \(3 checks\)}, from => $mark),
   'logged: upstream api/app-1 is DOWN: connect refused (3 checks)');
ok($t->wait_for(sub { upstream(health(), 'api', 'app-1')->{checks_failed} >= $u->{checks_failed} + 3 },
                timeout => 20), 'probing goes on while it is down');
is(count_log(qr{upstream api/app-1 is DOWN}), 1, 'and the change is logged once');
$r = $t->request($port, GET => '/admin/tenants/api/health');
is($r->{status}, 200, 'api still answers 200 with one upstream left');
is($r->{json}{healthy}, 1, 'one healthy');
is($r->{json}{upstreams}[0]{usable}, JSON::PP::false, 'app-1 is not usable');
is(decode_json($t->request($port, GET => '/admin/health')->{body})->{status}, 'healthy',
   '/admin/health: healthy while every tenant has an upstream');

# ---- kill app-2 too: the tenant is down ------------------------------------------------------
$app2->stop;
ok(wait_upstream('api', 'app-2', sub { $_[0]{state} eq 'down' }), 'app-2 down');
$r = $t->request($port, GET => '/admin/tenants/api/health');
is($r->{status}, 503, '/admin/tenants/api/health: 503 with no healthy upstream');
is($r->{json}{status}, 'down', 'status down');
$r = $t->request($port, GET => '/admin/health');
is($r->{status}, 200, '/admin/health still 200 (the gateway is up)');
is($r->{json}{status}, 'degraded', 'but degraded');
is($r->{json}{tenants}{api}{healthy}, 0, 'naming the tenant');
($code, $out) = $t->ctl('-s', $state, 'health');
like($out, qr{^api: 0/2 upstreams healthy \(DOWN: requests get 503\)$}m, 'keystonectl health says api is down');

# ---- bring app-1 back: UP after rise (2) probes -------------------------------------------------
$mark = $t->log_mark;
my $down = upstream(health(), 'api', 'app-1');
$app1 = $t->backend(name => 'app-1', port => $app1->port);
$u = wait_upstream('api', 'app-1', sub { $_[0]{state} eq 'up' });
ok($u, 'app-1 is UP again');
ok($u->{checks_ok} - $down->{checks_ok} >= 2, 'after rise (2) good probes');
ok(scalar(grep { m{^GET /health } } $app1->requests) >= 2, 'the new process answered them');
ok($t->wait_log(qr{health: upstream api/app-1 is UP \(2 checks\)}, from => $mark),
   'logged: upstream api/app-1 is UP (2 checks)');
is($t->request($port, GET => '/admin/tenants/api/health')->{status}, 200, 'api answers 200 again');
is($t->request($port, GET => '/admin/health')->{json}{status}, 'healthy', '/admin/health: healthy again');

# ---- a hanging upstream: its probe times out; nothing else waits for it -------------------------------
# connections open at the hanging backend, not counting the one asking (a
# connection that just asked may still be counted: this is an upper bound)
sub hang_open { ($hang->stats->{open} // 0) - 1 }
# wait for a probe to time out, then for the next one to start: that one
# has its whole timeout (3s) to go
my $c0 = upstream(health(), 'slow', 'hang')->{checks_failed};
ok(wait_upstream('slow', 'hang', sub { $_[0]{checks_failed} > $c0 }, timeout => 10),
   'a probe of the hanging upstream timed out');
my $r0 = $hang->stats->{requests};
ok($t->wait_for(sub { $hang->stats->{requests} > $r0 }, timeout => 10),
   'the next probe of the hanging upstream is in flight');
my $h0 = upstream(health(), 'slow', 'hang');
my $q0 = upstream(health(), 'slow', 'quick');
my @workers = $t->processes_of($master);
$mark = $t->log_mark;
kill 'KILL', $workers[0];
ok($t->wait_log(qr/worker \d+ started: pid (?!$workers[0]\b)\d+/, from => $mark, timeout => 10),
   'a worker killed meanwhile is respawned');
my $h1 = upstream(health(), 'slow', 'hang');
ok(hang_open() >= 1, 'while the hanging probe is still waiting') or diag(encode_json($hang->stats));
is($h1->{checks_failed} + $h1->{checks_ok}, $h0->{checks_failed} + $h0->{checks_ok},
   'and has not finished');
ok($t->wait_for(sub { upstream(health(), 'slow', 'quick')->{checks_ok} >= $q0->{checks_ok} + 3 }),
   'other probes go on meanwhile');
is(upstream(health(), 'slow', 'hang')->{checks_failed}, $h0->{checks_failed},
   'still before the hanging probe times out');
$u = wait_upstream('slow', 'hang', sub { $_[0]{checks_failed} > $h0->{checks_failed} }, timeout => 15);
is($u && $u->{reason}, 'read timeout', 'the hanging probe fails with read timeout');
ok($u && $u->{latency_ms} >= 2990, 'after health_timeout (3s)') or diag("latency $u->{latency_ms} ms");
ok($t->wait_for(sub { hang_open() == 0 }), 'and its connection is closed');

# ---- reload: health survives for unchanged upstreams, new ones are probed -----------------------
my $before_reload = health();
my $a2 = upstream($before_reload, 'api', 'app-2');
is($a2->{state}, 'down', 'app-2 is down before the reload');
$mark = $t->log_mark;
my $p3 = $app3->port;
$t->write_config(config(qq{      - { name: app-4, url: "http://127.0.0.1:$p3" }}));
($code, $out) = $t->ctl('-s', $state, 'reload');
is($code, 0, 'reload applied');
my $after = health(ctl => 1);
is($after->{generation}, $before_reload->{generation} + 1, 'a new generation');
my $b2 = upstream($after, 'api', 'app-2');
is($b2->{state}, 'down', 'app-2 is still down right after the reload');
is($b2->{since}, $a2->{since}, 'since the same time');
ok($b2->{checks_failed} >= $a2->{checks_failed}, 'its counters kept');
is(upstream($after, 'api', 'app-1')->{since}, upstream($before_reload, 'api', 'app-1')->{since},
   'app-1 kept its state and time');
ok(wait_upstream('api', 'app-4', sub { $_[0]{state} eq 'up' }), 'the new upstream app-4 is probed and up');
is(count_log(qr{upstream api/app-2 is DOWN}), 1, 'no second DOWN for app-2');
unlike(substr($t->error_log, $mark), qr{upstream api/app-1 is UP}, 'no new UP for app-1');

# removing an upstream drops its probes
$t->write_config(config());
($code) = $t->ctl('-s', $state, 'reload');
is($code, 0, 'reload without app-4');
ok(!upstream(health(), 'api', 'app-4'), 'app-4 is gone');

is($t->stop >> 8, 0, 'clean stop');
close $filler;
close $full;
done_testing;
