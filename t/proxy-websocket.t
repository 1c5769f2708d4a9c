#!/usr/bin/perl
# WebSocket (and any Upgrade) through the tunnel: the 101 handshake, echo
# of text, binary, large and early frames, ping/pong, the close handshake
# ending the connection, the idle deadline, and Upgrade requests that are
# not tunnelled.
use strict;
use warnings;
use Test::More;
use Digest::SHA qw(sha1_base64);
use MIME::Base64 qw(encode_base64);
use JSON::PP;
use Socket ();
use Time::HiRes qw(time);
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');
my $log = $t->dir . '/access.log';

# a response hook that refuses some upgrades after the upstream said 101
$t->write_file('scripts/deny.lua', <<'LUA');
router:on_response(function(req, res)
    local deny = req:header("X-Deny")
    if deny then
        res:status(tonumber(deny))
        res:header("X-Denied", "yes")
    end
end)
LUA

$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 1
  access_log: access.log
tenants:
  - name: demo
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}", idle_timeout: 2s }
  - name: flood
    domains: [flood.test]
    upstreams:
      - { name: flooder, url: "http://@{[ $app->addr ]}", idle_timeout: 20s, health_interval: 1h }
  - name: hooked
    domains: [hooked.test]
    lua_script: scripts/deny.lua
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}", idle_timeout: 2s }
EOF
my $master = $t->start;

# A masked client frame.
sub frame {
    my ($op, $payload) = @_;
    my $len = length $payload;
    my $h = chr(0x80 | $op);
    if ($len < 126)      { $h .= chr(0x80 | $len) }
    elsif ($len < 65536) { $h .= chr(0x80 | 126) . pack('n', $len) }
    else                 { $h .= chr(0x80 | 127) . pack('Q>', $len) }
    my $mask = pack('N', int(rand(2**32)));
    my $m = $payload ^ (substr($mask x (int($len / 4) + 1), 0, $len));
    return $h . $mask . $m;
}

# Read one unmasked server frame: (opcode, payload).
sub read_frame {
    my ($c) = @_;
    my $h = $c->read_bytes(2);
    return () unless length $h == 2;
    my ($b0, $b1) = unpack('CC', $h);
    my $len = $b1 & 0x7f;
    $len = unpack('n', $c->read_bytes(2)) if $len == 126;
    $len = unpack('Q>', $c->read_bytes(8)) if $len == 127;
    return ($b0 & 0x0f, $len ? $c->read_bytes($len) : '');
}

