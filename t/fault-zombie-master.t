#!/usr/bin/perl
# A master killed with -9 whose parent has not reaped it yet (a zombie:
# a supervisor that reaps late, a container whose pid 1 is a shell busy
# in another command) is gone: keystonectl says keystoned is not
# running, and a new master starts on the same files and ports at once.
# kill(pid, 0) succeeds on a zombie, so the pid alone does not tell.
use strict;
use warnings;
use Test::More;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
my $state = $t->dir . '/keystoned.state';
$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 2
  min_spare: 1
  max_spare: 4
  access_log: "off"
health_defaults:
  interval: 1h
tenants:
  - name: demo
    upstreams:
      - { name: app, url: "http://127.0.0.1:9" }
EOF

sub proc_state {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return '';
    my ($s) = (<$fh> // '') =~ /\)\s+(\S)/s;
    return $s // '';
}

my $master = $t->start;
my @workers;
ok($t->wait_for(sub { @workers = $t->processes_of($master); @workers == 2 }), 'two workers');
kill 'KILL', $master;
# not $t->alive($master): that would reap it
ok($t->wait_for(sub { proc_state($master) eq 'Z' }), 'the killed master is a zombie, not reaped');
ok($t->wait_for(sub { !grep { $t->alive($_) } @workers }), 'its workers exited');

my ($code, $out, $err) = $t->ctl('-s', $state, 'status');
is($code, 1, 'keystonectl status: exit 1');
like($err, qr/keystoned is not running \(stale state file .*master pid $master is gone\)/,
     'it says the master is gone') or diag($out);

my $new = $t->spawn([ $t->bin('keystoned'), '-f', '-c', $t->dir . '/keystone.yaml' ],
                    stdout => $t->dir . '/error.log', stderr => $t->dir . '/error.log');
ok($t->wait_for(sub {
    return 1 if ($t->request($port, GET => '/admin/health')->{status} // 0) == 200;
    return !$t->alive($new) ? 'dead' : 0;
}) && $t->alive($new), 'a new master starts while the old one is a zombie')
    or diag($t->error_log);
unlike($t->error_log, qr/already in use by keystoned pid $master/, 'the zombie is not taken for a running master');
is(proc_state($master), 'Z', 'the old master was a zombie all along');
($code, $out) = $t->ctl('-s', $state, 'status');
is($code, 0, 'keystonectl status of the new master: exit 0');
like($out, qr/master pid $new\b/, 'it names the new master');

$t->reap($master);
is($t->terminate($new) >> 8, 0, 'the new master stops cleanly');

done_testing;
