#!/usr/bin/perl
# Every limit and timeout with its status code: max_request_line (414),
# max_header_bytes and max_headers (431), max_body_bytes (413, from the
# Content-Length before reading, or while a chunked body streams),
# read_header_timeout, read_body_timeout and min_body_rate (408),
# connect_timeout and response_timeout (504), the upstream idle_timeout
# while a response streams (the connection is cut).
use strict;
use warnings;
use Test::More;
use Socket qw(PF_INET SOCK_STREAM SOL_SOCKET SO_REUSEADDR pack_sockaddr_in inet_aton unpack_sockaddr_in);
use Time::HiRes qw(time);
use IO::Socket::INET;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');

# A listener that never accepts, its queue full: connects to it hang.
socket(my $hole, PF_INET, SOCK_STREAM, 0) or die "socket: $!";
bind($hole, pack_sockaddr_in(0, inet_aton('127.0.0.1'))) or die "bind: $!";
listen($hole, 0) or die "listen: $!";
my ($hole_port) = unpack_sockaddr_in(getsockname($hole));
my @fill;
for (1 .. 3) {
    socket(my $s, PF_INET, SOCK_STREAM, 0) or die;
    my $flags = 0;
    IO::Handle::blocking($s, 0);
    connect($s, pack_sockaddr_in($hole_port, inet_aton('127.0.0.1')));
    push @fill, $s;
}

$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 1
  read_header_timeout: 400ms
  read_body_timeout: 400ms
  access_log: "off"
limits:
  max_request_line: 512
  max_header_bytes: 1KB
  max_headers: 6
  max_body_bytes: 1KB
tenants:
  - name: demo
    domains: [localhost]
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}", response_timeout: 400ms, idle_timeout: 400ms }
  - name: hole
    domains: [hole.test]
    retries: 0
    upstreams:
      - { name: hole, url: "http://127.0.0.1:$hole_port", connect_timeout: 300ms }
  - name: slowbody
    domains: [slow.test]
    upstreams:
      - { name: app2, url: "http://@{[ $app->addr ]}" }
EOF
$t->start;

# Send bytes, return (parsed response, how the read ended, seconds taken).
sub answer {
    my ($bytes, %o) = @_;
    my $t0 = time;
    my ($raw, $how) = $t->raw($port, $bytes, timeout => 5, %o);
    my $r = Keystone::Test::parse_response($raw, eof => 1);
    return ($r, $how, time - $t0);
}

sub refused {
    my ($bytes, $status, $what, $message) = @_;
    my ($r, $how) = answer($bytes);
    is($r->{status}, $status, "$what: $status");
    is($r->{json}{error}{code}, $status, "$what: JSON envelope");
    like($r->{json}{error}{message}, $message, "$what: message");
    is($r->{headers}{connection}, 'close', "$what: Connection: close");
    is($how, 'eof', "$what: connection closed");
}

# max_header_bytes counts the field lines with their CRLFs, exactly
sub fields_of {
    my ($n) = @_;
    my $f = "Host: localhost\r\nConnection: close\r\n";
    return $f . 'X-Pad: ' . ('p' x ($n - length($f) - 9)) . "\r\n";
}
is(length fields_of(1024), 1024, 'field lines of 1024 bytes');
my $r0 = (answer("GET / HTTP/1.1\r\n" . fields_of(1024) . "\r\n"))[0];
is($r0->{status}, 200, 'exactly max_header_bytes of them: 200');
refused("GET / HTTP/1.1\r\n" . fields_of(1025) . "\r\n", 431, 'one byte more', qr/header fields too large/);

