#!/usr/bin/perl
# What the logs say about a Lua request that ends badly: the access log
# names the route even when the failure discarded the Lua state (and its
# router), and a script that runs out of time after its client left is
# still an error-log line and a count for its tenant, logged as the
# client gone; a client that leaves while http.request waits for a slow
# answer ends the request within a second or so, not at the answer.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $app = $t->backend(name => 'app');
$t->write_file('scripts/api.lua', 'APP = "' . $app->addr . '"' . "\n" . <<'LUA');
router:add_route("GET", "/slow/{id}", {handler = function(req, res) while true do end end})
router:add_route("GET", "/gone-loop", {handler = function(req, res)
    res:write(string.rep("x", 70000))       -- streamed: the head goes out
    while true do pcall(res.write, res, string.rep("y", 65536)) end
end})
router:add_route("GET", "/fetch-slow", {handler = function(req, res)
    local r, err = http.request{url = "http://" .. APP .. "/slow?delay=20000", timeout = "30s"}
    res:write(r and "answered" or err)
end})
LUA
$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 1
  min_spare: 0
  max_spare: 2
  access_log: access.log
tenants:
  - name: demo
    lua_script: scripts/api.lua
EOF
$t->start;

sub access_line {
    my ($path) = @_;
    my $line;
    $t->wait_for(sub {
        open my $fh, '<', $t->dir . '/access.log' or return 0;
        ($line) = grep { $_->{path} eq $path } map { decode_json($_) } <$fh>;
        return defined $line;
    }, timeout => 5);
    return $line;
}
sub timeouts {
    my $m = $t->request($port, GET => '/admin/metrics')->{body} // '';
    return $m =~ /^keystoned_tenant_lua_errors_total\{tenant="demo",kind="timeout"\} (\d+)$/m ? $1 : -1;
}

# ---- the route of a request whose failure discarded the state -----------------------------
my $r = $t->request($port, GET => '/slow/abc');
is($r->{status}, 500, 'a handler that loops: 500');
my $line = access_line('/slow/abc');
is($line->{route}, '/slow/{id}', 'the access log names its route, the state discarded or not');
is($line->{error}, 'Lua script timed out', 'and the error');
is(timeouts(), 1, 'one timeout counted');

# ---- a timeout after the client left ------------------------------------------------------
my $mark = $t->log_mark;
my $c = $t->conn($port);
$c->send("GET /gone-loop HTTP/1.1\r\nHost: x\r\n\r\n");
like($c->read_until(qr/\r\n\r\n/, timeout => 5) // '', qr{^HTTP/1\.1 200 }, 'the stream starts');
$c->close;
$line = access_line('/gone-loop');
is($line->{error}, 'client gone', 'logged as the client gone');
ok($line->{bytes_out} >= 70000 && $line->{bytes_out} < 16 * 1024 * 1024,
   "with what went out before ($line->{bytes_out} bytes)");
ok($t->wait_log(qr{lua-error: tenant demo, script \S+: timeout error in handler \(request \Q$line->{request_id}\E\)},
                from => $mark), 'the timeout that followed is an error-log line');
is(timeouts(), 2, 'and counted');
is($t->request($port, GET => '/slow/x')->{status}, 500, 'the worker serves on');

# ---- the client leaves while http.request waits ---------------------------------------------
$mark = $t->log_mark;
$c = $t->conn($port);
$c->send("GET /fetch-slow HTTP/1.1\r\nHost: x\r\n\r\n");
ok($t->wait_for(sub { grep { m{/slow\?delay=20000} } $app->requests }, timeout => 5),
   'http.request reached the slow upstream');
$c->close;
$line = access_line('/fetch-slow');
is($line->{status}, 499, 'the client leaving while http.request waits: 499');
is($line->{error}, 'client gone', 'logged as the client gone');
ok($line->{duration_us} < 5_000_000, "within a second or so, not at the answer (20 s): $line->{duration_us} us");
unlike($t->error_log($mark), qr/lua-error/, 'not a script error');
is($t->request($port, GET => '/slow/y')->{status}, 500, 'the worker serves on');

is($t->stop >> 8, 0, 'clean stop');
done_testing;
