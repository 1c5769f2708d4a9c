#!/usr/bin/perl
# Signals keystoned does not use (USR2, ALRM, WINCH, TTIN, TTOU, VTALRM):
# the master logs and ignores them instead of dying silently with its
# files left behind, and the workers ignore them too.
use strict;
use warnings;
use Test::More;
use Keystone::Test;

my $t = Keystone::Test->new;
my $port = $t->free_port;
$t->write_config(<<"EOF");
server:
  public_addr: 127.0.0.1:$port
  workers: 2
  min_spare: 1
  max_spare: 4
  access_log: "off"
tenants:
  - name: demo
    upstreams:
      - { name: app, url: "http://127.0.0.1:9" }
EOF
my $master = $t->start;
my @workers;
ok($t->wait_for(sub { @workers = sort $t->processes_of($master); @workers == 2 }), 'two workers');

for my $sig (qw(USR2 ALRM WINCH TTIN TTOU VTALRM PIPE)) {
    my $mark = $t->log_mark;
    kill $sig, $master;
    if ($sig eq 'PIPE') {
        # ignored without a word: the master's own writes may raise it
        is($t->request($port, GET => '/admin/health')->{status}, 200, 'SIGPIPE: the master serves on');
        next;
    }
    ok($t->wait_log(qr/\[warn\] $master signal: SIG$sig ignored: keystoned does not support it \(from pid $$\b/,
                    from => $mark), "SIG$sig to the master: logged as ignored");
    ok($t->alive($master), "SIG$sig: the master lives");
}
my $victim = $workers[0];
kill $_, $victim for qw(USR2 ALRM WINCH VTALRM);
is($t->request($port, GET => '/admin/health')->{status}, 200, 'still serving');
is_deeply([ sort $t->processes_of($master) ], \@workers, 'no worker died of them');
unlike($t->error_log, qr/worker-exit/, 'no worker exit logged');

is($t->stop >> 8, 0, 'TERM still stops it');
ok(!-e $t->dir . "/$_", "$_ removed") for qw(keystoned.pid keystoned.state keystoned.sock);

done_testing;