sub handshake {
    my ($c, $extra, %o) = @_;
    my $key = encode_base64(join('', map { chr(int rand 256) } 1 .. 16), '');
    my $host = $o{host} // 'localhost';
    my $more = join('', map { "$_\r\n" } @{ $o{headers} // [] });
    $c->send("GET /chat/ws HTTP/1.1\r\nHost: $host\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
           . "Sec-WebSocket-Key: $key\r\nSec-WebSocket-Version: 13\r\n$more\r\n" . ($extra // ''));
    my $head = $c->read_until(qr/\r\n\r\n/);
    return ($head, $key);
}

# ---- the handshake and echo --------------------------------------------------------------
# (frames are built before the tunnel opens: it closes after 2s of silence)
my $bin = join('', map { chr($_ % 256) } 0 .. 299_999);
my $bin_frame = frame(2, $bin);
my $c = $t->conn($port);
my ($head, $key) = handshake($c, frame(1, 'early bird'));
like($head, qr{^HTTP/1\.1 101 Switching Protocols\r\n}, '101 Switching Protocols');
my $accept = sha1_base64($key . '258EAFA5-E914-47DA-95CA-C5AB0DC85B11') . '=';
like($head, qr/\r\nSec-WebSocket-Accept: \Q$accept\E\r\n/, 'the accept key of the upstream passes');
like($head, qr/\r\nUpgrade: websocket\r\n/i, 'Upgrade: websocket');
like($head, qr/\r\nConnection: upgrade\r\n/i, 'Connection: upgrade');
like($head, qr/\r\nX-Request-ID: [0-9a-f]{32}\r\n/, 'and our request id');

my @f = read_frame($c);
is_deeply(\@f, [ 1, 'early bird' ], 'a frame sent with the handshake arrives and is echoed');
$c->send(frame(1, 'hello'));
is_deeply([ read_frame($c) ], [ 1, 'hello' ], 'text frame echoed');
$c->send($bin_frame);
@f = read_frame($c);
ok($f[0] == 2 && $f[1] eq $bin, 'a 300KB binary frame echoed intact');
$c->send(frame(9, 'ping!'));
is_deeply([ read_frame($c) ], [ 10, 'ping!' ], 'ping answered with pong');
$c->send(frame(8, pack('n', 1000) . 'bye'));
is_deeply([ read_frame($c) ], [ 8, pack('n', 1000) . 'bye' ], 'the close handshake passes');
ok($c->closed_by_peer(timeout => 2), 'and the connection ends');
$c->close;

# ---- the idle deadline ----------------------------------------------------------------------------
$c = $t->conn($port);
($head) = handshake($c);
like($head, qr{^HTTP/1\.1 101 }, 'a second tunnel');
my $t0 = time;
ok($c->closed_by_peer(timeout => 8), 'a silent tunnel is closed ...');
my $took = time - $t0;
ok($took >= 1.9 && $took < 8, sprintf('... after the idle timeout (%.2fs)', $took));
$c->close;

# ---- activity keeps it open ------------------------------------------------------------------------
$c = $t->conn($port);
handshake($c);
my $ok = 1;
for (1 .. 7) {
    Time::HiRes::sleep(0.4);
    $c->send(frame(1, "tick $_"));
    my @e = read_frame($c);
    $ok &&= $e[0] && $e[1] eq "tick $_";
}
ok($ok, 'traffic within the idle timeout keeps the tunnel (2.8s > 2s)');
$c->close;

# ---- an upstream that resets while its bytes wait for the client ----------------------------------
# The upstream floods the tunnel, the client reads nothing, then the
# upstream resets: its socket reports POLLHUP|POLLERR to every poll while
# the worker still holds bytes for the client.  That must not turn the
# wait for the client (or the idle timeout) into a busy loop.
sub cpu_ticks {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return undef;
    my @f = split ' ', (<$fh> =~ /\)\s+(.*)/s)[0];
    return $f[11] + $f[12];     # utime + stime (fields 14 and 15)
}
my ($worker) = $t->processes_of($master);
my $open0 = $app->stats->{open};
$c = $t->conn($port);
$c->send("GET /flood?flood=1&raw=" . "HTTP%2F1.1%20101%20Switching%20Protocols%0D%0AUpgrade%3A%20x%0D%0A"
       . "Connection%3A%20Upgrade%0D%0A%0D%0A HTTP/1.1\r\nHost: flood.test\r\nUpgrade: x\r\n"
       . "Connection: Upgrade\r\n\r\n");
like($c->read_until(qr/\r\n\r\n/) // '', qr{^HTTP/1\.1 101 }, 'a tunnel to an upstream that floods it');
# (the 101 came through, so the upstream's connection is open by now)
ok($t->wait_for(sub { $app->stats->{open} <= $open0 }, timeout => 10),
   'the upstream resets once the client stopped taking its bytes');
# a window to measure in, not a wait for something to happen
my $cpu0 = cpu_ticks($worker);
Time::HiRes::sleep(1.5);
my $spent = (cpu_ticks($worker) - $cpu0) / 100;
cmp_ok($spent, '<', 0.3, sprintf('the worker waits for the client without spinning (%.2f s of CPU in 1.5 s)', $spent));
$c->close;
ok($t->wait_for(sub { grep { /"path":"\/flood"/ && /"status":101/ } do { open my $fh, '<', $log; <$fh> } }),
   'the client leaves: the tunnel ends and is logged');

# ---- a client that half-closes, then resets, while the upstream is silent -------------------------
# Nothing is then wanted of the client's socket (its direction has ended,
# and the upstream sends nothing), but its reset must still end the
# tunnel: the direction toward it can carry nothing more.
$c = $t->conn($port);
$c->send("GET /quiet?raw=" . "HTTP%2F1.1%20101%20Switching%20Protocols%0D%0AUpgrade%3A%20x%0D%0A"
       . "Connection%3A%20Upgrade%0D%0A%0D%0A&later=late&later_ms=15000 HTTP/1.1\r\nHost: flood.test\r\n"
       . "Upgrade: x\r\nConnection: Upgrade\r\n\r\n");
like($c->read_until(qr/\r\n\r\n/) // '', qr{^HTTP/1\.1 101 }, 'a tunnel to an upstream silent for 15 s');
shutdown($c->{s}, 1);
$t0 = time;
setsockopt($c->{s}, Socket::SOL_SOCKET(), Socket::SO_LINGER(), pack('ii', 1, 0));
$c->close;      # with linger 0: a reset
ok($t->wait_for(sub { grep { /"path":"\/quiet"/ && /"status":101/ } do { open my $fh, '<', $log; <$fh> } },
                timeout => 10), 'the client half-closes, then resets: the tunnel ends');
$took = time - $t0;
ok($took < 5, sprintf('at the reset, not when the upstream speaks (15 s) nor at idle_timeout (20 s): %.2fs', $took));

# ---- not tunnelled -----------------------------------------------------------------------------------
my $r = $t->request($port, GET => '/chat/ws', headers => [ Upgrade => 'websocket' ]);
is($r->{status}, 200, 'Upgrade without Connection: upgrade is a plain request');
ok(!grep({ lc $_->[0] eq 'upgrade' } @{ $r->{json}{headers} }), 'and Upgrade is not forwarded');
$r = $t->request($port, POST => '/chat/ws', body => 'abc',
                 headers => [ Upgrade => 'websocket', Connection => 'Upgrade', 'Sec-WebSocket-Key' => 'x' ]);
is($r->{status}, 200, 'an Upgrade request with a body is not tunnelled');
is($r->{json}{body}, 'abc', 'its body is forwarded');
ok(!grep({ lc $_->[0] eq 'upgrade' } @{ $r->{json}{headers} }), 'without Upgrade');

# ---- refused by a response hook after the upstream's 101 ------------------------------------------
$c = $t->conn($port);
($head) = handshake($c, undef, host => 'hooked.test');
like($head, qr{^HTTP/1\.1 101 }, 'through a tenant with a response hook: 101');
$c->send(frame(1, 'hooked'));
is((read_frame($c))[1], 'hooked', 'and the tunnel works');
$c->close;
$c = $t->conn($port);
($head) = handshake($c, frame(1, 'early'), host => 'hooked.test', headers => [ 'X-Deny: 403' ]);
like($head, qr{^HTTP/1\.1 403 Forbidden\r\n}, 'the hook turns the 101 into a 403');
like($head, qr{\r\nContent-Length: 0\r\n}, 'with an empty body, framed');
like($head, qr{\r\nConnection: close\r\n}, 'and Connection: close');
like($head, qr{\r\nX-Denied: yes\r\n}, "with the hook's header");
unlike($head, qr{\r\n(Upgrade|Sec-WebSocket-Accept):}i, "and none of the 101's");
ok($c->closed_by_peer(timeout => 1), 'the connection is closed at once: no tunnel');
is($c->{buf}, '', 'and the early frame was never echoed');
$c->close;
$c = $t->conn($port);
($head) = handshake($c, undef, host => 'hooked.test', headers => [ 'X-Deny: 204' ]);
like($head, qr{^HTTP/1\.1 204 No Content\r\n}, 'a 204 from the hook');
unlike($head, qr{\r\nContent-Length:}, 'has no Content-Length');
$c->close;

# ---- HTTP/1.0: Upgrade is ignored (RFC 9110 7.8) ------------------------------------------
my ($r10) = Keystone::Test::parse_response(scalar $t->raw($port,
    "GET /chat/ws HTTP/1.0\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
  . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"));
is($r10->{status}, 200, 'an HTTP/1.0 Upgrade request is a plain request');
ok(!grep({ lc $_->[0] eq 'upgrade' } @{ $r10->{json}{headers} }), 'and Upgrade is not forwarded');

# ---- h2c: never tunnelled (HTTP/2 inside would pass routing by) ---------------------------
my $h2c = $t->request($port, GET => '/chat/h2c',
                      headers => [ Connection => 'Upgrade, HTTP2-Settings', Upgrade => 'h2c',
                                   'HTTP2-Settings' => 'AAMAAABkAARAAAAAAAIAAAAA' ]);
is($h2c->{status}, 200, 'an h2c upgrade request is a plain request');
ok(!grep({ lc $_->[0] eq 'upgrade' } @{ $h2c->{json}{headers} }), 'Upgrade: h2c is not forwarded');

# ---- what the access log counts ---------------------------------------------------------------
# frames sent in the packet of the handshake are the client's bytes too
sub log_line {
    my ($path) = @_;
    my ($l) = grep { /"path":"\Q$path\E"/ } do { open my $fh, '<', $log; <$fh> };
    return $l ? decode_json($l) : undef;
}
my $ws_head = "GET /count/ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
my $sent = $ws_head . frame(1, 'e' x 1000) . frame(8, pack('n', 1000));
my ($got) = $t->raw($port, $sent);
like($got, qr{^HTTP/1\.1 101 }, 'a handshake with a text and a close frame in its packet');
my $counted;
ok($t->wait_for(sub { $counted = log_line('/count/ws') }), 'is logged');
is($counted->{bytes_in}, length $sent, 'bytes_in counts the frames that came with the head');
is($counted->{bytes_out}, length $got, 'bytes_out what the client got');

# ---- logged, and the worker goes on ------------------------------------------------------------------------
ok($t->wait_for(sub { grep { /"path":"\/chat\/ws"/ && /"status":101/ } do { open my $fh, '<', $log; <$fh> } }),
   'the tunnel is logged with status 101');
ok($t->wait_for(sub { grep { /"path":"\/chat\/ws"/ && /"status":403/ } do { open my $fh, '<', $log; <$fh> } }),
   "the hook's refusal is logged with its status");
is($t->request($port, GET => '/after')->{status}, 200, 'the worker serves on');
is(scalar($t->processes_of($master)), 1, 'and it is the only one');

done_testing;
