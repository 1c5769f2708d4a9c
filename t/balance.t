#!/usr/bin/perl
# Load balancing with real traffic through the proxy: weights across many
# workers, no request to a DOWN upstream, no failed request once one is
# down, draining by weight 0, the passive breaker opening on a 5xx burst
# and half-opening later, a dead upstream taken out by its connect
# failures, all-down 503 with Retry-After, all_down: try_anyway, a route
# naming a weight-0 upstream (the canary), and retries (connect failures
# only; a POST whose body went out never again).
use strict;
use warnings;
use Test::More;
use JSON::PP;
use POSIX ();
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $state = "$t->{dir}/keystoned.state";
my %b = map { $_ => $t->backend(name => $_) } qw(a b p1 p2 solo alive z1 ok1 ok2 ok0 s1 s2 s3 v1 v2 f1 f2 f3);
my ($dead1, $dead2, @dead) = map { $t->free_port } 1 .. 10;
sub url { "http://" . $b{ $_[0] }->addr }

sub config {
    my (%o) = @_;
    my $wb = $o{weight_b} // 1;
    return <<"EOF";
server:
  public_addr: 127.0.0.1:$port
  workers: 4
  min_spare: 1
  max_spare: 8
  access_log: "off"
tenants:
  - name: wrr
    base_path: /wrr
    health_defaults: { path: /health, interval: 1s, timeout: 800ms }
    upstreams:
      - { name: a, url: "@{[ url('a') ]}", weight: 3 }
      - { name: b, url: "@{[ url('b') ]}", weight: $wb }
  - name: pair
    base_path: /pair
    health_defaults: { path: /health, interval: 300ms, timeout: 250ms, rise: 2, fall: 2, max_fails: 0 }
    upstreams:
      - { name: p1, url: "@{[ url('p1') ]}" }
      - { name: p2, url: "@{[ url('p2') ]}" }
  - name: brk
    base_path: /brk
    health_defaults: { path: /health, interval: 1s, timeout: 800ms,
                       max_fails: 3, fail_window: 10s, fail_timeout: 4s }
    upstreams:
      - { name: solo, url: "@{[ url('solo') ]}" }
  - name: dead
    base_path: /dead
    retries: 1
    health_defaults: { interval: 24h, max_fails: 2, fail_window: 10s, fail_timeout: 3s }
    upstreams:
      - { name: gone, url: "http://127.0.0.1:$dead1" }
      - { name: alive, url: "@{[ url('alive') ]}" }
  - name: down
    base_path: /down
    health_defaults: { interval: 2s, timeout: 1s, rise: 2, fall: 1 }
    upstreams:
      - { name: nothing, url: "http://127.0.0.1:$dead2" }
  - name: anyway
    base_path: /anyway
    all_down: try_anyway
    health_defaults: { path: /health, interval: 300ms, timeout: 250ms, fall: 1 }
    upstreams:
      - { name: z1, url: "@{[ url('z1') ]}" }
  # retries: connect failures (nothing sent) go to the next upstream
  - name: retry1
    base_path: /retry1
    retries: 1
    health_defaults: { interval: 24h, max_fails: 0 }
    upstreams:
      - { name: d1, url: "http://127.0.0.1:$dead[0]" }
      - { name: d2, url: "http://127.0.0.1:$dead[1]" }
      - { name: ok1, url: "@{[ url('ok1') ]}" }
  # a retry takes no position from the next request: the dead one still
  # gets only its share of first attempts
  - name: fair2
    base_path: /fair2
    retries: 1
    health_defaults: { interval: 24h, max_fails: 0 }
    upstreams:
      - { name: d1, url: "http://127.0.0.1:$dead[6]" }
      - { name: f1, url: "@{[ url('f1') ]}" }
  - name: fair3
    base_path: /fair3
    retries: 1
    health_defaults: { interval: 24h, max_fails: 0 }
    upstreams:
      - { name: d1, url: "http://127.0.0.1:$dead[7]" }
      - { name: f2, url: "@{[ url('f2') ]}" }
      - { name: f3, url: "@{[ url('f3') ]}" }
  - name: retry2
    base_path: /retry2
    retries: 2
    health_defaults: { interval: 24h, max_fails: 0 }
    upstreams:
      - { name: d1, url: "http://127.0.0.1:$dead[2]" }
      - { name: d2, url: "http://127.0.0.1:$dead[3]" }
      - { name: ok2, url: "@{[ url('ok2') ]}" }
  - name: retry0
    base_path: /retry0
    retries: 0
    health_defaults: { interval: 24h, max_fails: 0 }
    upstreams:
      - { name: d1, url: "http://127.0.0.1:$dead[4]" }
      - { name: ok0, url: "@{[ url('ok0') ]}" }
  - name: post
    base_path: /post
    retries: 1
    health_defaults: { interval: 24h, max_fails: 0 }
    upstreams:
      - { name: s1, url: "@{[ url('s1') ]}" }
      - { name: s2, url: "@{[ url('s2') ]}" }
  # a route names v2, which has no share of the round-robin (the canary)
  - name: canary
    base_path: /canary
    lua_script: $t->{dir}/canary.lua
    health_defaults: { path: /health, interval: 300ms, timeout: 250ms, fall: 1, max_fails: 0 }
    upstreams:
      - { name: v1, url: "@{[ url('v1') ]}", weight: 1 }
      - { name: v2, url: "@{[ url('v2') ]}", weight: 0, health_interval: 2s, health_timeout: 1s }
  - name: canaryany
    base_path: /canaryany
    all_down: try_anyway
    lua_script: $t->{dir}/canary.lua
    health_defaults: { path: /health, interval: 300ms, timeout: 250ms, fall: 1, max_fails: 0 }
    upstreams:
      - { name: v1, url: "@{[ url('v1') ]}", weight: 1 }
      - { name: v2, url: "@{[ url('v2') ]}", weight: 0 }
  - name: postdead
    base_path: /postdead
    retries: 1
    health_defaults: { interval: 24h, max_fails: 0 }
    upstreams:
      - { name: d1, url: "http://127.0.0.1:$dead[5]" }
      - { name: s3, url: "@{[ url('s3') ]}" }
EOF
}

