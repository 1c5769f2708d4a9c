#!/usr/bin/perl
# keystoned -t: the shipped example is valid; a broken file gets every
# error, each with file:line:column and key path, and exit 1; -t binds
# nothing, so it works while the addresses are in use.
use strict;
use warnings;
use IO::Socket::INET;
use Test::More;
use Keystone::Test;

my $t = Keystone::Test->new;
my $keystoned = $t->bin('keystoned');

# ---- the example in etc/ loads as-is ----------------------------------------------------
my ($code, $out, $err) = $t->run([$keystoned, '-t', '-c', $t->srcdir . '/etc/keystone.yaml']);
is($code, 0, 'etc/keystone.yaml: -t exits 0') or diag($err);
is($out, "configuration OK\n", 'and prints configuration OK');

# ---- several errors at once, in file order ------------------------------------------------
my $port = $t->free_port;
my $bad = $t->write_file('bad.yaml', <<"EOF2");
version: 1
server:
  public_addr: 127.0.0.1:$port
  workers: four
  idle_timeout: 5
  read_header_timeout: 5s
  read_header_timeout: 6s
tenants:
  - name: api
    upstrems: []
  - name: api
    domains: [other.example]
    upstreams:
      - name: app
        url: ftp://127.0.0.1:21
EOF2
($code, $out, $err) = $t->run([$keystoned, '-t', '-c', $bad]);
is($code, 1, 'broken file: exit 1');
is($out, '', 'nothing on stdout');
my @lines = split /\n/, $err;
like($lines[0], qr/^\Q$bad\E:4:12: server\.workers: expected an integer between 1 and 4096, got "four"$/,
     'wrong type: file:line:col, key path, what was expected');
like($lines[1], qr/^\Q$bad\E:5:17: server\.idle_timeout: expected a duration like "250ms", "5s" or "2m", got "5"$/,
     'a duration without its unit');
like($lines[2], qr/^\Q$bad\E:7:3: server\.read_header_timeout: duplicate key \(first at line 6\)$/,
     'duplicate key');
like($lines[3], qr/^\Q$bad\E:10:5: tenants\[0\]\.upstrems: unknown key \(did you mean "upstreams"\?\)$/,
     'unknown key with a suggestion');
like($lines[4], qr/^\Q$bad\E:11:\d+: .*duplicate tenant name "api" \(first at line 9\)$/,
     'duplicate tenant name');
like($lines[5], qr/^\Q$bad\E:15:14: tenants\[1\]\.upstreams\[0\]\.url: expected an http:\/\/ URL/,
     'bad URL');
is($lines[6], "keystoned: configuration $bad has 6 errors", 'and the count, last');
is(scalar @lines, 7, 'nothing else');

# ---- -t does not bind: it works while the port is taken --------------------------------
my $busy = IO::Socket::INET->new(LocalAddr => "127.0.0.1:$port", Listen => 1, ReuseAddr => 1)
    or die "cannot listen on $port: $!";
my $good = $t->write_file('good.yaml', "server:\n  public_addr: 127.0.0.1:$port\ntenants: []\n");
($code, $out) = $t->run([$keystoned, '-t', '-c', $good]);
is($code, 0, '-t succeeds while public_addr is in use');
ok(!-e $t->dir . '/keystoned.pid' && !-e $t->dir . '/keystoned.state', 'and creates no run-time file');
($code, undef, $err) = $t->run([$keystoned, '-f', '-c', $good], timeout => 5);
is($code, 1, 'a real start on that port fails');
like($err, qr/cannot listen on 127\.0\.0\.1:$port: Address already in use/, 'and says why');
close $busy;

# ---- a file that is not there, and one that is not YAML ----------------------------------
($code, undef, $err) = $t->run([$keystoned, '-t', '-c', $t->dir . '/nope.yaml']);
is($code, 1, 'missing file: exit 1');
like($err, qr/nope\.yaml: .*No such file or directory/, 'and says so');
my $junk = $t->write_file('junk.yaml', "server: [\n  public_addr: {\n");
($code, undef, $err) = $t->run([$keystoned, '-t', '-c', $junk]);
is($code, 1, 'invalid YAML: exit 1');
like($err, qr/^\Q$junk\E:\d+:\d+: /m, 'with a position');

