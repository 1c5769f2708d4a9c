#!/usr/bin/perl
# Upstream trouble: a refused connection moves on to the next upstream
# (retries), 502 for refused/reset/malformed/oversized answers, 503 with
# and without Retry-After, 5xx passed through, a reset pooled connection
# retried once for an idempotent request only, as is one an upstream
# resets without an answer (on the next upstream), every outcome counted.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $dead = $t->free_port;
my $app = $t->backend(name => 'app');
my $live = $t->backend(name => 'live');
my $state = $t->dir . '/keystoned.state';

$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 1
  access_log: "off"
limits:
  max_response_header_bytes: 8KB
health_defaults:
  interval: 1h
  max_fails: 0
tenants:
  - name: pair
    domains: [pair.test]
    retries: 1
    upstreams:
      - { name: dead, url: "http://127.0.0.1:$dead" }
      - { name: live, url: "http://@{[ $live->addr ]}" }
  - name: solo
    domains: [dead.test]
    retries: 0
    upstreams:
      - { name: dead, url: "http://127.0.0.1:$dead" }
  - name: app
    domains: [app.test]
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
  - name: twin
    domains: [twin.test]
    retries: 1
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
      - { name: live, url: "http://@{[ $live->addr ]}" }
  - name: empty
    domains: [empty.test]
  - name: drained
    domains: [drained.test]
    upstreams:
      - { name: zero, url: "http://@{[ $app->addr ]}", weight: 0 }
EOF
$t->start;

sub status_of_tenant {
    my ($name) = @_;
    my ($code, $out) = $t->ctl('-s', $state, 'status', '-j');
    my $s = decode_json($out);
    my ($tn) = grep { $_->{name} eq $name } @{ $s->{tenants} };
    return $tn;
}
sub get { my ($host, $path, %o) = @_; $t->request($port, $o{method} // 'GET', $path, host => $host, %o) }

# ---- the next upstream after a refused connection --------------------------------------------
my @s = map { get('pair.test', "/p$_")->{status} } 1 .. 6;
is_deeply(\@s, [ (200) x 6 ], 'with retries: 1 every request is answered although one upstream refuses');
my $tn = status_of_tenant('pair');
my %u = map { $_->{name} => $_ } @{ $tn->{upstreams} };
is($u{dead}{failures}, 3, 'the refusing upstream was tried at each of its turns, 3 of 6 (a retry takes none), and failed');
is($u{live}{requests}, 6, 'the other served them all');
is($u{live}{failures}, 0, 'without failures');
is($tn->{responses_5xx}, 0, 'no 5xx for the tenant');

my $r = get('dead.test', '/x');
is($r->{status}, 502, 'refused with nowhere else to go: 502');
is($r->{json}{error}{message}, 'cannot connect to the upstream', 'says why');
is($r->{json}{error}{request_id}, $r->{headers}{'x-request-id'}, 'with the request id');

# ---- bad answers -----------------------------------------------------------------------------------
$r = get('app.test', '/r?reset=1');
is($r->{status}, 502, 'reset before a response: 502');
$r = get('app.test', '/m?malformed=1');
is($r->{status}, 502, 'a malformed response: 502');
like($r->{json}{error}{message}, qr/invalid response head/, 'says why');
$r = get('app.test', '/b?bigheader=9000');
is($r->{status}, 502, 'a head over max_response_header_bytes: 502');
like($r->{json}{error}{message}, qr/too large/, 'says why');
$r = get('app.test', '/b?bigheader=4000');
is(length($r->{headers}{'x-big'}), 4000, 'a head under it passes');
$r = get('app.test', '/te?header=Transfer-Encoding:gzip');
is($r->{status}, 502, 'Content-Length with Transfer-Encoding from the upstream: 502');
$r = get('app.test', '/cl?header=Content-Length:5');
is($r->{status}, 502, 'two Content-Length from the upstream: 502');
$r = get('app.test', '/ws?header=Connection:upgrade&status=101');
is($r->{status}, 502, 'a 101 nobody asked for: 502');

my ($raw, $how) = $t->raw($port, "GET /cm?close_mid=1&size=1000 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
my ($head, $body) = split /\r\n\r\n/, $raw, 2;
like($head, qr{^HTTP/1\.1 200 .*Content-Length: 1000\r\n}s, 'closed in the middle of the body: the head went out');
ok(length($body) < 1000, 'the body is short');
is($how, 'eof', 'and the client connection is closed, not kept');

$r = get('app.test', '/s?status=503');
is($r->{status}, 503, "an upstream's 5xx is passed on");
is($r->{json}{name}, 'app', 'with its own body');

# ---- no upstream -----------------------------------------------------------------------------------------
$r = get('empty.test', '/');
is($r->{status}, 503, 'a tenant without upstreams: 503');
is($r->{json}{error}{message}, 'no upstream available', 'says why');
ok(!exists $r->{headers}{'retry-after'}, 'no Retry-After: nothing will come back');
$r = get('drained.test', '/');
is($r->{status}, 503, 'every upstream drained: 503');
is($r->{json}{error}{message}, 'no healthy upstream', 'says why');
like($r->{headers}{'retry-after'} // '', qr/^[1-9]\d*$/, 'with Retry-After');

# ---- a reset pooled connection ------------------------------------------------------------------------------
my $n = sub { my $p = shift; scalar grep { index($_, $p) >= 0 } $app->requests };
get('app.test', '/warm');                       # leaves a pooled connection
get('app.test', '/again?reset=1');
is($n->('/again?reset=1'), 2, 'GET reset on a pooled connection: tried once more on a fresh one');
get('app.test', '/warm');
get('app.test', '/post?reset=1', method => 'POST', body => 'x');
is($n->('/post?reset=1'), 1, 'POST: never sent twice');

# ---- an upstream that resets with no answer: the next one, for an idempotent request ----
@s = map { get('twin.test', "/t$_?reset_if=app")->{status} } 1 .. 4;
is_deeply(\@s, [ (200) x 4 ], 'GETs the one upstream resets are answered by the other');
ok(scalar(grep { m{^GET /t\d\?reset_if=app } } $app->requests) >= 2, "the resetting one had its turns (and the retries moved the cursor on)");
@s = sort map { get('twin.test', "/u$_?reset_if=app", method => 'POST', body => 'x')->{status} } 1 .. 2;
is_deeply(\@s, [ 200, 502 ], 'a POST it resets is not sent again: 502');
is(scalar(grep { m{^POST /u\d\?reset_if=app } } $live->requests), 1, 'the other upstream had only its own POST');

# ---- counted ---------------------------------------------------------------------------------------------------
$tn = status_of_tenant('app');
is($tn->{requests}, 13, 'per-tenant requests');
is($tn->{responses_5xx}, 9, 'per-tenant 5xx: the 502s and the passed-on 503');
is($tn->{responses_4xx}, 0, 'per-tenant 4xx');
%u = map { $_->{name} => $_ } @{ $tn->{upstreams} };
is($u{app}{failures}, 10, 'the upstream failures: resets, bad answers, the cut body, the 503');

done_testing;
