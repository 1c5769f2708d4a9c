#!/usr/bin/perl
# The JSON access log: one line per request with the documented fields,
# exact byte counts, errors named, lines never torn across workers, and
# SIGUSR1 reopening the file after logrotate moved it.
use strict;
use warnings;
use Test::More;
use JSON::PP;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $dead = $t->free_port;       # nothing listens there
my $app = $t->backend(name => 'app');
my $log = $t->dir . '/access.log';

$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 2
  min_spare: 1
  access_log: access.log
tenants:
  - name: shop
    domains: [shop.test]
    upstreams:
      - { name: app, url: "http://@{[ $app->addr ]}" }
  - name: broken
    domains: [broken.test]
    retries: 0
    upstreams:
      - { name: gone, url: "http://127.0.0.1:$dead" }
EOF
$t->start;

sub lines {
    my ($path) = @_;
    open my $fh, '<', $path or return ();
    return map { chomp; $_ } <$fh>;
}

# Send a request on a new connection and return (its bytes, the response).
sub exchange {
    my ($method, $path, %o) = @_;
    my $req = Keystone::Test::build_request($method, $path, %o);
    my ($raw) = $t->raw($port, $req, one => 1, head => $method eq 'HEAD');
    return ($req, Keystone::Test::parse_response($raw));
}

# the start-up poll is logged too; start counting from here
ok($t->wait_for(sub { scalar(lines($log)) >= 1 }), 'the access log file is created');
my $skip = () = lines($log);

my ($req1, $r1) = exchange(GET => '/item?id=7', host => 'shop.test');
my ($req2, $r2) = exchange(POST => '/cart', host => 'shop.test', body => 'x' x 100);
my ($req3, $r3) = exchange(GET => '/', host => 'nobody.test');
my ($req4, $r4) = exchange(GET => '/down', host => 'broken.test');
my ($req5) = "GET / HTTP/1.1\r\nHost: shop.test\r\nBad Line\r\n\r\n";
my ($raw5) = $t->raw($port, $req5);
my $r5 = Keystone::Test::parse_response($raw5, eof => 1);