# ---- a tab in the indentation: said in so many words ----------------------------------
# libyaml's own words ("found character that cannot start any token",
# "a tab character that violates indentation") do not say that YAML
# indents with spaces only.
for my $case (["server:\n  public_addr: 127.0.0.1:$port\nlimits:\n\tmax_headers: 5\ntenants: []\n", 4],
              ["server:\n  public_addr: 127.0.0.1:$port\n  \tworkers: 2\ntenants: []\n", 3],
              ["server:\n  public_addr: 127.0.0.1:$port\ntenants:\n\t- name: a\n", 4]) {
    my ($yaml, $line) = @$case;
    my $tabbed = $t->write_file('tabbed.yaml', $yaml);
    ($code, $out, $err) = $t->run([$keystoned, '-t', '-c', $tabbed]);
    is($code, 1, "tab in the indentation of line $line: exit 1");
    like($err, qr/^\Q$tabbed\E:$line:\d+: .*a tab in the indentation: YAML indents with spaces only/m,
         "line $line: the error says so") or diag($err);
}

# ---- a control socket path too long for a Unix socket: a configuration error ---------------
# (it was "configuration OK", then "path too long" at start, with no line)
my $long = 's' x 120;
my $socky = $t->write_file('socky.yaml', "server:\n  public_addr: 127.0.0.1:$port\n"
                                       . "  control_socket: /tmp/$long.sock\ntenants: []\n");
($code, $out, $err) = $t->run([$keystoned, '-t', '-c', $socky]);
is($code, 1, 'control_socket of 130 bytes: -t exits 1');
like($err, qr/^\Q$socky\E:3:19: server\.control_socket: \/tmp\/s+\.sock is 130 bytes long, more than a Unix socket path may be \(107\)$/m,
     'and says why, where') or diag($err);

# ---- a run-time file in a directory that does not exist: -t says so, as a start would ------
for my $key (qw(pid_file state_file control_socket error_log)) {
    my $nodir = $t->write_file("nodir-$key.yaml", "server:\n  public_addr: 127.0.0.1:$port\n"
                                                . "  $key: /nonexistent-dir/x\ntenants: []\n");
    ($code, $out, $err) = $t->run([$keystoned, '-t', '-c', $nodir]);
    is($code, 1, "$key in a missing directory: -t exits 1");
    like($err, qr/^\Q$nodir\E:3:\d+: server\.$key: the directory \/nonexistent-dir does not exist$/m,
         "$key: says which, where") or diag($err);
}
# -f logs to stderr and never opens the error log: not an error for a start with -f
my $nolog_f = $t->write_file('nolog-f.yaml', "server:\n  public_addr: 127.0.0.1:$port\n"
                                           . "  error_log: /nonexistent-dir/x\n  access_log: \"off\"\ntenants: []\n");
my $fg = $t->spawn([$keystoned, '-f', '-c', $nolog_f]);
ok($t->wait_for(sub { ($t->request($port, GET => '/admin/health')->{status} // 0) == 200 || !$t->alive($fg) })
   && $t->alive($fg), 'error_log in a missing directory: keystoned -f starts');
is($t->terminate($fg) >> 8, 0, 'and stops');
# the access log is opened by the workers, who serve without it: not a start error
my $nolog = $t->write_file('nolog.yaml', "server:\n  public_addr: 127.0.0.1:$port\n"
                                       . "  access_log: /nonexistent-dir/x\ntenants: []\n");
($code, $out, $err) = $t->run([$keystoned, '-t', '-c', $nolog]);
is($code, 0, 'access_log in a missing directory: -t exits 0') or diag($err);

# ---- a route table larger than limits.route_table_size ------------------------------------
sub many_tenants {
    my ($n, $size) = @_;
    my $y = "server:\n  public_addr: 127.0.0.1:$port\nlimits:\n  route_table_size: $size\ntenants:\n";
    $y .= "  - { name: t$_, domains: [t$_.example], upstreams: [ { name: u, url: \"http://127.0.0.1:9\" } ] }\n"
        for 1 .. $n;
    return $y;
}
my $crowded = $t->write_file('crowded.yaml', many_tenants(250, '64KB'));
($code, $out, $err) = $t->run([$keystoned, '-t', '-c', $crowded]);
is($code, 1, '250 tenants in a 64KB route table: -t exits 1');
like($err, qr/\Q$crowded\E: the route table needs more than limits\.route_table_size \(65536 bytes\)/,
     'saying the table does not fit');
($code, $out) = $t->run([$keystoned, '-t', '-c', $t->write_file('roomy.yaml', many_tenants(250, '1MB'))]);
is($code, 0, 'in 1MB they fit');

done_testing;
