#!/usr/bin/perl
# Bodies: Content-Length and chunked uploads (re-chunked, trailers kept as
# trailers), chunked, length and close-delimited downloads, HTTP/1.0
# clients, HEAD, 204, 304, 1xx, 100-continue, pipelining, and large
# bodies streamed through a worker whose memory stays bounded.
use strict;
use warnings;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time);
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');

$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 1
  access_log: "off"
limits:
  max_body_bytes: 64MB
tenants:
  - name: demo
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
my $master = $t->start;

sub pattern { Keystone::Test::backend_body(@_) }
sub hdr { my ($j, $name) = @_; [ map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $j->{headers} } ] }

# ---- uploads ---------------------------------------------------------------------
my $body = pattern(100_000);
my $r = $t->request($port, POST => '/up', body => $body);
is($r->{json}{body_len}, 100_000, 'Content-Length upload: all of it');
ok($r->{json}{body} eq $body, 'byte for byte');
is_deeply(hdr($r->{json}, 'content-length'), [100000], 'one Content-Length upstream');
is_deeply(hdr($r->{json}, 'transfer-encoding'), [], 'and no Transfer-Encoding');

$r = $t->request($port, POST => '/up', body => 'chunked body', chunked => 1);
is($r->{json}{body}, 'chunked body', 'chunked upload decoded');
ok($r->{json}{chunked}, 'and sent chunked');
is_deeply(hdr($r->{json}, 'transfer-encoding'), ['chunked'], 'exactly one framing field');
is_deeply(hdr($r->{json}, 'content-length'), [], 'no Content-Length with it');