# A response head is held to max_response_header_bytes (64KB by default),
# whatever the (much smaller) limits of request heads here
$r0 = (answer("GET /big?bigheader=40000 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"))[0];
is($r0->{status}, 200, 'a 40KB response head passes');
is(length($r0->{headers}{'x-big'} // ''), 40000, 'whole');
$r0 = (answer("GET /big?bigheader=70000 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"))[0];
is($r0->{status}, 502, 'one over 64KB: 502');

my $before = scalar $app->requests;

# ---- sizes ----------------------------------------------------------------------
refused("GET /" . ('a' x 600) . " HTTP/1.1\r\nHost: localhost\r\n\r\n", 414, 'request line over max_request_line',
        qr/request line too long/);
# the whole line counts, not only the target: 500 bytes of target in a
# 530-byte line
refused("OPTIONS /" . ('a' x 499) . "?q=1234567 HTTP/1.1\r\nHost: localhost\r\n\r\n", 414,
        'a request line over max_request_line with its target under it', qr/request line too long/);
refused("GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " . ('b' x 1100) . "\r\n\r\n", 431,
        'head over max_header_bytes', qr/header fields too large/);
refused("GET / HTTP/1.1\r\nHost: localhost\r\n" . join('', map { "X-$_: v\r\n" } 1 .. 6) . "\r\n", 431,
        'more than max_headers', qr/too many header fields/);
refused("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1025\r\n\r\n", 413,
        'Content-Length over max_body_bytes', qr/request body too large/);
is(scalar $app->requests, $before, 'none of them reached the upstream');

my ($r) = answer("POST /ok HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 1024\r\n\r\n" . ('x' x 1024));
is($r->{json}{body_len}, 1024, 'exactly max_body_bytes is fine');

($r, my $how) = answer("POST /chunky HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                     . "200\r\n" . ('y' x 512) . "\r\n200\r\n" . ('y' x 512) . "\r\n1\r\nz\r\n0\r\n\r\n");
is($r->{status}, 413, 'a chunked body over max_body_bytes: 413');
is($how, 'eof', 'and closed');
($r) = answer("POST /trailers HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            . "1\r\nx\r\n0\r\n" . join('', map { "X-T$_: v\r\n" } 1 .. 7) . "\r\n");
is($r->{status}, 400, 'more trailer fields than max_headers: 400');
($r) = answer("POST /trailers HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
            . "1\r\nx\r\n0\r\n" . join('', map { "X-T$_: v\r\n" } 1 .. 6) . "\r\n");
is($r->{status}, 200, 'max_headers of them are fine');

# An upload refused by its Content-Length: keystoned answers at once, and
# must then read and drop the rest (lingering close).  A plain close() with
# the body still arriving sends a reset: the client's next write fails, and
# a client that then gives up (most do: curl, Python's http.client) never
# reads the 413.
{
    local $SIG{PIPE} = 'IGNORE';
    local $SIG{ALRM} = sub { die "the upload test hung\n" };
    alarm 30;
    my $lost = 0;
    for my $try (1 .. 5) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") or die "connect: $!";
        syswrite($s, "POST /up HTTP/1.1\r\nHost: localhost\r\nContent-Length: " . (48 * 65536) . "\r\n\r\n");
        my $chunk = 'u' x 65536;
        my $sent = 0;
        for (1 .. 48) { last unless defined syswrite($s, $chunk); $sent++ }
        my $got = '';
        while (sysread($s, my $buf, 65536)) { $got .= $buf }
        $lost++ unless $sent == 48 && $got =~ m{^HTTP/1\.1 413 };
    }
    alarm 0;
    is($lost, 0, 'a 3 MB upload over max_body_bytes is sent whole and gets its 413, five times of five');
}

# ---- client timeouts ----------------------------------------------------------------------
my ($took);
($r, $how, $took) = answer("GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow:");
is($r->{status}, 408, 'read_header_timeout: 408');
like($r->{json}{error}{message}, qr/head not received in time/, 'read_header_timeout: message');
ok($took >= 0.35 && $took < 3, sprintf('after about 400ms (%.2fs)', $took));

($r, $how, $took) = answer("POST /b HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nabc");
is($r->{status}, 408, 'read_body_timeout: 408');
like($r->{json}{error}{message}, qr/body not received in time/, 'read_body_timeout: message');
ok($took >= 0.35 && $took < 3, sprintf('after about 400ms (%.2fs)', $took));
is($how, 'eof', 'and closed');

# ---- upstream timeouts ----------------------------------------------------------------------
($r, $how, $took) = answer("GET /slow?delay=3000 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
is($r->{status}, 504, 'response_timeout: 504');
like($r->{json}{error}{message}, qr/did not answer in time/, 'response_timeout: message');
ok($took < 2.5, sprintf('well before the upstream answers (%.2fs)', $took));

($r, $how, $took) = answer("GET / HTTP/1.1\r\nHost: hole.test\r\nConnection: close\r\n\r\n");
is($r->{status}, 504, 'connect_timeout: 504');
like($r->{json}{error}{message}, qr/connect timed out/, 'connect_timeout: message');
ok($took >= 0.25 && $took < 3, sprintf('after about 300ms (%.2fs)', $took));

my ($raw, $how2) = $t->raw($port, "GET /h?hang=1&size=100 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                           timeout => 5);
like($raw, qr{^HTTP/1\.1 200 }, 'idle_timeout while streaming: the head went out');
my ($head, $body) = split /\r\n\r\n/, $raw, 2;
my ($len) = $head =~ /Content-Length: (\d+)/;
ok(defined $len && length($body) < $len, 'the body is cut short');
is($how2, 'eof', 'by closing the connection');

# ---- min_body_rate ---------------------------------------------------------------------------
my $conf = $t->dir . '/keystone.yaml';
open my $in, '<', $conf or die;
my $yaml = do { local $/; <$in> };
close $in;
$yaml =~ s/read_body_timeout: 400ms/read_body_timeout: 30s\n  min_body_rate: 100KB/;
$t->write_config($yaml);
my $mark = $t->log_mark;
$t->signal('HUP');
ok($t->wait_log(qr/reload applied/, from => $mark), 'reloaded with min_body_rate: 100KB');
($r, $how, $took) = answer("POST /b HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n" . ('q' x 500));
is($r->{status}, 408, 'a body slower than min_body_rate: 408');
like($r->{json}{error}{message}, qr/slower than min_body_rate/,
     'the rate ended it, not read_body_timeout');

done_testing;