ok($t->wait_for(sub { scalar(lines($log)) >= $skip + 5 }), 'five more lines');
my @l = (lines($log))[$skip .. $skip + 4];
my @j = map { my $x = eval { decode_json($_) }; $x } @l;
is(scalar(grep { defined } @j), 5, 'every line is one JSON object');
# two workers write the lines in the order they finish, which need not be
# the order the requests were sent in (a slow run, under valgrind, shows
# it): take them in request order, by their ids
my %by_id = map { ($_->{request_id} // '') => $_ } grep { defined } @j;
my @ids = map { $_->{headers}{'x-request-id'} // '' } $r1, $r2, $r3, $r4, $r5;
is(scalar(grep { exists $by_id{$_} } @ids), 5, 'one line for each request, by its id');
@j = map { $by_id{$_} // {} } @ids;

my @keys = sort qw(time request_id client tenant method path status bytes_in bytes_out upstream
                   upstream_status duration_us upstream_duration_us);
is_deeply([ sort keys %{ $j[0] } ], \@keys, 'the fields of a line without error');
like($j[0]{time}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'time: RFC 3339 with milliseconds');
is($j[0]{request_id}, $r1->{headers}{'x-request-id'}, 'request_id as returned to the client');
is($j[0]{client}, '127.0.0.1', 'client');
is($j[0]{tenant}, 'shop', 'tenant');
is($j[0]{method}, 'GET', 'method');
is($j[0]{path}, '/item', 'path (without the query)');
is($j[0]{status}, 200, 'status');
is($j[0]{bytes_in}, length $req1, 'bytes_in: the request as sent');
is($j[0]{bytes_out}, length $r1->{raw}, 'bytes_out: the response as received');
is($j[0]{upstream}, 'app', 'upstream name');
is($j[0]{upstream_status}, 200, 'upstream status');
ok($j[0]{duration_us} >= $j[0]{upstream_duration_us} && $j[0]{upstream_duration_us} > 0,
   'duration_us >= upstream_duration_us > 0');

is($j[1]{method}, 'POST', 'the POST');
is($j[1]{bytes_in}, length $req2, 'bytes_in counts the body');

is($j[2]{status}, 404, 'no tenant logged as 404');
is($j[2]{tenant}, undef, 'tenant null');
is($j[2]{upstream}, undef, 'upstream null');
is($j[2]{upstream_status}, undef, 'upstream_status null');
is($j[2]{error}, 'no tenant for this host and path', 'error says why');

is($j[3]{status}, 502, 'a refused connection: 502');
is($j[3]{upstream}, 'gone', 'the upstream tried');
is($j[3]{upstream_status}, undef, 'no upstream status');
is($j[3]{error}, 'cannot connect to the upstream', 'the error');
is($r4->{json}{error}{message}, 'cannot connect to the upstream', 'the client gets the same reason');

is($j[4]{status}, 400, 'a malformed head: 400');
is($j[4]{method}, undef, 'no method known');
is($j[4]{error}, 'invalid character in header', 'its error (from http-parser)');
is($j[4]{request_id}, $r5->{headers}{'x-request-id'}, 'with the id of the answer');

# ---- a client that leaves in the middle of its head: logged, as nginx and HAProxy do ----
my $cut = "GET /cut HTTP/1.1\r\nHost: shop.test\r\nX-Half: ";
my $nc = () = lines($log);
my $cc = $t->conn($port);
$cc->send($cut);
$cc->close;
ok($t->wait_for(sub { scalar(lines($log)) > $nc }), 'a head cut short by the client is logged');
my $cl = decode_json((lines($log))[$nc]);
is($cl->{status}, 400, 'with the 400 it would have got');
is($cl->{error}, 'client closed the connection in the middle of the request head', 'saying why');
is($cl->{bytes_in}, length $cut, 'and what it sent');
is($cl->{bytes_out}, 0, 'nothing sent to it');
like($cl->{request_id}, qr/^[0-9a-f]{32}$/, 'with a request id');
$cc = $t->conn($port);
$cc->close;
is(exchange(GET => '/after-nothing', host => 'shop.test')->{status}, 200, 'then a request on a new connection');
ok($t->wait_for(sub { (grep { /after-nothing/ } lines($log)) > 0 }), 'is logged');
is(scalar(lines($log)), $nc + 2, 'but not the connection that sent nothing: there was no request');

# ---- many clients at once: whole lines only ------------------------------------------
my @c = map { $t->conn($port) } 1 .. 4;
my $n0 = () = lines($log);
for my $round (1 .. 25) {
    $_->send(Keystone::Test::build_request(GET => "/r$round?" . ('q' x 300), host => 'shop.test',
                                           keepalive => 1)) for @c;
    $_->response for @c;
}
$_->close for @c;
ok($t->wait_for(sub { scalar(lines($log)) >= $n0 + 100 }), '100 more lines');
my @bad = grep { !eval { decode_json($_); 1 } } (lines($log))[$n0 .. $n0 + 99];
is(scalar @bad, 0, 'none of them torn or merged');

# ---- SIGUSR1 reopens ----------------------------------------------------------------
rename $log, "$log.1" or die "rename: $!";
my $mark = $t->log_mark;
$t->signal('USR1');
ok($t->wait_log(qr/log files reopened/, from => $mark), 'the master reopens on USR1');
ok($t->wait_for(sub { exchange(GET => '/after', host => 'shop.test'); -s $log }),
   'after USR1 a new access log file is written');
my @new = lines($log);
my $last_old = (lines("$log.1"))[-1];
is(decode_json($new[-1])->{path}, '/after', 'the new file gets the new lines');
ok(!grep({ decode_json($_)->{path} ne '/after' } @new), 'and only lines written after the reopen');
ok(defined $last_old && eval { decode_json($last_old); 1 }, 'the old file ends with a whole line');

done_testing;