my $raw = $t->raw($port, "POST /up2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                       . "3;ext=1\r\nabc\r\n0A\r\n0123456789\r\n0\r\nX-T: v\r\nContent-Type: evil\r\n\r\n");
$r = Keystone::Test::parse_response($raw, eof => 1);
is($r->{json}{body}, 'abc0123456789', 'chunks with extensions and upper-case hex');
is_deeply($r->{json}{trailers}, [ [ 'X-T', 'v' ] ], 'trailers forwarded as trailers, without framing/content fields');
is_deeply(hdr($r->{json}, 'x-t'), [], 'and never merged into the header section');

$r = $t->request($port, POST => '/empty', body => '');
is($r->{json}{body_len}, 0, 'an empty body');
is_deeply(hdr($r->{json}, 'content-length'), [0], 'keeps its Content-Length: 0');

$raw = $t->raw($port, "POST /old HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello");
$r = Keystone::Test::parse_response($raw, eof => 1);
is($r->{json}{body}, 'hello', 'HTTP/1.0 upload');

# ---- downloads ---------------------------------------------------------------------
$r = $t->request($port, GET => '/d?chunked=1&size=10000&chunk=1000');
ok($r->{chunked}, 'chunked download stays chunked');
is($r->{body}, pattern(10000), 'and complete');
ok(!exists $r->{headers}{'content-length'}, 'without Content-Length');

$r = $t->request($port, GET => '/d?chunked=1&size=100&trailer=1');
is($r->{trailers}{'x-trailer'}, 'yes', 'response trailers passed on');
ok(!exists $r->{headers}{'x-trailer'}, 'as trailers');

my $c = $t->conn($port);
$r = $c->request(GET => '/d?close_delim=1&size=5000');
ok($r->{chunked}, 'a close-delimited body is re-chunked for an HTTP/1.1 client');
is($r->{body}, pattern(5000), 'complete');
$r = $c->request(GET => '/after');
is($r->{status}, 200, 'and the client connection stays usable');
$c->close;

my $how;
($raw, $how) = $t->raw($port, "GET /d?chunked=1&size=3000 HTTP/1.0\r\n\r\n");
$r = Keystone::Test::parse_response($raw, eof => 1);
ok(!$r->{chunked} && !exists $r->{headers}{'transfer-encoding'}, 'HTTP/1.0: chunked becomes close-delimited');
is($r->{body}, pattern(3000), 'complete');
is($how, 'eof', 'ended by the close');
is($r->{headers}{connection}, 'close', 'and says so');

($raw) = $t->raw($port, "GET /d?close_delim=1&size=300 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
$r = Keystone::Test::parse_response($raw, eof => 1);
is($r->{body}, pattern(300), 'HTTP/1.0 keep-alive client, close-delimited body: complete');
is($r->{headers}{connection}, 'close', 'and the connection closed');

# ---- no body: HEAD, 204, 304, 1xx -------------------------------------------------------
$c = $t->conn($port);
$c->send("HEAD /h?size=10 HTTP/1.1\r\nHost: x\r\n\r\n");
$r = $c->response(head => 1);
is($r->{headers}{'content-length'}, 10, 'HEAD: the length of the GET');
$r = $c->request(GET => '/h2');
is($r->{json}{target}, '/h2', 'and no body bytes before the next response');
$c->send("HEAD /h?chunked=1&size=10 HTTP/1.1\r\nHost: x\r\n\r\n");
$r = $c->response(head => 1);
is($r->{headers}{'transfer-encoding'}, 'chunked', 'HEAD of a chunked resource');
$r = $c->request(GET => '/h3');
is($r->{json}{target}, '/h3', 'again nothing left over');
$c->close;

$raw = $t->raw($port, "GET /s?status=204 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-ID: r204\r\n\r\n");
like($raw, qr{\AHTTP/1\.1 204 No Content\r\nX-Backend: app\r\nDate: [^\r\n]+ GMT\r\nX-Request-ID: r204\r\nConnection: close\r\n\r\n\z},
     '204: exact bytes, no body, no framing');
$r = $t->request($port, GET => '/s?status=304&header=Content-Length:42');
is($r->{status}, 304, 'a 304 passed on');
is($r->{body}, '', 'without a body');

$r = $t->request($port, GET => '/s?status=103&header=Link:%3C/a.css%3E');
is($r->{status}, 200, '1xx: then the final response');
is(scalar @{ $r->{interim} }, 1, 'one interim response');
is($r->{interim}[0]{status}, 103, 'the 103 passed on');
($raw) = $t->raw($port, "GET /s?status=103 HTTP/1.0\r\n\r\n");
like($raw, qr{^HTTP/1\.1 200 }, 'an HTTP/1.0 client gets no 1xx');

# ---- 100-continue ---------------------------------------------------------------------------
$c = $t->conn($port);
$c->send("POST /cont HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
my $cont = $c->read_until(qr/\r\n\r\n/, timeout => 3);
is($cont, "HTTP/1.1 100 Continue\r\n\r\n", 'Expect: 100-continue answered by keystoned');
$c->send('hello');
$r = $c->response;
is($r->{json}{body}, 'hello', 'then the body goes through');
is_deeply(hdr($r->{json}, 'expect'), [], 'Expect is not forwarded');
$c->close;

$c = $t->conn($port);
$c->send("POST /cont HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 999999999\r\n\r\n");
$r = $c->response;
is($r->{status}, 413, 'too large for max_body_bytes: 413 before any 100');
is(scalar @{ $r->{interim} }, 0, 'no 100 was sent');
ok($c->closed_by_peer(timeout => 2), 'and the connection is closed (the body was never read)');
$c->close;

# ---- pipelining with bodies ---------------------------------------------------------------------
$c = $t->conn($port);
$c->send("POST /p1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
       . "GET /p2 HTTP/1.1\r\nHost: x\r\n\r\n"
       . "POST /p3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"
       . "GET /p4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
my @p = map { $c->response } 1 .. 4;
is_deeply([ map { $_->{json}{target} } @p ], [qw(/p1 /p2 /p3 /p4)], 'pipelined requests in order');
is_deeply([ map { $_->{json}{body} } @p ], [ 'abc', '', 'de', '' ], 'each with its own body');
ok($c->closed_by_peer(timeout => 2), 'closed after Connection: close');
$c->close;

# ---- large bodies, bounded memory ------------------------------------------------------------------
my ($worker) = $t->processes_of($master);
sub hwm {
    open my $fh, '<', "/proc/$worker/status" or return 0;
    my ($kb) = join('', <$fh>) =~ /^VmHWM:\s+(\d+) kB/m;
    return $kb;
}
my $before = hwm();
ok($before > 0, "the worker's peak memory is readable ($before kB)");

my $size = 24 * 1024 * 1024;
my $big = pattern($size);
($raw) = $t->raw($port, "POST /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: $size\r\n\r\n$big",
                 timeout => 30);
like($raw, qr/"body_len":$size,/, '24MB upload streamed through');
($raw) = $t->raw($port, "POST /bigc HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
                      . join('', map { sprintf("%x\r\n%s\r\n", 65536, substr($big, $_ * 65536, 65536)) } 0 .. 127)
                      . "0\r\n\r\n", timeout => 30);
like($raw, qr/"body_len":8388608,/, '8MB chunked upload streamed through');
($raw) = $t->raw($port, "GET /bigd?size=$size HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout => 30);
my ($head, $got) = split /\r\n\r\n/, $raw, 2;
is(length($got), $size, '24MB download streamed through');
ok($got eq $big, 'byte for byte');
($raw) = $t->raw($port, "GET /bigd?size=$size&chunked=1&chunk=65536 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                 timeout => 30);
$r = Keystone::Test::parse_response($raw, eof => 1);
is(length($r->{body}), $size, '24MB chunked download streamed through');
my $after = hwm();
ok($after - $before < 4096, "the worker's peak memory grew by less than 4MB ($before -> $after kB)");

# An upstream that refuses an upload at once and then reads none of it
# (nor closes): its answer is passed on while the upload is still under
# way, not after the upstream's idle_timeout (60 s).  The client writes
# as the sockets let it and reads what comes.
sub early_refusal {
    my ($path, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") or die "connect: $!";
    $s->blocking(0);
    my $len = 32 * 1024 * 1024;
    my $out = "POST $path HTTP/1.1\r\nHost: x\r\n"
            . ($o{chunked} ? "Transfer-Encoding: chunked" : "Content-Length: $len") . "\r\n\r\n";
    my ($sent, $in, $t0) = (0, '', time);
    my $chunk = 'u' x 65536;
    my $sel = IO::Select->new($s);
    while (time - $t0 < 30 && final_part($in) !~ /\r\n\r\n.{5}/s) {
        if ($sent < $len && length($out) < 65536) {
            $out .= $o{chunked} ? sprintf("%x\r\n%s\r\n", 65536, $chunk) : $chunk;
            $sent += 65536;
        }
        my ($r, $w) = IO::Select->select($sel, length $out ? $sel : undef, undef, 0.2);
        if ($w && @$w) {
            my $n = syswrite($s, $out);
            substr($out, 0, $n, '') if $n;
        }
        if ($r && @$r) {
            my $n = sysread($s, $in, 65536, length $in);
            last unless $n;
        }
    }
    return ($in, time - $t0, $sent);
}
# what came after the interim heads
sub final_part { my ($in) = @_; $in =~ s{^(?:HTTP/1\.1 1\d\d [^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n)+}{}; $in }
for my $chunked (0, 1) {
    my $what = $chunked ? 'a chunked upload' : 'an upload';
    my ($in, $took, $sent) = early_refusal('/refuse?early=40000', chunked => $chunked);
    like($in, qr{^HTTP/1\.1 403 Forbidden\r\n.*\r\n\r\nearly}s, "$what refused at once by the upstream: its 403");
    ok($took < 15, sprintf("passed on while the upload went on, not at idle_timeout (%.1fs, %d MB sent)",
                           $took, $sent >> 20));
    like($in, qr{\r\nConnection: close\r\n}i, 'and the connection is to close');

    # the same after an unasked 100 (Continue) and part of the upload:
    # the final answer after the interim one is still watched for, and
    # both are passed on, as 1xx heads are
    ($in, $took, $sent) = early_refusal('/refuse?early=40000&early_continue=200000', chunked => $chunked);
    like($in, qr{^HTTP/1\.1 100 Continue\r\n\r\nHTTP/1\.1 403 Forbidden\r\n.*\r\n\r\nearly}s,
         "$what refused by the upstream after its unasked 100: the 100, then the 403");
    ok($took < 15, sprintf("the 403 passed on while the upload went on, not at idle_timeout (%.1fs, %d MB sent)",
                           $took, $sent >> 20));
    like(final_part($in), qr{\r\nConnection: close\r\n}i, 'and the connection is to close');

    # the 100 in three segments, 50 ms apart: the part already there is
    # taken and the watch goes on until the head is whole, and the upload
    # with it (the upstream answers after 20 MB of it)
    ($in, $took, $sent) = early_refusal('/refuse?early=40000&early_continue=20000000&early_split=50',
                                        chunked => $chunked);
    like($in, qr{^HTTP/1\.1 100 Continue\r\n\r\nHTTP/1\.1 403 Forbidden\r\n.*\r\n\r\nearly}s,
         "$what refused after an unasked 100 sent in pieces: the 100, then the 403");
    ok($took < 15, sprintf("the 403 passed on while the upload went on (%.1fs, %d MB sent)",
                           $took, $sent >> 20));

    # a 100 with bare LF line ends is no HTTP/1.1 head: the upload ends
    # there with a 502, not at idle_timeout
    ($in, $took, $sent) = early_refusal('/refuse?early=40000&early_continue=20000000&early_lf=1',
                                        chunked => $chunked);
    like($in, qr{^HTTP/1\.1 502 }, "$what answered by a malformed 100: a 502");
    ok($took < 15, sprintf("at once, while the upload went on (%.1fs, %d MB sent)", $took, $sent >> 20));
}

# The same while the *client* is slow: what it sent so far went up, the
# upstream refused it, and the worker is waiting for more of the upload.
# The refusal is passed on then, not a 408 for the stalled upload
# (min_body_rate) nor, without that, a wait of read_body_timeout.
for my $chunked (0, 1) {
    my $what = $chunked ? 'a chunked upload' : 'an upload';
    my $head = "POST /refuse?early=40000 HTTP/1.1\r\nHost: x\r\n"
             . ($chunked ? "Transfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n"
                         : "Content-Length: 100000\r\n\r\n0123456789");
    my ($in, $how) = $t->raw($port, $head, one => 1, timeout => 10);
    like($in, qr{^HTTP/1\.1 403 Forbidden\r\n.*\r\n\r\nearly}s,
         "$what the client stalls in: the upstream's early 403 is passed on") or diag("ended: $how");
    like($in, qr{\r\nConnection: close\r\n}i, 'and the connection is to close');

    (my $after_100 = $head) =~ s{early=40000}{early=40000&early_continue=0};
    ($in, $how) = $t->raw($port, $after_100, one => 1, timeout => 10);
    like($in, qr{^HTTP/1\.1 100 Continue\r\n\r\nHTTP/1\.1 403 Forbidden\r\n.*\r\n\r\nearly}s,
         "$what the client stalls in, after an unasked 100: the 100, then the 403") or diag("ended: $how");
    like(final_part($in), qr{\r\nConnection: close\r\n}i, 'and the connection is to close');
}

done_testing;
