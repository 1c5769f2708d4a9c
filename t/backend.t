#!/usr/bin/perl
# t/backend.t: the programmable test upstream (t/backend) and the harness
# (t/lib/Keystone/Test.pm) themselves; no keystoned needed.

use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);
use Keystone::Test;

my $t = Keystone::Test->new;
plan skip_all => 'backend not built: ' . $t->bin('backend') unless -x $t->bin('backend');

my $b    = $t->backend(name => 'app-1');
my $port = $b->port;
ok($port > 0, 'backend listening');

sub pattern { Keystone::Test::backend_body(@_) }

# ---- echo -------------------------------------------------------------------

my $r = $t->request($port, GET => '/echo?x=1', headers => [ 'X-One' => 'a', 'x-two' => 'b' ]);
is($r->{status}, 200, 'echo: 200');
is($r->{headers}{'content-type'}, 'application/json', 'echo: JSON');
is($r->{headers}{'x-backend'}, 'app-1', 'echo: X-Backend');
is($r->{headers}{'content-length'}, length $r->{body}, 'echo: Content-Length');
my $j = $r->{json};
is($j->{name}, 'app-1', 'echo: name');
is($j->{method}, 'GET', 'echo: method');
is($j->{target}, '/echo?x=1', 'echo: raw target');
is($j->{version}, 'HTTP/1.1', 'echo: version');
is_deeply($j->{headers},
          [ [ Host => 'localhost' ], [ 'X-One' => 'a' ], [ 'x-two' => 'b' ],
            [ Connection => 'close' ] ],
          'echo: headers in order, as received');
is($j->{body}, '', 'echo: empty body');
is($j->{body_len}, 0, 'echo: body_len 0');
ok(!$j->{chunked}, 'echo: not chunked');
is($j->{conn_requests}, 1, 'echo: first request of its connection');

$r = $t->request($port, POST => '/post', body => "caf\xc3\xa9");
is($r->{json}{body}, "caf\x{e9}", 'echo: UTF-8 body');
is($r->{json}{body_len}, 5, 'echo: body_len counts bytes');

$r = $t->request($port, POST => '/bin', body => "\xff\x00\x01");
is($r->{json}{body_b64}, '/wAB', 'echo: binary body in body_b64');
ok(!exists $r->{json}{body}, 'echo: no body key for binary');

# ---- keep-alive and pipelining -------------------------------------------------

my $c = $t->conn($port);
my $r1 = $c->request(GET => '/a');
my $r2 = $c->request(GET => '/b');
is($r1->{status}, 200, 'keep-alive: first');
is($r2->{status}, 200, 'keep-alive: second');
is($r1->{json}{conn_id}, $r2->{json}{conn_id}, 'keep-alive: same conn_id');
is_deeply([ $r1->{json}{conn_requests}, $r2->{json}{conn_requests} ], [ 1, 2 ],
          'keep-alive: conn_requests counts');
ok(!$c->closed_by_peer(timeout => 0.2), 'keep-alive: connection stays open');
$c->close;