sub tenants { $t->request($port, GET => '/admin/tenants')->{json} }
sub upstream {
    my ($tenant, $name, $h) = @_;
    $h //= tenants();
    my ($tn) = grep { $_->{name} eq $tenant } @{ $h->{tenants} };
    my ($u) = grep { $_->{name} eq $name } @{ $tn->{upstreams} };
    return $u;
}
sub wait_state {
    my ($tenant, $name, $state, %o) = @_;
    return $t->wait_for(sub { (upstream($tenant, $name)->{state} // '') eq $state },
                        timeout => $o{timeout} // 10);
}
# Requests made to a backend for the client (its request log, probes left out).
sub served { scalar grep { !m{ /health[ ?]} } $b{ $_[0] }->requests }

# n requests from each of k processes at once; returns the backend names
# (or "status N") in order of completion.
sub parallel {
    my ($k, $n, $path) = @_;
    my @kids;
    for my $i (1 .. $k) {
        pipe(my $rd, my $wr) or die "pipe: $!";
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            close $rd;
            for (1 .. $n) {
                my $r = $t->request($port, GET => $path);
                print $wr (($r->{status} // 0) == 200 ? $r->{json}{name} : "status " . ($r->{status} // 'none')), "\n";
            }
            close $wr;
            POSIX::_exit(0);
        }
        close $wr;
        push @kids, [ $pid, $rd ];
    }
    my @out;
    for my $k (@kids) {
        my $fh = $k->[1];
        push @out, map { chomp; $_ } <$fh>;
        waitpid $k->[0], 0;
    }
    return @out;
}

$t->write_file('canary.lua', <<'LUA');
router:add_route("GET", "/canary/v2/*", {upstream = "v2"})
router:add_route("GET", "/canaryany/v2/*", {upstream = "v2"})
LUA
$t->write_config(config());
my $master = $t->start;
for my $u ([qw(wrr a)], [qw(wrr b)], [qw(pair p1)], [qw(pair p2)], [qw(brk solo)]) {
    ok(wait_state(@$u, 'up'), "$u->[0]/$u->[1] is up");
}

# ---- weights 3:1 over many requests from many workers ---------------------------------
my @got = parallel(8, 50, '/wrr/x');
my %n;
$n{$_}++ for @got;
is(scalar @got, 400, '400 requests from 8 clients at once');
is(($n{a} // 0) + ($n{b} // 0), 400, 'all answered by a or b');
my $share = ($n{a} // 0) / 400;
# The cursor is shared, so the split is exact in practice; the tolerance
# (1%) only allows for a retried request.
ok(abs($share - 0.75) <= 0.01, "weights 3:1 give 3:1 (a $n{a}, b $n{b}, tolerance 1%)");
my ($code, $out) = $t->ctl('-s', $state, 'status', '-j');
my $busy = grep { $_->{requests} > 0 } @{ decode_json($out)->{workers}{list} };
ok($busy >= 2, "served by several workers ($busy)");
is(upstream('wrr', 'a')->{requests}, $n{a}, 'the request counter of a agrees');

# ---- weight 0 drains --------------------------------------------------------------------
$t->write_config(config(weight_b => 0));
($code) = $t->ctl('-s', $state, 'reload');
is($code, 0, 'reload with b at weight 0');
my $before = served('b');
@got = parallel(2, 20, '/wrr/x');
is(scalar(grep { $_ eq 'a' } @got), 40, 'every request goes to a');
is(served('b'), $before, 'b gets no new request');
is(upstream('wrr', 'b')->{usable}, JSON::PP::false, 'b is not usable while drained');
is(upstream('wrr', 'b')->{state}, 'up', 'but still checked and up');
$t->write_config(config());
($code) = $t->ctl('-s', $state, 'reload');
is($code, 0, 'b back at weight 1');

# ---- no request reaches a DOWN upstream ----------------------------------------------------
ok($b{p1}->set_health(503), 'p1 starts failing its checks (it still serves)');
ok(wait_state('pair', 'p1', 'down'), 'p1 is DOWN');
my $p1 = served('p1');
@got = parallel(4, 25, '/pair/y');
is(scalar(grep { $_ eq 'p2' } @got), 100, 'all 100 requests answered by p2');
is(served('p1'), $p1, 'none of them reached p1');
ok($b{p1}->set_health(200), 'p1 healthy again');
ok(wait_state('pair', 'p1', 'up'), 'p1 is UP');

# ---- kill an upstream under load: zero failed requests once it is down ------------------
# A client keeps sending requests; each result is written with its time.
# A request that was in flight on p1 when it died may fail (the spec asks
# nothing of those); once p1 is DOWN none may.
use Time::HiRes ();
my $stop = "$t->{dir}/stop";
my $pid = fork // die;
if ($pid == 0) {
    open my $fh, '>', "$t->{dir}/load" or POSIX::_exit(1);
    $fh->autoflush(1);
    while (!-e $stop) {
        my $start = Time::HiRes::time();
        my $r = $t->request($port, GET => '/pair/z');
        printf $fh "%.6f %s %s\n", $start, $r->{status} // 0,
            ($r->{status} // 0) == 200 ? $r->{json}{name} : ($r->{error} // $r->{body} // '');
    }
    close $fh;
    POSIX::_exit(0);
}
ok($t->wait_for(sub { served('p1') > $p1 + 20 }), 'traffic reaches p1');
$b{p1}->stop;
ok(wait_state('pair', 'p1', 'down'), 'p1 killed and DOWN');
my $t_down = Time::HiRes::time();
sub started_after {
    my ($when) = @_;
    my $log = do { local (@ARGV, $/) = "$t->{dir}/load"; <> } // '';
    return scalar grep { (split / /)[0] > $when } split /\n/, $log;
}
ok($t->wait_for(sub { started_after($t_down) >= 101 }, timeout => 60), '100 more requests since');
$t->write_file('stop', '');
waitpid $pid, 0;
my (@before, @after);
for (split /\n/, do { local (@ARGV, $/) = "$t->{dir}/load"; <> }) {
    my ($when, $status, $who) = split / /, $_, 3;
    push @{ $when > $t_down ? \@after : \@before }, [ $status, $who ];
}
ok(scalar(@after) >= 100, scalar(@after) . ' requests after p1 was seen down');
my @failed = grep { $_->[0] != 200 } @after;
is(scalar @failed, 0, 'none of them failed') or diag(explain \@failed);
is(scalar(grep { $_->[1] eq 'p1' } @after), 0, 'none reached p1');
my @early = grep { $_->[0] != 200 } @before;
ok(scalar(grep { $_->[1] eq 'p1' } @before) > 0, 'p1 served before it died');
note(scalar(@early) . ' of ' . scalar(@before) . ' requests before DOWN failed: ' .
     join(', ', map { "$_->[0] $_->[1]" } @early));
is(upstream('pair', 'p1')->{reason}, 'connect refused', 'p1: connect refused');

# ---- the passive breaker opens on a 5xx burst and half-opens later -------------------------
# (fail_timeout is a few seconds: the checks made while it is open must fit
# in it even on a loaded machine)
my $mark = $t->log_mark;
for my $i (1 .. 3) {
    my $r = $t->request($port, GET => '/brk/?status=500');
    is($r->{status}, 500, "5xx burst: request $i is relayed");
}
# (the worker counts an outcome once the answer is out: poll)
my $u;
ok($t->wait_for(sub { ($u = upstream('brk', 'solo'))->{breaker} eq 'open' }),
   'three 5xx within fail_window open the breaker') or diag explain $u;
is($u->{state}, 'up', 'while the active checks still say up');
is($u->{usable}, JSON::PP::false, 'so solo takes no traffic');
ok($t->wait_log(qr{breaker: upstream brk/solo: circuit open for 4000 ms after 3 failures}, from => $mark),
   'the opening is logged');
my $left = POSIX::ceil(upstream('brk', 'solo')->{breaker_open_ms} / 1000);
my $r = $t->request($port, GET => '/brk/x');
is($r->{status}, 503, 'the next request: 503');
my $ra = $r->{headers}{'retry-after'} // '';
# the seconds left on the breaker, rounded up (a moment passed since we asked)
ok($ra eq $left || $ra eq $left - 1, "Retry-After: the breaker time left ($ra, ${left}s left)");
ok($ra >= 1, 'at least 1');
is($r->{json}{error}{message}, 'no healthy upstream', 'with the JSON envelope');
my $served = served('solo');
is($t->request($port, GET => '/admin/tenants/brk/health')->{status}, 503, '/admin/tenants/brk/health: 503');
ok($t->wait_for(sub { upstream('brk', 'solo')->{breaker} eq 'half-open' }, timeout => 15),
   'after fail_timeout the breaker is half-open');
# the probe is a stream whose body does not end soon: its head decides
my $probe = $t->conn($port);
$probe->send("GET /brk/x?hang=1&size=10 HTTP/1.1\r\nHost: localhost\r\n\r\n");
like($probe->read_until(qr/\r\n\r\n/, timeout => 5) // '', qr{^HTTP/1\.1 200 }, 'one request probes it: a 200 head');
ok($t->wait_for(sub { upstream('brk', 'solo')->{breaker} eq 'closed' }),
   'which closes the breaker while its body still streams');
is($t->request($port, GET => '/brk/y')->{status}, 200, 'so the next request is served meanwhile');
is(served('solo'), $served + 2, 'both reached solo');
$probe->close;
ok($t->wait_log(qr{breaker: upstream brk/solo is half-open}, from => $mark), 'half-open logged');
ok($t->wait_log(qr{breaker: upstream brk/solo: circuit closed}, from => $mark), 'closing logged');

# ---- a dead upstream its checks have not caught yet: retried, then taken out ------------------
$mark = $t->log_mark;
@got = parallel(1, 10, '/dead/x');
is(scalar(grep { $_ eq 'alive' } @got), 10, 'connect failures on gone are retried on alive: no failure');
$u = upstream('dead', 'gone');
is($u->{state}, 'unknown', 'gone: the checks (one a day) have not decided');
is($u->{failures}, 2, 'two connect failures (max_fails) reached it');
is($u->{breaker}, 'open', 'then its breaker opened');
@got = parallel(1, 10, '/dead/x');
is(scalar(grep { $_ eq 'alive' } @got), 10, 'all served by alive');
is(upstream('dead', 'gone')->{failures}, 2, 'and none tried gone while open');
ok($t->wait_for(sub { upstream('dead', 'gone')->{breaker} eq 'half-open' }, timeout => 15), 'half-open later');
@got = parallel(1, 10, '/dead/x');
is(scalar(grep { $_ eq 'alive' } @got), 10, 'the probe request fails over to alive too');
$u = upstream('dead', 'gone');
is($u->{failures}, 3, 'exactly one probe request tried gone');
is($u->{breaker}, 'open', 'and the breaker opened again');
ok($t->wait_log(qr{breaker: upstream dead/gone: circuit open again for 3000 ms, the probe request failed \(connect failed\)},
                from => $mark), 'logged');

# ---- all down: 503 with Retry-After -------------------------------------------------------
ok(wait_state('down', 'nothing', 'down'), 'down/nothing is DOWN');
$r = $t->request($port, GET => '/down/x');
is($r->{status}, 503, 'all upstreams down: 503');
is($r->{headers}{'retry-after'}, '4', 'Retry-After: rise (2) probes at health_interval (2s)');
is($t->request($port, GET => '/admin/health')->{json}{status}, 'degraded', '/admin/health: degraded');

# ---- all_down: try_anyway --------------------------------------------------------------------
ok($b{z1}->set_health(503), 'z1 fails its checks');
ok(wait_state('anyway', 'z1', 'down'), 'z1 is DOWN');
$r = $t->request($port, GET => '/anyway/x');
is($r->{status}, 200, 'try_anyway: the request is still tried');
is($r->{json}{name}, 'z1', 'on the least recently failed upstream');

# ---- a route naming a weight-0 upstream (the canary) ----------------------------------------
ok(wait_state('canary', 'v2', 'up'), 'canary/v2 (weight 0) is up');
my @c = map { $t->request($port, GET => "/canary/v2/$_") } 1 .. 10;
is(scalar(grep { ($_->{status} // 0) == 200 && $_->{json}{name} eq 'v2' } @c), 10,
   'the route naming v2 reaches it, weight 0 or not')
    or diag(explain [ map { "$_->{status} " . ($_->{headers}{'retry-after'} // '') } @c ]);
@got = parallel(2, 10, '/canary/x');
is(scalar(grep { $_ eq 'v1' } @got), 20, 'the round-robin never picks it');
is(upstream('canary', 'v2')->{usable}, JSON::PP::false, 'usable says: no share of the round-robin');
ok($b{v2}->set_health(503), 'v2 fails its checks');
ok(wait_state('canary', 'v2', 'down'), 'canary/v2 is DOWN');
ok(wait_state('canaryany', 'v2', 'down'), 'canaryany/v2 is DOWN');
$r = $t->request($port, GET => '/canary/v2/x');
is($r->{status}, 503, 'the route naming a down upstream: 503');
is($r->{json}{error}{message}, 'no healthy upstream', 'no healthy upstream');
is($r->{headers}{'retry-after'}, '4', "Retry-After: v2's rise (2) probes at its interval (2s), not v1's 1");
is($t->request($port, GET => '/canary/x')->{json}{name}, 'v1', 'the round-robin still serves');
$r = $t->request($port, GET => '/canaryany/v2/x');
is($r->{status}, 200, 'all_down: try_anyway: the named upstream is tried anyway');
is($r->{json}{name}, 'v2', 'on v2');
ok($b{v2}->set_health(200), 'v2 healthy again');

# ---- retries ------------------------------------------------------------------------------
# Each tenant's cursor starts at its first upstream: the first request
# meets the dead ones first.
$r = $t->request($port, GET => '/retry1/x');
is($r->{status}, 502, 'retries 1: two refused connections, then 502');
is($r->{json}{error}{message}, 'cannot connect to the upstream', 'saying why');
is(upstream('retry1', 'd1')->{failures} + upstream('retry1', 'd2')->{failures}, 2, 'both dead ones tried');
is(served('ok1'), 0, 'ok1 was not reached: one retry only');
is($t->request($port, GET => '/retry1/x')->{json}{name}, 'ok1', 'the next request reaches ok1');
$r = $t->request($port, GET => '/retry2/x');
is($r->{status}, 200, 'retries 2: the third attempt succeeds');
is($r->{json}{name}, 'ok2', 'on ok2');
$r = $t->request($port, GET => '/retry0/x');
is($r->{status}, 502, 'retries 0: a refused connection is not retried');
is(upstream('retry0', 'd1')->{failures}, 1, 'one attempt');
is($t->request($port, GET => '/retry0/x')->{json}{name}, 'ok0', 'the next request goes to ok0');

my @fair = map { $t->request($port, GET => '/fair2/x') } 1 .. 20;
is(scalar(grep { ($_->{status} // 0) == 200 } @fair), 20, '1:1 with one dead: every request served');
is(upstream('fair2', 'd1')->{failures}, 10, 'the dead one got its share of first attempts, 10 of 20, not all');
@fair = map { $t->request($port, GET => '/fair3/x') } 1 .. 30;
is(scalar(grep { ($_->{status} // 0) == 200 } @fair), 30, '1:1:1 with one dead: every request served');
is(upstream('fair3', 'd1')->{failures}, 10, 'the dead one got 10 of 30 first attempts, not 15');
is(served('f2') + served('f3'), 30, 'the live ones served all');
ok(abs(served('f2') - served('f3')) <= 1, 'evenly') or diag(served('f2') . ' ' . served('f3'));

# a POST whose body went out is never sent again
$r = $t->request($port, POST => '/post/x?reset=1', body => 'hello');
is($r->{status}, 502, 'POST answered by a reset: 502');
my @posts = grep { /^POST / } map { $b{$_}->requests } qw(s1 s2);
is(scalar @posts, 1, 'the POST reached exactly one upstream') or diag(explain \@posts);
# but one that could not even connect is
$r = $t->request($port, POST => '/postdead/x', body => 'hello');
is($r->{status}, 200, 'POST after a refused connection: retried');
is($r->{json}{name}, 's3', 'on s3');
is($r->{json}{body}, 'hello', 'with its body');
is(scalar(grep { /^POST / } $b{s3}->requests), 1, 'once');

is($t->stop >> 8, 0, 'clean stop');
done_testing;
