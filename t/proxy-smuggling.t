#!/usr/bin/perl
# Bad input is never forwarded and never kills the worker: every
# ambiguous framing or malformed head is answered 400 (and the connection
# closed) with nothing reaching the upstream, and a request pipelined
# behind it is never read.  Many of these pass http-parser 2.9.4 as
# built by Debian (see t/unit/test_http.c).
use strict;
use warnings;
use Test::More;
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
tenants:
  - name: demo
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
EOF
my $master = $t->start;
my ($worker) = $t->processes_of($master);

my $H = "Host: localhost\r\n";
my $P = "POST /bad HTTP/1.1\r\n$H";
my $TE = "Transfer-Encoding: chunked\r\n";
my @cases = (
    [ 'Content-Length with Transfer-Encoding', "${P}Content-Length: 5\r\n$TE\r\n0\r\n\r\n" ],
    [ 'Transfer-Encoding with Content-Length', "$P${TE}Content-Length: 5\r\n\r\n0\r\n\r\n" ],
    [ 'two differing Content-Length', "${P}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!" ],
    [ 'two equal Content-Length', "${P}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello" ],
    [ 'Content-Length list', "${P}Content-Length: 5, 5\r\n\r\nhello" ],
    [ 'Content-Length with a sign', "${P}Content-Length: +5\r\n\r\nhello" ],
    [ 'Transfer-Encoding: gzip, chunked', "${P}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" ],
    [ 'Transfer-Encoding: identity, chunked', "${P}Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n" ],
    [ 'Transfer-Encoding: chunked, identity', "${P}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" ],
    [ 'Transfer-Encoding: xchunked', "${P}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" ],
    [ 'two Transfer-Encoding fields', "$P$TE$TE\r\n0\r\n\r\n" ],
    [ 'gzip then chunked fields', "${P}Transfer-Encoding: gzip\r\n$TE\r\n0\r\n\r\n" ],
    [ 'Transfer-Encoding in HTTP/1.0', "POST /bad HTTP/1.0\r\n$H$TE\r\n0\r\n\r\n" ],
    [ 'Transfer-Encoding folded', "${P}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" ],
    [ 'space before the colon', "${P}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" ],
    [ 'whitespace before a field name', "POST /bad HTTP/1.1\r\n Transfer-Encoding: chunked\r\n$H\r\n0\r\n\r\n" ],
    [ 'bare LF line ends', "POST /bad HTTP/1.1\n${H}Content-Length: 0\n\n" ],
    [ 'bare CR in a value', "GET /bad HTTP/1.1\r\n${H}X-A: a\rb\r\n\r\n" ],
    [ 'NUL in a value', "GET /bad HTTP/1.1\r\n${H}X-A: a\0b\r\n\r\n" ],
    [ 'control byte in a name', "GET /bad HTTP/1.1\r\n${H}X\x01A: a\r\n\r\n" ],
    [ 'missing Host', "GET /bad HTTP/1.1\r\n\r\n" ],
    [ 'two Host fields', "GET /bad HTTP/1.1\r\n${H}Host: other\r\n\r\n" ],
    [ 'a Host that is no host', "GET /bad HTTP/1.1\r\nHost: a b\r\n\r\n" ],
    [ 'absolute-form host differs from Host', "GET http://other.test/bad HTTP/1.1\r\n$H\r\n" ],
    [ 'unknown method', "FOO /bad HTTP/1.1\r\n$H\r\n", 501 ],
    [ 'lower-case method', "get /bad HTTP/1.1\r\n$H\r\n" ],
    [ 'malformed version', "GET /bad HTTP/1.10\r\n$H\r\n" ],
    [ 'two spaces in the request line', "GET  /bad HTTP/1.1\r\n$H\r\n" ],
    [ 'tab in the target', "GET /b\tad HTTP/1.1\r\n$H\r\n" ],
    [ 'raw byte in the target', "GET /b\xe9d HTTP/1.1\r\n$H\r\n" ],
    [ 'HTTP/0.9 request line', "GET /bad\r\n$H\r\n", 505 ],
    [ 'chunk size not hex', "$P$TE\r\nzz\r\nhello\r\n0\r\n\r\n" ],
    [ 'space after the chunk size', "$P$TE\r\n5 \r\nhello\r\n0\r\n\r\n" ],
    [ 'chunk size with 0x', "$P$TE\r\n0x5\r\nhello\r\n0\r\n\r\n" ],
    [ 'chunk size overflow', "$P$TE\r\nfffffffffffffffff\r\nhello\r\n0\r\n\r\n" ],
    [ 'control byte in a chunk extension', "$P$TE\r\n5;a\x01\r\nhello\r\n0\r\n\r\n" ],
    [ 'LF in a chunk extension', "$P$TE\r\n5;a\nb\r\nhello\r\n0\r\n\r\n" ],
    [ 'chunk data not followed by CRLF', "$P$TE\r\n5\r\nhelloXX0\r\n\r\n" ],
    [ 'chunk size line ended by CR CR', "$P$TE\r\n5\r\rhello\r\n0\r\n\r\n" ],
    [ 'obs-fold in trailers', "$P$TE\r\n5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n" ],
    [ 'space before colon in trailers', "$P$TE\r\n5\r\nhello\r\n0\r\nX-T : a\r\n\r\n" ],
);

my $smuggled = "GET /smuggled HTTP/1.1\r\n$H\r\n";
my $seen = () = $app->requests;
for my $case (@cases) {
    my ($what, $bytes, $want) = @$case;
    $want //= 400;
    my ($raw, $how) = $t->raw($port, $bytes . $smuggled);
    my $n = () = $raw =~ m{HTTP/1\.1 \d{3} }g;
    my $r = Keystone::Test::parse_response($raw, eof => 1);
    ok(($r->{status} // 0) == $want && $n == 1 && $how eq 'eof' && ($r->{headers}{connection} // '') eq 'close'
       && ($r->{json}{error}{code} // 0) == $want,
       "$what: one $want, closed") or diag "got ($how): $raw";
}
my @after = $app->requests;
is(scalar(@after), $seen, 'nothing of them reached the upstream') or diag explain [ @after[$seen .. $#after] ];
ok(!grep(m{/smuggled}, @after), 'and no request behind them was read');
is(scalar($t->processes_of($master)), 1, 'the worker lives on');
is(($t->processes_of($master))[0], $worker, 'the same worker');

# ---- the controls: well-formed framing goes through, pipelined right ------------------------
my $c = $t->conn($port);
my $inner = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n\r\n";
$c->send("POST /one HTTP/1.1\r\n$H${TE}\r\n5;name=\"v;1\"\r\nhello\r\n0\r\nX-T: v\r\n\r\n"
       . "POST /two HTTP/1.1\r\n${H}Content-Length: " . length($inner) . "\r\n\r\n$inner"
       . "GET /three HTTP/1.1\r\n${H}Connection: close\r\n\r\n");
my @r = map { $c->response } 1 .. 3;
is_deeply([ map { $_->{json}{target} } @r ], [qw(/one /two /three)], 'well-formed requests pass, in order');
is($r[0]{json}{body}, 'hello', 'a chunk extension is read, not passed on');
is($r[1]{json}{body}, $inner, 'a request inside a body stays a body');
$c->close;
ok(!grep(m{/smuggled}, $app->requests), 'and is never a request upstream');

done_testing;