$c = $t->conn($port);
$c->send("GET /p1 HTTP/1.1\r\nHost: x\r\n\r\n"
       . "POST /p2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
       . "GET /p3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
my @p = map { $c->response } 1 .. 3;
is_deeply([ map { $_->{json}{target} } @p ], [ '/p1', '/p2', '/p3' ], 'pipelined: in order');
is($p[1]{json}{body}, 'abc', 'pipelined: body of the middle request');
is($p[2]{headers}{connection}, 'close', 'pipelined: Connection: close answered');
ok($c->closed_by_peer(timeout => 2), 'pipelined: closed after Connection: close');
$c->close;

# ---- chunked upload -------------------------------------------------------------

$r = $t->request($port, POST => '/up', body => 'chunked body', chunked => 1);
is($r->{json}{body}, 'chunked body', 'chunked upload: decoded');
ok($r->{json}{chunked}, 'chunked upload: flagged');
is($r->{json}{body_len}, 12, 'chunked upload: body_len');

my $raw = $t->raw($port, "POST /up2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                      . "Connection: close\r\n\r\n"
                      . "3;ext=1\r\nabc\r\n0A\r\n0123456789\r\n0\r\nX-T: v\r\n\r\n");
$r = Keystone::Test::parse_response($raw);
is($r->{json}{body}, 'abc0123456789', 'chunked upload: extensions, upper-case hex');
is_deeply($r->{json}{trailers}, [ [ 'X-T', 'v' ] ], 'chunked upload: trailers reported');

$raw = $t->raw($port, "POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
like($raw, qr{^HTTP/1\.1 400 Bad Request\r\n}, 'chunked upload: bad size is 400');

# ---- status, HEAD, HTTP/1.0 -------------------------------------------------------

$r = $t->request($port, GET => '/s?status=404');
is($r->{status}, 404, 'status: 404');
is($r->{reason}, 'Not Found', 'status: reason');
is($r->{json}{target}, '/s?status=404', 'status: JSON body kept');

$raw = $t->raw($port, "GET /s?status=204 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
is($raw, "HTTP/1.1 204 No Content\r\nX-Backend: app-1\r\nConnection: close\r\n\r\n",
   'status: 204 exact bytes, no body');

$r = $t->request($port, GET => '/s?status=103');
is($r->{status}, 200, 'status: 1xx then the final 200');
is($r->{interim}[0]{status}, 103, 'status: 103 sent as interim');

$raw = $t->raw($port, "HEAD /h?size=10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
is($raw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n"
       . "X-Backend: app-1\r\nConnection: close\r\n\r\n", 'HEAD: head only');

my ($got, $how) = $t->raw($port, "GET /old HTTP/1.0\r\n\r\n", timeout => 3);
like($got, qr{^HTTP/1\.1 200 OK\r\n.*Connection: close\r\n}s, 'HTTP/1.0: Connection: close');
is($how, 'eof', 'HTTP/1.0: closed after the response');

$c = $t->conn($port);
$c->send("GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
$r = $c->response;
is($r->{headers}{connection}, 'keep-alive', 'HTTP/1.0 keep-alive: answered');
$r2 = $c->request(GET => '/again', version => 'HTTP/1.0', headers => [ Connection => 'keep-alive' ]);
is($r2->{json}{conn_requests}, 2, 'HTTP/1.0 keep-alive: connection reused');
$c->close;

# ---- delays ---------------------------------------------------------------------

my $t0 = time;
$r = $t->request($port, GET => '/d?delay=300');
ok(time - $t0 >= 0.29, 'delay: waited before answering');
is($r->{status}, 200, 'delay: then 200');

$c = $t->conn($port);
$c->send("GET /bd?body_delay=500&size=5 HTTP/1.1\r\nHost: x\r\n\r\n");
my $head = $c->read_until(qr/\r\n\r\n/, timeout => 5);
like($head, qr/Content-Length: 5\r\n/, 'body_delay: head first');
is($c->read_raw(timeout => 0.1), '', 'body_delay: body not yet');
is($c->read_bytes(5), 'abcde', 'body_delay: body later');
$c->close;

# ---- size, chunked and close-delimited downloads -----------------------------------

$r = $t->request($port, GET => '/big?size=100');
is($r->{headers}{'content-length'}, 100, 'size: Content-Length');
is($r->{body}, pattern(100), 'size: pattern body');

$raw = $t->raw($port, "GET /c?size=40&chunked=1&chunk=30&trailer=1 HTTP/1.1\r\nHost: x\r\n"
                    . "Connection: close\r\n\r\n");
is($raw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
       . "X-Backend: app-1\r\nConnection: close\r\n\r\n"
       . "1e\r\n" . pattern(30) . "\r\na\r\n" . substr(pattern(40), 30) . "\r\n"
       . "0\r\nX-Trailer: yes\r\n\r\n", 'chunked download: exact bytes');

$r = $t->request($port, GET => '/c?size=100000&chunked=1');
ok($r->{chunked}, 'chunked download: chunked');
is(length $r->{body}, 100000, 'chunked download: length');
is($r->{body}, pattern(100000), 'chunked download: content');

($got, $how) = $t->raw($port, "GET /cd?size=50&close_delim=1 HTTP/1.1\r\nHost: x\r\n\r\n");
unlike($got, qr/Content-Length|Transfer-Encoding/, 'close_delim: no framing header');
is($how, 'eof', 'close_delim: closed');
$r = Keystone::Test::parse_response($got, eof => 1);
is($r->{body}, pattern(50), 'close_delim: body up to the close');

# ---- failures: close_mid, reset, hang, malformed ------------------------------------

($got, $how) = $t->raw($port, "GET /m?size=1000&close_mid=1 HTTP/1.1\r\nHost: x\r\n\r\n");
my ($h, $body) = split /\r\n\r\n/, $got, 2;
like($h, qr/Content-Length: 1000/, 'close_mid: full Content-Length announced');
is($body, pattern(500), 'close_mid: half the body');
is($how, 'eof', 'close_mid: then closed');

($got, $how) = $t->raw($port, "POST /r?reset=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi");
is($got, '', 'reset: nothing sent');
is($how, 'reset', 'reset: connection reset');

($got, $how) = $t->raw($port, "GET /hang?hang=1&size=10 HTTP/1.1\r\nHost: x\r\n\r\n", timeout => 0.5);
like($got, qr/^HTTP\/1\.1 200 OK\r\n.*Content-Length: 10\r\n.*\r\n\r\n\z/s, 'hang: head only');
is($how, 'timeout', 'hang: then nothing');

($got, $how) = $t->raw($port, "GET /hh?hang_head=1 HTTP/1.1\r\nHost: x\r\n\r\n", timeout => 0.3);
is($got, '', 'hang_head: nothing');
is($how, 'timeout', 'hang_head: connection kept open');

($got, $how) = $t->raw($port, "GET /mf?malformed=1 HTTP/1.1\r\nHost: x\r\n\r\n");
unlike($got, qr{^HTTP/}, 'malformed: no status line');
$r = Keystone::Test::parse_response($got, eof => 1);
is($r->{error}, 'malformed', 'malformed: the parser says so');

# ---- response headers -----------------------------------------------------------------

$r = $t->request($port, GET => '/hd?header=X-A%3A%201&header=X-B:two+words&bigheader=5000');
is($r->{headers}{'x-a'}, '1', 'header=: URL-decoded');
is($r->{headers}{'x-b'}, 'two words', 'header=: second one');
is($r->{headers}{'x-big'}, 'x' x 5000, 'bigheader: N bytes');

$c = $t->conn($port);
$r = $c->request(GET => '/cl?close=1');
is($r->{headers}{connection}, 'close', 'close=1: Connection: close');
ok($c->closed_by_peer(timeout => 2), 'close=1: closed');
$c->close;

# ---- 100-continue -----------------------------------------------------------------------

$c = $t->conn($port);
$c->send("POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
is($c->read_until(qr/\r\n\r\n/, timeout => 5), "HTTP/1.1 100 Continue\r\n\r\n",
   '100-continue: sent before the body');
$c->send('12345');
$r = $c->response;
is($r->{json}{body}, '12345', '100-continue: body read after');
$c->send("POST /e?no_continue=1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
       . "Content-Length: 2\r\n\r\n");
is($c->read_raw(timeout => 0.2), '', 'no_continue: no 100');
$c->send('ok');
$r = $c->response;
is_deeply([ $r->{status}, $r->{interim} ], [ 200, [] ], 'no_continue: final answer only');
$c->close;

# ---- WebSocket ---------------------------------------------------------------------------

$c = $t->conn($port);
$c->send("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
$head = $c->read_until(qr/\r\n\r\n/);
like($head, qr{^HTTP/1\.1 101 Switching Protocols\r\n}, 'ws: 101');
like($head, qr{\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n}, 'ws: accept key (RFC 6455 example)');
my $mask = "\x37\xfa\x21\x3d";
my $msg  = 'Hello';
$c->send("\x81\x85" . $mask . ($msg ^ substr($mask x 2, 0, 5)));
is($c->read_bytes(7), "\x81\x05Hello", 'ws: text frame echoed unmasked');
$c->send("\x89\x80" . $mask);
is($c->read_bytes(2), "\x8a\x00", 'ws: ping answered with pong');
$c->send("\x88\x82" . $mask . ("\x03\xe8" ^ substr($mask, 0, 2)));
is($c->read_bytes(4), "\x88\x02\x03\xe8", 'ws: close echoed');
ok($c->closed_by_peer(timeout => 2), 'ws: connection closed');
$c->close;

# ---- health --------------------------------------------------------------------------------

$r = $t->request($port, GET => '/health');
is_deeply([ $r->{status}, $r->{body} ], [ 200, 'ok' ], 'health: 200 ok');
ok($b->set_health(503), 'health: set to 503');
$r = $t->request($port, GET => '/api/health');
is($r->{status}, 503, 'health: any path ending in /health follows');
is($t->request($port, GET => '/__health')->{json}{health}, 503, 'health: GET /__health');
ok($b->set_health(200), 'health: back to 200');
is($t->request($port, GET => '/health')->{status}, 200, 'health: 200 again');
is($t->request($port, POST => '/__health', body => 'nope')->{status}, 400, 'health: bad value refused');

my $sick = $t->backend(name => 'sick', health => 500);
is($t->request($sick->port, GET => '/health')->{status}, 500, 'health: -H 500');

# ---- stats and the request log ----------------------------------------------------------------

# A closed connection leaves "open" a moment later: poll for the numbers.
sub stats_are {
    my ($be, $want, $name) = @_;
    my $last;
    my $ok = $t->wait_for(sub {
        $last = $be->stats;
        return !grep { ($last->{$_} // -1) != $want->{$_} } keys %$want;
    });
    ok($ok, $name) or diag explain $last;
}

my $s = $t->backend(name => 'stats');
is_deeply($s->stats, { connections => 1, requests => 0, open => 1 }, 'stats: fresh');
$c = $t->conn($s->port);
$c->request(GET => '/one');
$c->request(GET => '/two');
$t->request($s->port, GET => '/three');
stats_are($s, { requests => 3, open => 2 },
          'stats: requests (control paths excluded), open');
is($s->stats->{requests}, 3, 'stats: asking does not count');
$c->close;
stats_are($s, { open => 1 }, 'stats: open drops when a client leaves');
cmp_ok($s->stats->{connections}, '>=', 7, 'stats: connections counts every accept');
is_deeply([ $s->requests ], [ 'GET /one HTTP/1.1', 'GET /two HTTP/1.1', 'GET /three HTTP/1.1' ],
          'request log: request lines, control paths left out');

my $quiet = $t->backend(name => 'quiet');
$quiet->stats;
is_deeply([ $quiet->requests ], [], 'request log: empty when the backend saw nothing');

# ---- robustness ---------------------------------------------------------------------------------

$raw = $t->raw($port, "\x00\x01garbage\r\n\r\n");
like($raw, qr{^HTTP/1\.1 400 }, 'garbage: 400');
$raw = $t->raw($port, "GET / HTTP/1.1\r\nNoColonHere\r\n\r\n");
like($raw, qr{^HTTP/1\.1 400 }, 'header without colon: 400');
$raw = $t->raw($port, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
like($raw, qr{^HTTP/1\.1 400 }, 'conflicting Content-Length: 400');
$raw = $t->raw($port, "GET / HTTP/2.0\r\n\r\n");
like($raw, qr{^HTTP/1\.1 505 }, 'HTTP/2.0 request line: 505');
$raw = $t->raw($port, "GET /" . ('a' x (1100 * 1024)) . " HTTP/1.1\r\n\r\n", timeout => 10);
like(substr($raw, 0, 200), qr{^HTTP/1\.1 431 }, 'huge head: 431');
($got, $how) = $t->raw($port, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
                       shutdown => 1);
is_deeply([ $got, $how ], [ '', 'eof' ], 'truncated body: closed without answer');
is($t->request($port, GET => '/still')->{status}, 200, 'still serving after garbage');

# ---- stopping -------------------------------------------------------------------------------------

$c = $t->conn($port);
$c->send("GET /h?hang=1 HTTP/1.1\r\nHost: x\r\n\r\n");
$c->read_until(qr/\r\n\r\n/);
is($b->stop, 0, 'stop: TERM exits 0 even with a hanging connection');
ok(!$b->alive, 'stop: gone');
ok($c->closed_by_peer(timeout => 2), 'stop: its connections are closed');
$c->close;

my $k = $t->backend(name => 'killed');
ok($k->kill('KILL'), 'kill: signal sent');
ok(defined $k->wait(timeout => 5), 'kill: reaped');

($got, $how) = $t->raw($port, "GET / HTTP/1.1\r\n\r\n");
is($how, 'connect', 'raw: nothing listening');
is($t->request($port, GET => '/')->{error}, 'connect', 'request: nothing listening');

my $again = $t->backend(name => 'app-1', port => $port);
is($again->port, $port, 'restart on the same port');
is($t->request($port, GET => '/')->{json}{conn_id}, 1, 'restart: a new process');

ok(my $p2 = $t->free_port, 'free_port');
isnt($p2, $t->free_port, 'free_port: never twice');
my ($code, $out, $err) = $t->run([ $t->bin('backend'), '-x' ]);
is($code, 2, 'run: exit code of a bad invocation');
like($err, qr/^usage: backend/m, 'run: stderr captured');

done_testing;
