#!/usr/bin/perl
# Upstream answers keystoned must not pass on as they are: bytes on an
# idle pooled connection (they answer no request, and the next client
# would get them), interim heads without end, a transfer coding besides
# chunked, a status code that is not one, a bad chunk before the head
# went out, and a request replayed after the upstream had begun to answer
# it.  t/backend's ?raw, ?later and
# ?repeat send the exact bytes.
use strict;
use warnings;
use Test::More;
use Time::HiRes ();
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');

# one worker and one upstream: every request goes over the same pool
$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 1
  max_workers: 1
  access_log: "off"
health_defaults:
  interval: 1h
  max_fails: 0
tenants:
  - name: app
    retries: 0
    upstreams:
      - { name: up, url: "http://@{[ $app->addr ]}", response_timeout: 1s, keepalive: 4 }
EOF
$t->start;

sub enc {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9_.~-])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}
my $stale = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTALE";
sub target_of { my ($r) = @_; return ($r->{json} // {})->{target} // $r->{body} // '(none)' }

# ---- bytes on an idle pooled connection -------------------------------------------------------
my $r = $t->request($port, GET => '/first?later=' . enc($stale) . '&later_ms=50');
is($r->{status}, 200, 'an answer, then 50 ms later an unasked response on the idle connection');
# nothing to poll for: the upstream writes on a connection only keystoned sees
Time::HiRes::sleep(0.3);
$r = $t->request($port, GET => '/second');
is(target_of($r), '/second', 'the next client gets the answer to its own request, not the stale one');
$r = $t->request($port, GET => '/third');
is(target_of($r), '/third', 'and so does the one after it (the pool is not one answer behind)');

# the same after a body relayed with splice (64 KB and more): the excess
# stays in the socket
$r = $t->request($port, GET => '/big?size=70000&later=' . enc($stale) . '&later_ms=0');
is(length($r->{body} // ''), 70000, 'a 70000-byte answer followed at once by more bytes');
$r = $t->request($port, GET => '/after-big');
is(target_of($r), '/after-big', 'the excess is not the next answer');

# ---- interim heads ----------------------------------------------------------------------------
my $t0 = Time::HiRes::time();
$r = $t->request($port, GET => '/p?repeat=' . enc("HTTP/1.1 102 Processing\r\n\r\n") . '&every=100',
                 timeout => 15);
my $took = Time::HiRes::time() - $t0;
is($r->{status}, 504, 'a 102 every 100 ms and never an answer: 504 at response_timeout');
cmp_ok($took, '<', 8, sprintf('the interim heads do not move the deadline (%.1f s)', $took));
$t0 = Time::HiRes::time();
$r = $t->request($port, GET => '/drip?raw=' . enc("HTTP/1.1 200 OK\r\n") . '&repeat=' . enc("X-Drip: x\r\n")
                             . '&every=100', timeout => 15);
$took = Time::HiRes::time() - $t0;
is($r->{status}, 504, 'a head trickled a field every 100 ms: 504 at response_timeout');
cmp_ok($took, '<', 8, sprintf('each field does not move the deadline (%.1f s)', $took));
$r = $t->request($port, GET => '/many?raw=' . enc(("HTTP/1.1 103 Early Hints\r\n\r\n" x 40)
                                                  . "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
is($r->{status}, 502, '40 interim heads before the answer: 502');
$r = $t->request($port, GET => '/few?raw=' . enc(("HTTP/1.1 103 Early Hints\r\n\r\n" x 3)
                                                 . "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
is($r->{status}, 200, 'three are passed on');
is($r->{body}, 'ok', 'with the answer after them');

# a GET whose upstream sent an interim head and then closed is not sent again
is($t->request($port, GET => '/warm')->{status}, 200, 'a pooled connection');
my $before = grep { m{/interim-close} } $app->requests;
$r = $t->request($port, GET => '/interim-close?close=1&raw=' . enc("HTTP/1.1 100 Continue\r\n\r\n"));
is($r->{status}, 502, 'an interim head, then the upstream closes: 502');
is(scalar(grep { m{/interim-close} } $app->requests) - $before, 1,
   'and the request was sent once (it had been answered in part)');

# ---- framing and status lines we refuse -------------------------------------------------------
for my $te ('gzip, chunked', 'x-foo, chunked', 'deflate,chunked') {
    $r = $t->request($port, GET => '/te?raw=' . enc("HTTP/1.1 200 OK\r\nTransfer-Encoding: $te\r\n\r\n"
                                                    . "5\r\nhello\r\n0\r\n\r\n"));
    is($r->{status}, 502, "Transfer-Encoding: $te: 502 (the coding would be dropped)");
}
$r = $t->request($port, GET => '/te?raw=' . enc("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked \r\n\r\n"
                                                . "5\r\nhello\r\n0\r\n\r\n"));
is($r->{body}, 'hello', '"Chunked " is chunked');
for my $bad ("zz\r\n", ('f' x 20) . "\r\n") {
    $r = $t->request($port, GET => '/bc?close=1&raw=' . enc("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                                         . "2\r\nhi\r\n$bad"));
    is($r->{status}, 502, 'a malformed chunk in the first read, the head not yet sent: 502, not an empty reply');
}
for my $code ('000', '099', '600', '999') {
    $r = $t->request($port, GET => '/st?raw=' . enc("HTTP/1.1 $code X\r\nContent-Length: 2\r\n\r\nhi"));
    is($r->{status}, 502, "status $code: 502");
}
is(target_of($t->request($port, GET => '/last')), '/last', 'the worker serves on');

$t->stop;
done_testing;
